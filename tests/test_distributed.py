"""``torchrun --nproc-per-node 2 -m medlens train``: two CPU processes on the gloo backend train
disjoint shards, and the val AUC they gather equals a single-process evaluation of the model
they saved."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from medlens.data.loader import DeviceArrays


def test_shards_are_disjoint_and_cover_the_permutation():
    labels = np.arange(103)
    data = DeviceArrays(np.zeros((103, 1, 4, 4), np.uint8), labels, torch.device("cpu"), [0], [1])
    seen = []
    for rank in range(3):
        gen = torch.Generator().manual_seed(7)
        batches = data.batches(8, shuffle=True, generator=gen, drop_last=True, shard=(rank, 3))
        seen.append(torch.cat([y for _, y in batches]).tolist())
    assert [len(s) for s in seen] == [32, 32, 32]  # 34 per rank, cut to whole batches of 8
    flat = [i for s in seen for i in s]
    assert len(set(flat)) == len(flat)  # no image on two ranks
    order = torch.randperm(103, generator=torch.Generator().manual_seed(7))[:102]
    for rank in range(3):
        assert seen[rank] == order[rank::3][:32].tolist()


@pytest.mark.timeout(300)
def test_torchrun_two_cpu_processes(medmnist_dir, tmp_path):
    run = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2"]
    cmd += ["--standalone", "-m", "medlens", "train", "breastmnist"]
    cmd += ["--data-dir", str(medmnist_dir), "--epochs", "2", "--device", "cpu"]
    cmd += ["-o", str(run), "--set", "evaluate.bootstrap=0"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=280)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("run directory:") == 2  # rank 0 only: before and after training
    assert json.loads((run / "env.json").read_text())["world_size"] == 2
    rows = (run / "curves.csv").read_text().splitlines()[1:]
    assert len(rows) == 2
    best = max(rows, key=lambda r: float(r.split(",")[3]))
    gathered_auc = float(best.split(",")[3])
    # the val AUC that was gathered from both ranks' halves is that of the saved model on all
    # of val, evaluated again in one process
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["val"]["auc"] == pytest.approx(gathered_auc, abs=1e-6)
