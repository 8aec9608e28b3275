"""``medlens serve``: the service answers what ``medlens predict`` answers, refuses every bad
upload with a 4xx and a message while it keeps serving, keeps uploads off disk and out of logs,
and its web page shows a prediction and an overlay in headless Chromium."""

from __future__ import annotations

import base64
import gzip
import io
import logging
import shutil
import socket
import struct
import threading
import time
import zlib

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from medlens.cli import main
from medlens.errors import CheckpointError
from medlens.serve.app import create_app
from medlens.serve.model import ServedModel

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
KEY = "test-key"
AUTH = {"X-API-Key": KEY}


def png_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def huge_png(width: int, height: int) -> bytes:
    """A valid PNG header for a width x height grey image (its pixel data is never reached)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(bytes(4096)))
        + chunk(b"IEND", b"")
    )


def dicom_bytes(with_pixels: bool, patient: str = "Doe^Jane") -> bytes:
    import pydicom
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1"  # CR image storage
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.PatientName, ds.PatientID, ds.Modality = patient, "MRN-55501", "CR"
    if with_pixels:
        rows = cols = 64
        ds.Rows, ds.Columns, ds.SamplesPerPixel = rows, cols, 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
        grid = np.add.outer(np.arange(rows), np.arange(cols)) * 30
        ds.PixelData = grid.astype(np.uint16).tobytes()
    buf = io.BytesIO()
    pydicom.dcmwrite(buf, ds, enforce_file_format=True)
    return buf.getvalue()


def nifti_bytes(shape: tuple[int, ...]) -> bytes:
    import nibabel as nib

    data = np.random.default_rng(0).random(shape).astype(np.float32)
    return gzip.compress(nib.Nifti1Image(data, np.eye(4)).to_bytes())


def post(client: TestClient, data: bytes, name: str = "case.png", **kw):
    return client.post("/predict", files={"file": (name, data)}, headers=AUTH, **kw)


@pytest.fixture(scope="module")
def served(breast_run) -> ServedModel:
    return ServedModel(breast_run)


@pytest.fixture(scope="module")
def client(served) -> TestClient:
    return TestClient(create_app(served, api_key=KEY))


@pytest.fixture(scope="module")
def case(medmnist_dir) -> tuple[bytes, np.ndarray]:
    """A real BreastMNIST test image as PNG bytes, and its pixels."""
    image = np.load(medmnist_dir / "breastmnist.npz")["test_images"][3]
    return png_bytes(image), image


def test_predict_answers_what_medlens_predict_answers(client, case, breast_run, tmp_path):
    import medlens.api as ml

    data, image = case
    r = post(client, data)
    assert r.status_code == 200 and r.headers["cache-control"] == "no-store"
    body = r.json()
    path = tmp_path / "case.png"
    path.write_bytes(data)
    [expected] = ml.predict(breast_run, [path])
    for name, p in body["probabilities"].items():
        assert p == pytest.approx(expected[f"p_{name}"], abs=1e-6)
    assert body["predicted"] == expected["predicted"]
    assert body["confidence"] == pytest.approx(expected["confidence"], abs=1e-6)
    assert ";".join(body["prediction_set"]) == expected["prediction_set"]
    assert body["calibrated"] and body["set_coverage"] == pytest.approx(0.9)
    assert sum(body["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)

    heat = body["heatmap"]
    assert heat["method"] == "gradcam" and heat["target"] == body["predicted"]
    shown = np.asarray(Image.open(io.BytesIO(base64.b64decode(heat["input_png"].split(",")[1]))))
    overlay = Image.open(io.BytesIO(base64.b64decode(heat["overlay_png"].split(",")[1])))
    # the input image is the upload's pixels, enlarged by a whole factor (28 px -> 280 px)
    assert shown.shape == (280, 280, 3) and np.array_equal(shown[::10, ::10, 0], image)
    assert overlay.size == (280, 280) and overlay.mode == "RGB"

    quick = post(client, data, params={"heatmap": "false"}).json()
    assert "heatmap" not in quick and quick["probabilities"] == body["probabilities"]


def test_dicom_and_nifti_uploads_are_read_in_memory(client):
    r = post(client, dicom_bytes(with_pixels=True), "IM0001")
    assert r.status_code == 200, r.text
    assert r.json()["input"] == {"kind": "dicom", "model_input_shape": [1, 28, 28]}
    r = post(client, nifti_bytes((40, 40, 1)), "slice.nii.gz")  # one slice: a 2D image
    assert r.status_code == 200, r.text
    assert r.json()["input"]["kind"] == "nifti"


@pytest.mark.parametrize(
    ("name", "payload", "status", "message"),
    [
        ("notes.png", lambda: b"Patient notes, not an image " * 20, 415, "is not an image"),
        ("empty.png", lambda: b"", 400, "empty"),
        (
            "cut.png",
            lambda: png_bytes(np.random.default_rng(1).integers(0, 255, (64, 64), np.uint8))[:2000],
            400,
            "not a readable PNG image",
        ),
        ("huge.png", lambda: huge_png(40_000, 40_000), 413, "pixels"),
        ("report.dcm", lambda: dicom_bytes(with_pixels=False), 400, "has no pixel data"),
        ("ct.nii.gz", lambda: nifti_bytes((12, 40, 40)), 422, "3D volume"),
    ],
)
def test_bad_uploads_get_a_4xx_with_a_message(client, case, name, payload, status, message):
    r = post(client, payload(), name)
    assert r.status_code == status, r.text
    body = r.json()
    assert message in body["error"] and body["hint"]
    assert name not in body["error"]  # messages never quote the client's file name
    # ... and the service keeps serving
    assert client.get("/health").json()["status"] == "ok"
    assert post(client, case[0]).status_code == 200


def test_requests_that_are_not_uploads(client, served, case):
    r = client.post("/predict", data={"other": "1"}, headers=AUTH)
    assert r.status_code == 415 and "multipart/form-data" in r.json()["error"]
    files = {"image": ("case.png", case[0])}  # the wrong field name
    r = client.post("/predict", files=files, headers=AUTH)
    assert r.status_code == 422 and "no field 'file'" in r.json()["error"]
    small = TestClient(create_app(served, max_upload_mb=0.01))  # 10 KiB
    r = small.post("/predict", files={"file": ("big.png", bytes(20_000))})
    assert r.status_code == 413 and "over the limit" in r.json()["error"]


def test_api_key(client, case):
    files = {"file": ("a.png", case[0])}
    assert client.post("/predict", files=files).status_code == 401
    assert client.post("/predict", files=files, headers={"X-API-Key": "guess"}).status_code == 401
    assert client.get("/model").status_code == 401
    health = client.get("/health").json()  # open: load balancers probe it
    assert health["api_key_required"] is True and health["run"] == "run"
    assert client.get("/").status_code == 200


def test_model_card_and_openapi(client, breast_run):
    import json

    card = client.get("/model", headers=AUTH).json()
    metrics = json.loads((breast_run / "metrics.json").read_text())
    assert card["labels"] == ["malignant", "normal, benign"]
    assert card["positive_class"] == "malignant"
    assert card["test_metrics"]["auc"] == pytest.approx(metrics["test"]["auc"])
    assert card["calibration"]["temperature"] > 0 and card["input"]["shape"] == [28, 28]
    spec = client.get("/openapi.json").json()
    body = spec["paths"]["/predict"]["post"]["requestBody"]["content"]["multipart/form-data"]
    assert body["schema"]["properties"]["file"]["format"] == "binary"
    assert {"/health", "/model", "/predict"} <= set(spec["paths"])


def test_uploads_never_reach_disk_or_logs(client, case, tmp_path, monkeypatch, caplog):
    import tempfile

    spool = tmp_path / "tmp"
    spool.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(spool))
    caplog.set_level(logging.DEBUG)
    secret_name = "Doe^Jane_MRN-55501.dcm"
    big = np.random.default_rng(2).integers(0, 255, (1500, 1500), np.uint8)  # 2.2 MB: > 1 MB
    assert post(client, png_bytes(big), secret_name).status_code == 200
    assert post(client, dicom_bytes(True), secret_name).status_code == 200
    assert post(client, dicom_bytes(False), secret_name).status_code == 400
    assert post(client, b"garbage", secret_name).status_code == 415
    assert list(spool.iterdir()) == []
    logged = "\n".join(r.getMessage() for r in caplog.records)
    for secret in ("Doe", "Jane", "MRN-55501"):
        assert secret not in logged


def test_a_bad_run_refuses_to_load(breast_run, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(breast_run, run)
    best = run / "checkpoints" / "best.safetensors"
    original = best.read_bytes()
    best.write_bytes(original[:8] + bytes(b ^ 0xFF for b in original[8:24]) + original[24:])
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        create_app(run)
    best.unlink()
    code = main(["serve", str(run), "--port", "1"])
    err = " ".join(capsys.readouterr().err.split())
    assert code == 2 and "best.safetensors is missing" in err and "Traceback" not in err


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def live_server(served):
    """The service on a loopback port, in a thread of this process."""
    import uvicorn

    port = _free_port()
    config = uvicorn.Config(create_app(served), host="127.0.0.1", port=port, log_level="error")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started, "uvicorn did not start"
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (.ci/run does)")
def test_web_page_shows_prediction_and_overlay(live_server, case, tmp_path):
    import httpx

    sync_playwright = pytest.importorskip("playwright.sync_api").sync_playwright
    image = tmp_path / "case.png"
    image.write_bytes(case[0])
    junk = tmp_path / "notes.png"
    junk.write_bytes(b"not an image at all " * 10)
    expected = httpx.post(f"{live_server}/predict", files={"file": ("c.png", case[0])}).json()
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        page.goto(live_server + "/")
        page.wait_for_function("document.getElementById('model-line').textContent.includes('Run')")
        page.set_input_files("#file", str(image))
        page.wait_for_selector("#result", state="visible", timeout=30_000)
        predicted = page.text_content("#predicted")
        sizes = page.evaluate(
            "['input-img', 'overlay-img'].map(id => document.getElementById(id).naturalWidth)"
        )
        bars = page.locator("#bars .bar").count()
        page.screenshot(path=str(tmp_path / "page.png"), full_page=True)
        page.set_input_files("#file", str(junk))  # a bad upload shows its message
        page.wait_for_selector("#error", state="visible", timeout=30_000)
        error = page.text_content("#error")
        browser.close()
    assert predicted == expected["predicted"]
    assert sizes == [280, 280] and bars == 2
    assert "is not an image" in error
