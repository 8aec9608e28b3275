"""Issue 16, "will it work at my hospital?": a PneumoniaMNIST run validated on the real chest
X-ray JPEGs, recalibrated for a shifted site, its out-of-distribution guard in predict and
serve, and an OpenAPI document that schemathesis finds true against a live service."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from benchmarks.external_validation import shifted_site
from PIL import Image
from sklearn.metrics import accuracy_score, confusion_matrix, roc_auc_score

from medlens.cli import main
from medlens.run import Run, file_digest

CHEST = Path(__file__).resolve().parents[2] / "shared/data/chest_xray"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
PER_CLASS = 40  # JPEGs per class and split in the subset folder: 160 images


@pytest.fixture(scope="session")
def pneumonia_run(medmnist_dir, tmp_path_factory) -> Path:
    """A small_cnn PneumoniaMNIST run (28 px, 3 epochs), trained once (~30 s). Read-only."""
    import medlens.api as ml

    out = tmp_path_factory.mktemp("pneumonia_run") / "run"
    ml.train(
        "pneumoniamnist", data_dir=str(medmnist_dir), output=out, device="cpu",
        model="small_cnn", epochs=3,
    )  # fmt: skip
    return out


@pytest.fixture(scope="session")
def chest_subset(tmp_path_factory) -> Path:
    """The chest X-ray folder's layout (train|test / NORMAL|PNEUMONIA) with 40 links each."""
    if not CHEST.is_dir():
        pytest.fail(f"{CHEST} not found (the shared chest X-ray folder)")
    root = tmp_path_factory.mktemp("chest") / "chest_subset"
    for split in ("train", "test"):
        for cls in ("NORMAL", "PNEUMONIA"):
            (root / split / cls).mkdir(parents=True)
            for f in sorted((CHEST / split / cls).iterdir())[:PER_CLASS]:
                (root / split / cls / f.name).symlink_to(f)
    return root


@pytest.fixture
def run_copy(pneumonia_run, tmp_path) -> Path:
    dst = tmp_path / "run"
    shutil.copytree(pneumonia_run, dst)
    return dst


@pytest.fixture(scope="session")
def _shared_cache(tmp_path_factory) -> Path:
    """One image cache for the session: the subset's JPEGs are decoded once."""
    return tmp_path_factory.mktemp("external_cache")


@pytest.fixture(autouse=True)
def _use_shared_cache(monkeypatch, _shared_cache):
    monkeypatch.setenv("MEDLENS_CACHE", str(_shared_cache))


def run_digests(run: Path) -> dict[str, str | None]:
    names = ("metrics.json", "calibration.json", "trust.json", "predictions.csv", "ood.json")
    return {n: file_digest(run / n) for n in names}


def cli(args: list[str], capsys) -> tuple[int, str]:
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, " ".join((captured.out + captured.err).split())


# ------------------------------------------------------------------- external validation
def test_external_table_matches_sklearn_on_written_predictions(run_copy, chest_subset, capsys):
    before = run_digests(run_copy)
    code, out = cli(["evaluate", run_copy, "--on", chest_subset], capsys)
    assert code == 0, out
    folder = run_copy / "external" / "chest_subset"
    summary = json.loads((folder / "external.json").read_text())
    shift = json.loads((folder / "shift.json").read_text())
    rows = np.genfromtxt(folder / "predictions.csv", delimiter=",", names=True, dtype=None,
                         encoding=None)  # fmt: skip
    assert len(rows) == summary["n_images"] == 4 * PER_CLASS
    y = (rows["label"] == "pneumonia").astype(int)
    p = rows["p_pneumonia"].astype(float)
    assert summary["classes"] == {"NORMAL": "normal", "PNEUMONIA": "pneumonia"}
    assert y.sum() == 2 * PER_CLASS  # every PNEUMONIA JPEG became the run's "pneumonia"
    ci = summary["confidence_intervals"]
    assert ci["auc"]["value"] == pytest.approx(roc_auc_score(y, p), abs=1e-5)
    pred = (rows["predicted"] == "pneumonia").astype(int)
    assert ci["acc"]["value"] == pytest.approx(accuracy_score(y, pred), abs=1e-9)
    tn, fp, fn, tp = confusion_matrix(y, pred).ravel()
    assert ci["sensitivity"]["value"] == pytest.approx(tp / (tp + fn))
    assert ci["specificity"]["value"] == pytest.approx(tn / (tn + fp))
    assert ci["auc"]["low"] <= ci["auc"]["value"] <= ci["auc"]["high"]
    # the run's own operating threshold, applied unchanged to the calibrated probabilities
    record = json.loads((run_copy / "calibration.json").read_text())
    t = record["temperature"]
    logit_ratio = np.log(p) - np.log(1 - p)  # a binary softmax: p = sigmoid(z1 - z0)
    calibrated = 1 / (1 + np.exp(-logit_ratio / t))
    for point in summary["operating_points"]:
        positive = calibrated >= point["threshold"]
        sens = positive[y == 1].mean()
        assert point["site"]["sensitivity"]["value"] == pytest.approx(sens, abs=1e-4)
    drop = summary["drop"]["metrics"]["auc"]
    internal_y, internal_p = Run(run_copy).split_predictions("test")
    assert drop["internal"] == pytest.approx(roc_auc_score(internal_y, internal_p[:, 1]), abs=1e-5)
    assert drop["drop"] == pytest.approx(drop["internal"] - ci["auc"]["value"])
    assert drop["low"] <= drop["drop"] <= drop["high"]
    assert 0.0 <= shift["feature_space"]["domain_auc"] <= 1.0
    assert shift["feature_space"]["statement"].startswith("this site's images")
    assert "domain AUC" in out and "written to" in out
    assert run_digests(run_copy) == before  # the run's own numbers are never rewritten
    from medlens.report.build import build_report

    page = build_report(
        Run.open(run_copy), output=run_copy / "r/report.html", robustness=False,
        uncertainty=False, gallery=False,
    ).read_text()  # fmt: skip
    section = page[page.index('id="external"') :]
    assert "External validation" in section and "chest_subset (160 images)" in section
    assert "domain AUC" in section and "calibration v1 in use" in section


def single_class_npz(path: Path, medmnist_dir: Path) -> Path:
    z = np.load(medmnist_dir / "pneumoniamnist.npz")
    keep = z["test_labels"].ravel() == 0
    x, y = z["test_images"][keep], z["test_labels"][keep]
    np.savez(path, train_images=x[:100], train_labels=y[:100], val_images=x[100:150],
             val_labels=y[100:150], test_images=x[150:], test_labels=y[150:])  # fmt: skip
    return path


def test_single_class_site_reports_what_is_defined(run_copy, medmnist_dir, tmp_path, capsys):
    site = single_class_npz(tmp_path / "pneumoniamnist_normals.npz", medmnist_dir)
    args = ["evaluate", run_copy, "--on", site, "--name", "normals"]
    args += ["--label-map", "0=normal,1=pneumonia"]
    code, out = cli(args, capsys)
    assert code == 0, out
    summary = json.loads((run_copy / "external/normals/external.json").read_text())
    assert "AUC needs both" in summary["undefined"]["auc"] and "AUC needs both" in out
    ci = summary["confidence_intervals"]
    assert ci["auc"]["value"] is None and ci["specificity"]["value"] is not None
    rows = np.genfromtxt(run_copy / "external/normals/predictions.csv", delimiter=",",
                         names=True, dtype=None, encoding=None)  # fmt: skip
    assert ci["acc"]["value"] == pytest.approx((rows["predicted"] == "normal").mean())


@pytest.mark.parametrize(
    "case, message",
    [
        ("unknown_class", "class 'COVID' the run does not know"),
        ("map_neither", "--label-map names 'CAT', which is not a class of the external set"),
        ("map_bad_target", "which is not a class of the run"),
        ("volumes", "holds 3D images"),
        ("channels", "has 3-channel images; this run's model takes 1"),
        ("fraction", "--fraction must lie strictly between 0 and 1"),
        ("too_few", "each side needs at least 20"),
    ],
)
def test_bad_external_input_is_one_line_and_changes_nothing(
    case, message, run_copy, chest_subset, medmnist_dir, tmp_path, capsys
):
    before = run_digests(run_copy)
    if case == "unknown_class":
        odd = tmp_path / "odd"
        for cls, src in (("NORMAL", "NORMAL"), ("COVID", "PNEUMONIA")):
            (odd / cls).mkdir(parents=True)
            for f in sorted((chest_subset / "test" / src).iterdir())[:15]:
                (odd / cls / f.name).symlink_to(f.resolve())
        args = ["evaluate", run_copy, "--on", odd]
    elif case == "map_neither":
        args = ["evaluate", run_copy, "--on", chest_subset, "--label-map", "CAT=normal"]
    elif case == "map_bad_target":
        args = ["evaluate", run_copy, "--on", chest_subset, "--label-map", "NORMAL=healthy"]
    elif case == "volumes":
        args = ["evaluate", run_copy, "--on", medmnist_dir / "adrenalmnist3d.npz"]
    elif case == "channels":
        z = np.load(medmnist_dir / "pneumoniamnist.npz")
        rgb = {
            k: (np.repeat(v[..., None], 3, -1) if k.endswith("images") else v) for k, v in z.items()
        }
        np.savez(tmp_path / "rgb.npz", **rgb)
        args = ["evaluate", run_copy, "--on", tmp_path / "rgb.npz"]
    elif case == "fraction":
        args = ["recalibrate", run_copy, "--on", chest_subset, "--fraction", "1.2"]
    else:
        args = ["recalibrate", run_copy, "--on", chest_subset, "--fraction", "0.05"]
    code, out = cli(args, capsys)
    assert code == 2 and message in out and "Traceback" not in out, out
    assert out.startswith("error:") and "fix:" in out
    assert run_digests(run_copy) == before
    assert not (run_copy / "calibrations").exists()


# --------------------------------------------------------------------------- recalibration
def test_recalibration_lowers_the_sites_ece_and_is_what_predict_and_serve_apply(
    run_copy, medmnist_dir, tmp_path, capsys
):
    import medlens.api as ml
    from medlens.serve.model import ServedModel

    site = shifted_site(tmp_path / "site_b.npz", medmnist_dir)
    image = np.load(medmnist_dir / "pneumoniamnist.npz")["test_images"][0]
    png = tmp_path / "case.png"
    Image.fromarray(image).save(png)
    before = ml.predict(run_copy, [png])[0]
    metrics_before = file_digest(run_copy / "metrics.json")
    old_record = json.loads((run_copy / "calibration.json").read_text())
    code, out = cli(["recalibrate", run_copy, "--on", site, "--fraction", "0.3",
                     "--label-map", "0=normal,1=pneumonia"], capsys)  # fmt: skip
    assert code == 0, out
    result = json.loads((run_copy / "external/site_b/recalibration-v2.json").read_text())
    old, new = result["held_out"]["previous"], result["held_out"]["new"]
    assert result["n_fit"] + result["n_held_out"] == 1148 and result["n_fit"] == 344
    assert new["calibration"]["after"]["ece"] < old["calibration"]["after"]["ece"]
    # the threshold refitted for 90% sensitivity gets nearer 90% on the held-out part
    target = next(p for p in new["operating_points"] if p["target"] == "sensitivity")
    old_point = next(p for p in old["operating_points"] if p["target"] == "sensitivity")
    assert abs(target["site"]["sensitivity"]["value"] - 0.9) < abs(
        old_point["site"]["sensitivity"]["value"] - 0.9
    )
    record = json.loads((run_copy / "calibration.json").read_text())
    assert record["version"] == "v2" and record["previous"] == "v1"
    assert record["temperature"] == new["calibration"]["temperature"] != old_record["temperature"]
    kept = json.loads((run_copy / "calibrations/v1.json").read_text())
    assert kept["temperature"] == old_record["temperature"]
    assert (run_copy / "calibrations/v2-site_b.json").is_file()
    assert file_digest(run_copy / "metrics.json") == metrics_before
    # predict and serve apply the version in use: p = sigmoid(z / T_new), z the logit (read
    # back from the probabilities predict gave under the previous temperature)
    row = ml.predict(run_copy, [png])[0]
    z = np.log(before["p_pneumonia"] / before["p_normal"]) * old_record["temperature"]
    p = 1 / (1 + np.exp(-z / record["temperature"]))
    assert row["p_pneumonia"] == pytest.approx(p, abs=1e-5)
    assert row["confidence"] == pytest.approx(max(p, 1 - p), abs=1e-5)
    served = ServedModel(run_copy)
    assert served.card()["calibration"]["version"] == "v2"
    answer = served.predict(png.read_bytes(), heatmap=False)
    assert answer["confidence"] == pytest.approx(row["confidence"], abs=1e-5)


# ------------------------------------------------------------------------------ OOD guard
def guard_rates(run_dir: Path, medmnist_dir: Path) -> dict[str, dict[str, float]]:
    import torch

    from medlens.analyse.ood_guard import case_features
    from medlens.evaluate.ood import ood_scores

    run = Run.open(run_dir)
    record = json.loads(run.ood_file.read_text())
    with np.load(run.ood_stats_file) as z:
        stats = {k: z[k] for k in z.files}
    model, _ = run.load_model(torch.device("cpu"))
    breast = np.concatenate(
        [np.load(medmnist_dir / "breastmnist.npz")[f"{s}_images"] for s in ("train", "val", "test")]
    )
    adrenal = np.load(medmnist_dir / "adrenalmnist3d.npz")["test_images"].reshape(-1, 28, 28)
    sets = {
        "pneumonia_test": np.load(medmnist_dir / "pneumoniamnist.npz")["test_images"],
        "breast": breast,
        "adrenal_slices": adrenal,
    }
    rates: dict[str, dict[str, float]] = {}
    for name, images in sets.items():
        feats, logits = case_features(model, run.plan, images[:, None], torch.device("cpu"))
        rates[name] = {
            m: float((ood_scores(m, feats, logits, stats) > s["threshold"]).mean())
            for m, s in record["methods"].items()
        }
    return rates


def test_ood_guard_flags_other_datasets_and_passes_its_own(pneumonia_run, medmnist_dir):
    record = json.loads((pneumonia_run / "ood.json").read_text())
    assert record["method"] == "mahalanobis" and record["false_alarm"] == 0.05
    assert set(record["methods"]) == {"mahalanobis", "energy", "msp"}
    for m in record["methods"].values():
        assert abs(m["val_false_alarm"] - 0.05) < 0.01
    rates = guard_rates(pneumonia_run, medmnist_dir)
    print("OOD flagged shares per method:", json.dumps(rates))
    default = record["method"]
    assert rates["breast"][default] >= 0.95
    assert rates["adrenal_slices"][default] >= 0.95
    assert 1 - rates["pneumonia_test"][default] >= 0.90


def dicom_ct(image: np.ndarray) -> bytes:
    import pydicom
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"  # CT image storage
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.Modality = "CT"
    ds.Rows, ds.Columns = image.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.PixelData = (image.astype(np.uint16) * 16).tobytes()
    buf = io.BytesIO()
    pydicom.dcmwrite(buf, ds, enforce_file_format=True)
    return buf.getvalue()


def test_predict_flags_unlike_images_and_contradicting_dicoms(run_copy, medmnist_dir, tmp_path):
    import medlens.api as ml

    own = np.load(medmnist_dir / "pneumoniamnist.npz")["test_images"][:6]
    other = np.load(medmnist_dir / "breastmnist.npz")["test_images"][:6]
    files = []
    for i, img in enumerate([*own, *other]):
        files.append(tmp_path / f"case{i:02d}.png")
        Image.fromarray(img).save(files[-1])
    ct = tmp_path / "ct.dcm"
    ct.write_bytes(dicom_ct(own[0]))
    rows = ml.predict(run_copy, [*files, ct], output=tmp_path / "p.csv")
    assert all(isinstance(r["ood_score"], float) for r in rows)
    assert sum(r["in_distribution"] for r in rows[:6]) >= 5
    assert not any(r["in_distribution"] for r in rows[6:12])
    assert "unlike the training images" in rows[6]["ood_reason"]
    assert rows[12]["in_distribution"] is False
    assert "DICOM Modality is CT" in rows[12]["ood_reason"]
    # a run evaluated before the guard existed: said so, nothing fails
    (run_copy / "ood.json").unlink()
    old = ml.predict(run_copy, files[:2])
    assert [r["in_distribution"] for r in old] == [None, None]


def test_serve_json_and_page_carry_the_flag(run_copy, medmnist_dir, tmp_path):
    from fastapi.testclient import TestClient

    from medlens.serve.app import create_app

    app = create_app(run_copy)
    client = TestClient(app)
    own = np.load(medmnist_dir / "pneumoniamnist.npz")["test_images"][1]
    other = np.load(medmnist_dir / "breastmnist.npz")["test_images"][3]
    pngs = {}
    for name, img in (("own", own), ("other", other)):
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, format="PNG")
        pngs[name] = buf.getvalue()
    flagged = client.post("/predict", files={"file": ("x.png", pngs["other"])}).json()
    assert flagged["in_distribution"] is False
    assert (
        flagged["ood"]["method"] == "mahalanobis"
        and flagged["ood"]["score"] > flagged["ood"]["threshold"]
    )
    assert "probabilities" in flagged  # the numbers are still there, on request
    fine = client.post("/predict", files={"file": ("x.png", pngs["own"])}).json()
    assert fine["in_distribution"] is True and fine["ood"]["reason"] is None
    card = client.get("/model").json()
    assert card["ood_guard"]["method"] == "mahalanobis" and card["calibration"]["version"] == "v1"
    if CHROMIUM is None:
        pytest.skip("Debian's chromium is not installed")
    sync_playwright = pytest.importorskip("playwright.sync_api").sync_playwright
    path = tmp_path / "breast.png"
    path.write_bytes(pngs["other"])
    with live(app) as url, sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"]
        )
        page = browser.new_page()
        page.goto(url + "/")
        page.wait_for_function("document.getElementById('model-line').textContent.includes('Run')")
        page.set_input_files("#file", str(path))
        page.wait_for_selector("#ood-warning", state="visible", timeout=30_000)
        warning = page.text_content("#ood-warning")
        hidden = page.is_hidden("#result")
        page.click("#show-anyway")
        page.wait_for_selector("#result", state="visible", timeout=10_000)
        predicted = page.text_content("#predicted")
        page.screenshot(path=str(tmp_path / "ood_page.png"), full_page=True)
        browser.close()
    assert "does not look like the images this model was trained on" in warning
    assert "unlike the training images" in warning and hidden
    assert predicted == flagged["predicted"]


class live:
    """The app on a free loopback port, in a thread, for the duration of a ``with``."""

    def __init__(self, app) -> None:
        import socket

        import uvicorn

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="error")
        self.server = uvicorn.Server(config)

    def __enter__(self) -> str:
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started and time.monotonic() < deadline:
            time.sleep(0.05)
        assert self.server.started, "uvicorn did not start"
        return f"http://127.0.0.1:{self.port}"

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(10)


# ------------------------------------------------------------------------------- OpenAPI
SCHEMATHESIS_CONFIG = """
[checks.positive_data_acceptance]
# JSON Schema can say "a non-empty file of at most N bytes" but not "bytes that decode as an
# image": such bodies are schema-valid and get the documented 400/415, which is the truth
expected-statuses = ["2xx", "400", "401", "415"]
"""


def test_openapi_tells_the_truth_to_schemathesis(pneumonia_run, tmp_path):
    pytest.importorskip("schemathesis")
    from medlens.serve.app import create_app

    app = create_app(pneumonia_run, max_upload_mb=1)
    spec = app.openapi()["paths"]["/predict"]["post"]
    assert {"400", "401", "413", "415", "422", "500"} <= set(spec["responses"])
    body = spec["requestBody"]["content"]["multipart/form-data"]["schema"]["properties"]["file"]
    assert body["minLength"] == 1 and body["maxLength"] == 2**20
    config = tmp_path / "schemathesis.toml"
    config.write_text(SCHEMATHESIS_CONFIG)
    exe = Path(sys.executable).with_name("schemathesis")
    with live(app) as url:
        done = subprocess.run(
            [str(exe), "--config-file", str(config), "run", f"{url}/openapi.json",
             "--checks", "all", "--max-examples", "12", "--seed", "1", "--no-color"],
            capture_output=True, text=True, timeout=300, cwd=tmp_path,
        )  # fmt: skip
    assert done.returncode == 0, done.stdout[-4000:]
    assert "No issues found" in done.stdout or "passed" in done.stdout


def test_features_hook_every_member_of_an_ensemble():
    import torch
    from torch import nn

    from medlens.analyse.features import head_modules

    class Ensemble(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.members = nn.ModuleList(
                nn.Sequential(nn.Flatten(), nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
                for _ in range(3)
            )

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.stack([m(x) for m in self.members]).mean(0)

    heads = head_modules(Ensemble())
    assert len(heads) == 3 and all(h.in_features == 3 for h in heads)
    single = nn.Sequential(nn.Flatten(), nn.Linear(4, 3), nn.Dropout(), nn.Linear(3, 2))
    assert [h.in_features for h in head_modules(single)] == [3]
