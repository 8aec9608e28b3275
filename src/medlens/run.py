"""The run directory as an object: every file a stage reads or writes, and what they hold.

::

    runs/<name>/
      plan.yaml  fingerprint.json  env.json  log.txt  curves.csv
      checkpoints/best.safetensors  checkpoints/last.safetensors
      metrics.json  predictions.csv  trust.json  calibration.json  tensorboard/
      ood.json  ood.npz                                    (medlens evaluate)
      external/<name>/  calibrations/         (medlens evaluate --on, medlens recalibrate)
      robustness.json  uncertainty.json  gallery/         (medlens analyse)
      report.html  model_card.md  figures/               (medlens report)
      ensemble.json  oof_predictions.csv  folds/fold-<i>/  (an ensemble run: --folds, --seeds)

A stage opens a run once (:meth:`Run.open` checks it) or creates one (:meth:`Run.create`), and
reads everything through it: the plan and fingerprint (loaded once), the data the plan was made
for (:meth:`Run.data`), the trained model (:meth:`Run.load_model`), calibration, metrics and
predictions. A file that is missing is a :class:`~medlens.errors.CheckpointError` naming it and
the command that writes it.

>>> run = Run.open("runs/breastmnist-small_cnn")  # doctest: +SKIP
>>> run.plan.model.name, run.metrics()["test"]["auc"]  # doctest: +SKIP
('small_cnn', 0.87)

Nothing here imports torch at import time: the CLI opens and checks runs before it loads the
heavy libraries.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import os
import platform
import subprocess
import sys
import time
from collections.abc import Iterable
from functools import cached_property
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from medlens.config import Plan, load_plan, positive_index, save_plan
from medlens.errors import CheckpointError, ConfigError

if TYPE_CHECKING:
    import numpy as np
    import torch

    from medlens.data.dataset import ArrayDataset
    from medlens.progress import Reporter

# which command writes each file a stage may need (named in the error when it is missing)
_WRITERS = {
    "plan.yaml": "medlens train",
    "fingerprint.json": "medlens train",
    "metrics.json": "medlens evaluate RUN",
    "trust.json": "medlens evaluate RUN",
    "predictions.csv": "medlens evaluate RUN",
    "calibration.json": "medlens evaluate RUN",
    "curves.csv": "medlens train",
    "robustness.json": "medlens analyse RUN",
    "uncertainty.json": "medlens analyse RUN",
    "gallery.json": "medlens analyse RUN",
    "ood.json": "medlens evaluate RUN",
    "external.json": "medlens evaluate RUN --on DATA",
    "ensemble.json": "medlens train --folds K",
    "oof_predictions.csv": "medlens evaluate RUN",
}
# where the data lives and what the planner measured or noted: never a difference of recipe
_NOT_RECIPE = {"data.data_dir", "train.estimated_seconds", "notes"}


class Run:
    """One run directory. ``Run(path)`` only names it; :meth:`open` and :meth:`create` check.

    ``plan``: the plan the run holds, when the caller has it already (it is not read again).
    """

    def __init__(self, root: str | Path, plan: Plan | None = None) -> None:
        self.root = Path(root)
        self._data: ArrayDataset | None = None
        if plan is not None:
            self.__dict__["plan"] = plan  # what the cached property would read from plan.yaml

    def __repr__(self) -> str:
        return f"Run({str(self.root)!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Run) and self.root == other.root

    def __hash__(self) -> int:
        return hash(self.root)

    # ----------------------------------------------------------------------------------- paths
    @property
    def plan_file(self) -> Path:
        return self.root / "plan.yaml"

    @property
    def fingerprint_file(self) -> Path:
        return self.root / "fingerprint.json"

    @property
    def env_file(self) -> Path:
        return self.root / "env.json"

    @property
    def log_file(self) -> Path:
        return self.root / "log.txt"

    @property
    def curves_file(self) -> Path:
        return self.root / "curves.csv"

    @property
    def metrics_file(self) -> Path:
        return self.root / "metrics.json"

    @property
    def trust_file(self) -> Path:
        return self.root / "trust.json"

    @property
    def calibration_file(self) -> Path:
        """Temperature and conformal threshold that ``predict`` applies to new cases."""
        return self.root / "calibration.json"

    @property
    def predictions_file(self) -> Path:
        return self.root / "predictions.csv"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def best(self) -> Path:
        return self.checkpoints / "best.safetensors"

    @property
    def last(self) -> Path:
        return self.checkpoints / "last.safetensors"

    @property
    def tensorboard(self) -> Path:
        return self.root / "tensorboard"

    @property
    def timing_file(self) -> Path:
        """The predicted and the real time of training and evaluation."""
        return self.root / "timing.json"

    @property
    def robustness_file(self) -> Path:
        return self.root / "robustness.json"

    @property
    def uncertainty_file(self) -> Path:
        return self.root / "uncertainty.json"

    @property
    def gallery_dir(self) -> Path:
        """Saliency overlays of the most confident right and wrong test cases."""
        return self.root / "gallery"

    @property
    def gallery_file(self) -> Path:
        return self.gallery_dir / "gallery.json"

    @property
    def export_dir(self) -> Path:
        return self.root / "export"

    @property
    def ood_file(self) -> Path:
        """The out-of-distribution guard: method, threshold, rates on val."""
        return self.root / "ood.json"

    @property
    def ood_stats_file(self) -> Path:
        """The guard's fitted statistics (plain arrays)."""
        return self.root / "ood.npz"

    @property
    def external_dir(self) -> Path:
        """One folder per external validation set (``medlens evaluate RUN --on DATA``)."""
        return self.root / "external"

    @property
    def calibrations_dir(self) -> Path:
        """Every calibration version the run has had; calibration.json is the one in use."""
        return self.root / "calibrations"

    @property
    def ensemble_file(self) -> Path:
        """An ensemble run's members (folds or seeds) and their weights."""
        return self.root / "ensemble.json"

    @property
    def oof_predictions_file(self) -> Path:
        """A cross-validation's out-of-fold predictions of every train and val image."""
        return self.root / "oof_predictions.csv"

    def is_ensemble(self) -> bool:
        return self.ensemble_file.is_file()

    def is_cross_validation(self) -> bool:
        return self.is_ensemble() and self.plan.train.folds is not None

    # ---------------------------------------------------------------------------- open/create
    @classmethod
    def open(cls, path: str | Path, *, trained: bool = True, role: str | None = None) -> Run:
        """An existing run, checked: the folder, its plan.yaml and (``trained``) its best weights.

        ``role`` names the run in errors ("teacher", "run"), which otherwise name its folder.
        """
        run = cls(Path(path).expanduser())
        who = f"{role} " if role else ""
        if not run.root.is_dir():
            raise CheckpointError(
                f"{who}{run.root} does not exist: it is not a medlens run",
                hint="pass the run directory of a trained model (`medlens train ... --output DIR`)",
            )
        if not run.plan_file.is_file():
            raise CheckpointError(
                f"{who}{run.root} is not a medlens run (no plan.yaml)",
                hint="pass the run directory that `medlens train` wrote",
            )
        if trained and run.is_ensemble():
            run.members()  # every member there, with the ensemble's plan
        if trained and not run.best.is_file() and run.is_ensemble():
            raise CheckpointError(
                f"{who}{run.root} is an unfinished ensemble ({run.best} is missing)",
                hint="run the same `medlens train ...` command again: it trains the members "
                "that are left",
            )
        if trained and not run.best.is_file():
            raise CheckpointError(
                f"{who}{run.root} has no trained weights ({run.best} is missing)",
                hint="train the run first (`medlens train --resume --output DIR` continues it)",
            )
        return run

    @classmethod
    def create(
        cls, path: str | Path, plan: Plan, fingerprint: dict[str, Any], env: dict[str, Any]
    ) -> Run:
        """A new run: refuses a folder that already holds training results, then writes
        plan.yaml, fingerprint.json and env.json."""
        run = cls(path, plan)
        run.check_new()
        run.root.mkdir(parents=True, exist_ok=True)
        save_plan(plan, run.plan_file)
        write_json(run.fingerprint_file, fingerprint)
        write_json(run.env_file, env)
        return run

    def has_training(self) -> bool:
        return self.last.exists() or self.best.exists()

    def check_new(self) -> None:
        """Refuse to overwrite a run that already holds training results."""
        if self.has_training() or self.metrics_file.exists():
            raise ConfigError(
                f"{self.root} already holds a trained run",
                hint="add --resume to continue it, or choose another --output",
            )

    def check_resumable(self) -> None:
        """A run to continue must have its training state (``checkpoints/last.safetensors``)."""
        if not self.last.is_file():
            raise ConfigError(
                f"nothing to resume in {self.root} (no checkpoints/last.safetensors)",
                hint="drop --resume to start a new run",
            )

    # ------------------------------------------------------------------------------- contents
    @cached_property
    def plan(self) -> Plan:
        """The run's plan.yaml, validated (loaded once)."""
        return load_plan(self.plan_file)

    @cached_property
    def fingerprint(self) -> dict[str, Any]:
        """fingerprint.json: what the training data is."""
        return self.read_json(self.fingerprint_file)

    def read_json(self, path: Path) -> Any:
        """A JSON file of the run, or a CheckpointError naming it and the command that writes it."""
        try:
            return json.loads(path.read_text())
        except FileNotFoundError:
            writer = _WRITERS.get(path.name, "the stage that writes it").replace(
                "RUN", str(self.root)
            )
            raise CheckpointError(f"{path} is missing", hint=f"run `{writer}` first") from None
        except json.JSONDecodeError as exc:
            raise CheckpointError(
                f"{path} is not valid JSON ({exc})", hint="the file is damaged; write it again"
            ) from None

    def metrics(self) -> dict[str, Any]:
        return self.read_json(self.metrics_file)

    def trust(self) -> dict[str, Any]:
        return self.read_json(self.trust_file)

    def env(self) -> dict[str, Any]:
        """env.json, or an empty dict for a run written without one."""
        return self.read_json(self.env_file) if self.env_file.is_file() else {}

    def calibration(self) -> dict[str, Any]:
        """calibration.json, or no calibration (T = 1, no sets) before evaluation."""
        if self.calibration_file.is_file():
            return self.read_json(self.calibration_file)
        return {"task": self.plan.data.task, "temperature": 1.0}

    def input_shape(self) -> tuple[int, ...]:
        """The spatial shape the run's model takes, (H, W) or (D, H, W)."""
        return tuple(self.fingerprint["image_shape"])

    def checkpoint_digest(self) -> str | None:
        """SHA-256 of best.safetensors: what analyses and exports record as their source."""
        return file_digest(self.best)

    def split_predictions(self, split: str = "test") -> tuple[np.ndarray, np.ndarray]:
        """(labels, uncalibrated probabilities) of one split, from predictions.csv, in order;
        ``"oof"``: a cross-validation's out-of-fold predictions (oof_predictions.csv)."""
        import numpy as np

        names, task = self.plan.data.label_names, self.plan.data.task
        path = self.oof_predictions_file if split == "oof" else self.predictions_file
        if not path.is_file():
            self.read_json(path)  # the error naming the missing file
        with path.open(newline="") as f:
            rows = [r for r in csv.DictReader(f) if r["split"] == split]
        probs = np.array([[float(r[f"p_{n}"]) for n in names] for r in rows], dtype=np.float64)
        if task == "multi-label":
            y = np.array([[n in r["label"].split(";") for n in names] for r in rows], dtype=int)
        else:
            y = np.array([names.index(r["label"]) for r in rows], dtype=np.int64)
        return y, probs.reshape(len(rows), len(names))

    def curves(self) -> list[dict[str, str]]:
        """curves.csv rows (one per epoch), or none before the first epoch."""
        if not self.curves_file.is_file():
            return []
        with self.curves_file.open(newline="") as f:
            return list(csv.DictReader(f))

    # ----------------------------------------------------------------------- data and model
    def use_data(self, ds: ArrayDataset) -> None:
        """Give the run the dataset a caller already loaded for its plan (checked to fit)."""
        check_plan_fits(self.plan, ds)
        self._data = ds

    def data(
        self,
        data_dir: str | None = None,
        download: bool = True,
        reporter: Reporter | None = None,
    ) -> ArrayDataset:
        """The data the run's plan was made for (the cache makes this cheap), loaded once."""
        if self._data is None:
            ds = load_plan_data(self.plan, data_dir, download, reporter)
            check_plan_fits(self.plan, ds)
            self._data = ds
        return self._data

    def load_model(self, device: torch.device) -> tuple[torch.nn.Module, dict[str, Any]]:
        """The run's best weights in its plan's model, in eval mode on ``device``; and the info
        stored with them (epoch, val AUC)."""
        from medlens.models.build import build_model
        from medlens.models.checkpoint import load_weights

        if not self.best.is_file():
            raise CheckpointError(f"{self.best} is missing", hint="train the run first")
        if self.is_ensemble():
            from medlens.models.ensemble import EnsembleModel

            members = [build_model(m.plan, device, pretrained=False) for m in self.members()]
            weights = [m["weight"] for m in self.ensemble()["members"]]
            multi = self.plan.data.task == "multi-label"
            model = EnsembleModel(members, multi_label=multi, weights=weights).to(device)
        else:
            model = build_model(self.plan, device, pretrained=False)
        info = load_weights(self.best, model)
        return model.eval(), info

    # ------------------------------------------------------------------------------ ensembles
    def ensemble(self) -> dict[str, Any]:
        """ensemble.json: ``{"kind": "folds" | "seeds", "members": [{"path", "weight"}]}``."""
        return self.read_json(self.ensemble_file)

    def members(self) -> list[Run]:
        """The ensemble's member runs, checked: each there, trained, with the ensemble's plan."""
        out = []
        for i, entry in enumerate(self.ensemble()["members"]):
            member = Run(self.root / entry["path"])
            if not member.plan_file.is_file() or not member.best.is_file():
                raise CheckpointError(
                    f"member {entry['path']} of the ensemble {self.root} is missing or untrained",
                    hint="restore that folder, or rerun the same `medlens train` command to "
                    "train it again",
                )
            differ = plan_differences(member.plan, member_plan(self.plan, i))
            if differ:
                raise ConfigError(
                    f"member {entry['path']} of {self.root} has another plan than the ensemble "
                    f"({'; '.join(differ[:3])})",
                    hint="every member must be trained from the ensemble's plan.yaml; retrain "
                    "that member or restore its plan",
                )
            out.append(member)
        return out

    def logger(self) -> logging.Logger:
        return file_logger(self)

    def write_json(self, path: Path, data: Any) -> None:
        write_json(path, data)


# ------------------------------------------------------------------------ plan and its data
def absolute_root(fields: dict[str, Any]) -> dict[str, Any]:
    """``fields`` with image_root made absolute: the plan must find the images from anywhere."""
    if not fields.get("image_root"):
        return dict(fields)
    return {**fields, "image_root": str(Path(fields["image_root"]).expanduser().resolve())}


def source_options(fields: dict[str, Any], preprocess=None):
    """:class:`~medlens.data.labelled.SourceOptions` from plan-style fields
    (``label_columns=[...]``, ...); unset (None) fields keep their defaults."""
    from medlens.data.labelled import SourceOptions

    names = set(SourceOptions.__dataclass_fields__) - {"preprocess", "size", "workers"}
    given = {k: v for k, v in absolute_root(fields).items() if k in names and v is not None}
    return SourceOptions(**given, preprocess=preprocess)


def load_plan_data(
    plan: Plan,
    data_dir: str | None = None,
    download: bool = True,
    reporter: Reporter | None = None,
) -> ArrayDataset:
    """Reload exactly the data a plan was made for (the cache makes this cheap)."""
    from medlens.data.sources import load_dataset

    d = plan.data
    ds = load_dataset(
        d.source,
        data_dir=data_dir or d.data_dir,
        size=d.size,
        download=download,
        on_progress=getattr(reporter, "cache_progress", None),
        # splits are drawn with seed 0 as when the plan was made, never with the training
        # seed: runs of one plan with other seeds must share their test split
        options=source_options(d.model_dump(), d.preprocess),
    )
    if d.fold is not None:  # a cross-validation fold: train+val re-split, the test kept
        from medlens.data.folds import fold_dataset

        ds = fold_dataset(ds, d.fold.k, d.fold.index, d.fold.seed)
    return ds


def check_plan_fits(recipe: Plan, ds: ArrayDataset) -> None:
    """The plan must describe this data, and its model must take it (checked before any write)."""
    d = recipe.data
    found = {
        "task": ds.task,
        "in_chans": ds.in_chans,
        "n_classes": ds.n_classes,
        "spatial_dims": ds.spatial_dims,
    }
    wrong = [
        f"data.{k} is {getattr(d, k)} but the data has {v}"
        for k, v in found.items()
        if getattr(d, k) != v
    ]
    if wrong:
        raise ConfigError(
            "the plan does not fit the data: " + "; ".join(wrong),
            hint="make a new plan with `medlens plan` for this dataset",
        )
    positive_index(recipe)  # a positive class the data lacks is refused here
    if recipe.evaluate.subgroups:
        from medlens.evaluate.subgroups import subgroup_columns

        meta = ds.splits["test"].meta
        if meta is None:
            raise ConfigError(
                "evaluate.subgroups names columns, but this data has no metadata columns",
                hint="subgroups come from extra columns of a CSV/Parquet manifest",
            )
        subgroup_columns(meta, recipe.evaluate.subgroups)
    for path in (recipe.model.weights, recipe.model.init):
        if path:
            from medlens.models.weights import weights_file

            weights_file(path)  # a missing file fails now, not after the data is cached
    from medlens.models.registry import model_spatial_dims

    dims = 3 if recipe.model.slices else model_spatial_dims(recipe.model.name)
    if dims != ds.spatial_dims:
        raise ConfigError(
            f"model {recipe.model.name} is {dims}D but the data is {ds.spatial_dims}D",
            hint="see `medlens models` for models of the right kind",
        )


def member_plan(plan: Plan, index: int) -> Plan:
    """The plan of member ``index`` of an ensemble run's plan: fold ``index`` of
    ``train.folds`` (folds drawn with ``train.seed``), or seed ``train.seed + index``."""
    from medlens.config import FoldConfig

    data = plan.data.model_copy()
    train = plan.train.model_copy(update={"folds": None, "seeds": None, "estimated_seconds": None})
    if plan.train.folds:
        data = data.model_copy(
            update={"fold": FoldConfig(k=plan.train.folds, index=index, seed=plan.train.seed)}
        )
    elif plan.train.seeds:
        train = train.model_copy(update={"seed": plan.train.seed + index})
    else:
        raise ConfigError("the plan sets neither train.folds nor train.seeds: not an ensemble")
    return plan.model_copy(update={"data": data, "train": train})


def member_count(plan: Plan) -> int:
    """How many members an ensemble run's plan has (0 for a single run)."""
    return plan.train.folds or plan.train.seeds or 0


def plan_fields(plan: Plan) -> dict[str, Any]:
    """The plan as ``{"train.lr": 0.001, ...}``: one entry per leaf field."""
    out: dict[str, Any] = {}
    stack: list[tuple[str, Any]] = [("", plan.model_dump(mode="json"))]
    while stack:
        prefix, data = stack.pop()
        for key, value in data.items():
            if isinstance(value, dict):
                stack.append((f"{prefix}{key}.", value))
            else:
                out[f"{prefix}{key}"] = value
    return out


def plan_differences(a: Plan, b: Plan, ignore: Iterable[str] = ()) -> list[str]:
    """``"train.lr: 0.001 -> 0.01"`` for every field (but ``ignore``) in which two plans differ.

    Where the data lives (``data.data_dir``: ``../data`` and ``/work/data`` may be one folder)
    and what the planner measured or wrote down (the time estimate, the notes) are never a
    difference: two runs of one command differ in them and train the same thing.
    """
    skip = _NOT_RECIPE | set(ignore)
    fa, fb = plan_fields(a), plan_fields(b)
    return [
        f"{key}: {fa.get(key)!r} -> {fb.get(key)!r}"
        for key in sorted(set(fa) | set(fb))
        if key not in skip and fa.get(key) != fb.get(key)
    ]


# --------------------------------------------------------------------------- files and logs
def default_run_name(dataset: str, model: str) -> str:
    return f"{Path(dataset).stem}-{model}-{time.strftime('%Y%m%d-%H%M%S')}"


def write_json(path: Path, data: Any) -> None:
    """Write JSON atomically (temporary file, then rename)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, allow_nan=True) + "\n")
    os.replace(tmp, path)


def write_rows(path: Path, rows: list[dict[str, Any]]) -> None:
    """Dict rows as a CSV file (every key a column, in order of appearance), atomically."""
    tmp = path.with_name(path.name + ".tmp")
    fields = list(dict.fromkeys(k for row in rows for k in row))
    with tmp.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, path)


def file_digest(path: Path) -> str | None:
    """SHA-256 (hex) of a file, or None when it does not exist."""
    if not path.is_file():
        return None
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _git_commit() -> str | None:
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def environment(seed: int, device: str) -> dict[str, Any]:
    """Versions, hardware, command line and seed: what a reproduction needs."""
    import torch

    versions = {}
    for pkg in (
        "medlens",
        "torch",
        "torchvision",
        "timm",
        "monai",
        "numpy",
        "scikit-learn",
        "safetensors",
        "medmnist",
    ):
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = None
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": sys.argv,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "packages": versions,
        "medlens_git_commit": _git_commit(),
        "device": device,
        "gpu": gpu,
        "cpu_threads": torch.get_num_threads(),
        "seed": seed,
    }


def file_logger(run: Run) -> logging.Logger:
    """A logger that appends to the run's log.txt (one per run directory)."""
    logger = logging.getLogger(f"medlens.run.{run.root.resolve()}")
    logger.setLevel(logging.INFO)
    logger.propagate = False
    if not logger.handlers:
        run.root.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(run.log_file)
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%Y-%m-%d %H:%M:%S"))
        logger.addHandler(handler)
    return logger


def close_log(run: Run) -> None:
    """Close the run's log.txt handler (one is kept open per run directory, which a long
    search or cross-validation would otherwise pile up)."""
    logger = logging.getLogger(f"medlens.run.{run.root.resolve()}")
    for handler in list(logger.handlers):
        handler.close()
        logger.removeHandler(handler)
