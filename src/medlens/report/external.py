"""The report's "External validation" section: one table per ``RUN/external/<name>/``, the
calibration version in use and the out-of-distribution guard, read from the files that
``medlens evaluate RUN --on DATA``, ``medlens recalibrate`` and ``medlens evaluate`` wrote."""

from __future__ import annotations

from typing import Any

from medlens.run import Run

SHOWN = ("auc", "acc", "sensitivity", "specificity", "ece", "brier")


def _fmt(v: Any) -> str:
    return "n/a" if v is None else f"{v:.3f}"


def _set_values(summary: dict[str, Any]) -> dict[str, Any]:
    drop, cis = summary["drop"]["metrics"], summary["confidence_intervals"]
    rows = []
    for key in SHOWN:
        if key not in drop:
            continue
        d, c = drop[key], cis.get(key, {})
        rows.append(
            {
                "name": key,
                "internal": _fmt(d["internal"]),
                "external": _fmt(d["external"]),
                "ci": f"{_fmt(c.get('low'))} - {_fmt(c.get('high'))}",
                "drop": f"{_fmt(d['drop'])} ({_fmt(d['low'])}, {_fmt(d['high'])})",
            }
        )
    cal, ood = summary["calibration"], summary.get("ood", {})
    points = [
        f"{p['target']} {p['value']:.0%} point (threshold {p['threshold']:.3f}): site "
        f"sensitivity {_fmt(p['site']['sensitivity']['value'])}, specificity "
        f"{_fmt(p['site']['specificity']['value'])}"
        for p in summary.get("operating_points", [])
    ]
    conformal = summary.get("conformal")
    return {
        "name": summary["name"],
        "n": summary["n_images"],
        "resampled": summary["resampled"],
        "rows": rows,
        "undefined": list(summary.get("undefined", {}).values()),
        "calibration": f"ECE {_fmt(cal['before']['ece'])} before and "
        f"{_fmt(cal['after']['ece'])} after the run's temperature {cal['temperature']:.3f} "
        f"(calibration {cal['version']})",
        "points": points,
        "conformal": None
        if conformal is None
        else f"coverage {_fmt(conformal['coverage'])} for a target of "
        f"{conformal['target_coverage']:.0%} (mean set size {conformal['mean_set_size']:.2f})",
        "shift": summary["shift"]["statement"],
        "ood": f"{ood['flagged_share']:.1%} of the images flagged as unlike training "
        f"({ood['internal_test_flagged_share']:.1%} of the internal test)"
        if "flagged_share" in ood
        else ood.get("note"),
    }


def external_values(run: Run) -> dict[str, Any] | None:
    """The section's values, or None when the run has no external set nor recalibration."""
    sets = []
    if run.external_dir.is_dir():
        for folder in sorted(p for p in run.external_dir.iterdir() if p.is_dir()):
            if (folder / "external.json").is_file():
                sets.append(_set_values(run.read_json(folder / "external.json")))
    record = run.calibration()
    if not sets and "version" not in record:
        return None
    guard = run.read_json(run.ood_file) if run.ood_file.is_file() else None
    return {
        "sets": sets,
        "calibration": f"calibration {record.get('version', 'v1')} in use: "
        + record.get("source", "fitted on the run's own validation split")
        + f" (temperature {record['temperature']:.3f})",
        "guard": None
        if guard is None
        else f"{guard['method']} score, threshold at {guard['false_alarm']:.0%} false alarms "
        "on the run's validation images",
    }
