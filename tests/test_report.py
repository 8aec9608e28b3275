"""``medlens report``: a self-contained HTML file that renders in headless Chromium with every
section, and a model card whose numbers are the run's own."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from medlens.api import analyse, report
from medlens.cli import main
from medlens.errors import CheckpointError
from medlens.report.build import build_report
from medlens.run import Run

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
SECTIONS = (
    "summary", "metrics", "curves-roc", "confusion", "calibration", "operating", "conformal",
    "selective", "training", "gallery", "robustness", "subgroups", "data",
)  # fmt: skip


@pytest.fixture(scope="module")
def reported(breast_run, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("report") / "run"
    shutil.copytree(breast_run, run)
    report(run, gallery=4)
    return run


def test_report_is_self_contained(reported):
    html = (reported / "report.html").read_text()
    for section in SECTIONS:
        assert f'id="{section}"' in html, section
    sources = re.findall(r'(?:src|href)="([^"#][^"]*)"', html)
    assert sources and all(s.startswith("data:image/png;base64,") for s in sources), sources[:3]
    # ROC, PR, confusion, reliability, training, selective, robustness + 2 x 4 gallery images
    assert len(sources) >= 7 + 8
    assert "Wrong, most confident" in html and "Correct, most confident" in html


def test_report_numbers_are_the_runs(reported):
    html = (reported / "report.html").read_text()
    metrics = json.loads((reported / "metrics.json").read_text())
    trust = json.loads((reported / "trust.json").read_text())
    assert f"{metrics['test']['auc']:.3f}" in html
    assert f"T = {trust['calibration']['temperature']:.3f}" in html
    card = (reported / "model_card.md").read_text()
    for heading in ("## Intended use", "## Data", "## Test metrics", "## Calibration", "## Limits"):
        assert heading in card
    auc = trust["confidence_intervals"]["metrics"]["auc"]
    assert f"{auc['value']:.3f} ({auc['low']:.3f} to {auc['high']:.3f})" in card
    assert "'malignant' positive" in card  # binary metrics name their positive class
    rob = json.loads((reported / "robustness.json").read_text())
    assert rob["rows"][0]["corruption"] == "clean"
    assert rob["rows"][0]["auc"] == pytest.approx(metrics["test"]["auc"], abs=1e-6)


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (.ci/run does)")
def test_report_renders_in_headless_chromium(reported, tmp_path):
    sync_playwright = pytest.importorskip("playwright.sync_api").sync_playwright
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto((reported / "report.html").as_uri())
        for section in SECTIONS:
            box = page.locator(f"section#{section}").bounding_box()
            assert box and box["height"] > 40, section
        broken = page.evaluate(
            "[...document.images].filter(i => !i.complete || i.naturalWidth === 0).length"
        )
        n_images = page.evaluate("document.images.length")
        page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
        browser.close()
    assert n_images >= 15 and broken == 0
    assert (tmp_path / "report.png").stat().st_size > 50_000


def test_report_cli_and_errors(reported, tmp_path, capsys):
    out = tmp_path / "elsewhere" / "r.html"
    code = main(["report", str(reported), "--no-robustness", "--gallery", "0", "-o", str(out)])
    assert code == 0 and out.is_file()
    assert (out.parent / "model_card.md").is_file()
    html = out.read_text()
    assert (
        'id="robustness"' in html and f"Not measured: run <code>medlens analyse {reported}" in html
    )
    assert "Not computed" in html  # the gallery, turned off
    code = main(["report", str(tmp_path / "nothing")])
    err = capsys.readouterr().err
    assert code == 2 and "not a medlens run" in err and "Traceback" not in err


def test_analyses_are_kept_per_checkpoint_and_the_report_only_reads(reported, tmp_path):
    """analyse measures once per checkpoint (its files name the checkpoint's SHA-256); the
    renderer reads files only, and says which command writes a missing one."""
    run = Run.open(reported)
    digest = run.checkpoint_digest()
    for name in ("robustness.json", "uncertainty.json", "gallery/gallery.json"):
        assert json.loads((reported / name).read_text())["checkpoint_sha256"] == digest
    assert analyse(reported, gallery=4) == []  # up to date: nothing measured again
    assert analyse(reported, gallery=2, robustness=False, uncertainty=False) == ["gallery"]
    gallery = json.loads((reported / "gallery" / "gallery.json").read_text())
    assert gallery["per_group"] == 2 and all(len(g["cases"]) <= 2 for g in gallery["groups"])
    copy = tmp_path / "copy"
    shutil.copytree(reported, copy)
    (copy / "robustness.json").unlink()
    out = build_report(Run.open(copy))
    assert f"Not measured: run <code>medlens analyse {copy}" in out.read_text()
    (copy / "trust.json").unlink()
    with pytest.raises(CheckpointError, match=r"trust.json is missing.*medlens evaluate"):
        build_report(Run.open(copy))
