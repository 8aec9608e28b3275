"""Load test of ``medlens serve`` on loopback: throughput, p50/p99 latency and errors.

The service runs as its own process (``medlens serve RUN --no-access-log``, as an operator
would start it); an asyncio httpx client keeps ``--concurrency`` requests in flight until
``--requests`` have been answered, uploading real MedMNIST test images as PNG.

Scenarios (each ``--requests`` long):

- baseline: ``ServedModel.predict`` called in this process, one at a time, no HTTP: what the
  model and preprocessing cost, measured in the same run;
- HTTP, probabilities only (``?heatmap=false``);
- HTTP, with the Grad-CAM overlay (the web page's default);
- HTTP, with one upload in ten bad (text, truncated PNG, a 40,000 x 40,000 PNG header, a
  DICOM without pixels): those must get a 4xx, the rest a 200, and nothing a 5xx.

Client and server share the machine's cores, so the HTTP figures are a floor.

Run: python benchmarks/serve_load.py [--run RUN] [--requests 2000] [--concurrency 16]
(without --run it trains a quick BreastMNIST run into a temporary folder first).
"""

from __future__ import annotations

import argparse
import asyncio
import io
import socket
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

from medlens.export.speed import hardware

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "medmnist"


def png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def bad_uploads(good: bytes) -> list[bytes]:
    """Four kinds of bad upload (reusing the test suite's builders)."""
    sys.path.insert(0, str(ROOT))
    from tests.test_serve import dicom_bytes, huge_png

    half = good[: len(good) // 2]
    return [b"not an image " * 40, half, huge_png(40_000, 40_000), dicom_bytes(False)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(run: Path, port: int) -> subprocess.Popen:
    cmd = ["medlens", "serve", str(run), "--port", str(port), "--no-access-log"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"medlens serve exited: {proc.stderr.read().decode()}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.2)
    proc.kill()
    raise SystemExit("medlens serve did not answer /health within 120 s")


def summary(name: str, latencies: list[float], statuses: list[int], seconds: float) -> dict:
    lat = np.asarray(latencies) * 1000
    return {
        "scenario": name,
        "requests": len(statuses),
        "req/s": len(statuses) / seconds,
        "p50 ms": float(np.percentile(lat, 50)),
        "p99 ms": float(np.percentile(lat, 99)),
        "200": sum(s == 200 for s in statuses),
        "4xx": sum(400 <= s < 500 for s in statuses),
        "5xx/failed": sum(s >= 500 or s < 0 for s in statuses),
    }


async def load(
    url: str, uploads: list[bytes], n: int, concurrency: int, heatmap: bool
) -> tuple[list[float], list[int], float]:
    """``n`` POST /predict requests, ``concurrency`` in flight; latencies and statuses."""
    latencies: list[float] = []
    statuses: list[int] = []
    counter = iter(range(n))
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=60) as client:

        async def worker() -> None:
            for i in counter:
                start = time.perf_counter()
                try:
                    r = await client.post(
                        "/predict",
                        params={"heatmap": str(heatmap).lower()},
                        files={"file": ("case.png", uploads[i % len(uploads)])},
                    )
                    status = r.status_code
                except httpx.HTTPError:
                    status = -1
                latencies.append(time.perf_counter() - start)
                statuses.append(status)

        begin = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return latencies, statuses, time.perf_counter() - begin


def in_process(run: Path, uploads: list[bytes], n: int) -> dict:
    from medlens.serve.model import ServedModel

    served = ServedModel(run)
    latencies = []
    begin = time.perf_counter()
    for i in range(n):
        start = time.perf_counter()
        served.predict(uploads[i % len(uploads)], heatmap=False)
        latencies.append(time.perf_counter() - start)
    seconds = time.perf_counter() - begin
    return summary("in-process predict, no HTTP (baseline)", latencies, [200] * n, seconds)


def quick_run(out: Path) -> Path:
    import medlens.api as ml

    ml.train("breastmnist", data_dir=str(DATA), output=out, device="cpu")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, help="a trained run (default: train BreastMNIST)")
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        run = args.run or quick_run(Path(tmp) / "breast")
        images = np.load(DATA / "breastmnist.npz")["test_images"][:60]
        uploads = [png(a) for a in images]
        mixed = list(uploads)
        for i, bad in zip(range(0, len(mixed), 10), bad_uploads(uploads[0]) * 2, strict=False):
            mixed[i] = bad  # exactly one in ten
        rows = [in_process(run, uploads, min(args.requests, 500))]
        port = free_port()
        proc = start_server(run, port)
        url = f"http://127.0.0.1:{port}"
        try:
            for name, data, heatmap in (
                ("HTTP, probabilities only", uploads, False),
                ("HTTP, with Grad-CAM overlay", uploads, True),
                ("HTTP, 1 in 10 uploads bad, overlay", mixed, True),
            ):
                lat, statuses, seconds = asyncio.run(
                    load(url, data, args.requests, args.concurrency, heatmap)
                )
                rows.append(summary(name, lat, statuses, seconds))
            alive = httpx.get(f"{url}/health", timeout=5).status_code == 200
        finally:
            proc.terminate()
            proc.wait(30)

    hw = hardware()
    print(f"\n## medlens serve under load ({date.today()})\n")
    print(
        f"{hw['cpu']}, {hw['cores']} cores (client and server share them); torch "
        f"{hw['torch']}; {args.requests} requests per scenario, concurrency "
        f"{args.concurrency}; run {Path(run).name}\n"
    )
    keys = list(rows[0])
    print("| " + " | ".join(keys) + " |")
    print("|" + "---|" * len(keys))
    for r in rows:
        cells = [f"{v:.1f}" if isinstance(v, float) else str(v) for v in r.values()]
        print("| " + " | ".join(cells) + " |")
    base = rows[0]["req/s"]
    for r in rows[1:]:
        print(f"\n{r['scenario']}: {r['req/s'] / base:.2f}x the in-process baseline", end="")
    print(f"\n\nservice still answering /health after the load: {alive}")


if __name__ == "__main__":
    main()
