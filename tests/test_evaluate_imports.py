"""medlens.evaluate is arrays in, numbers out: its modules import neither torch nor the plan,
and none imports another module's private names."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import medlens.evaluate

EVALUATE = Path(medlens.evaluate.__file__).parent
# these need a model and move to medlens.analyse; they may import torch
NEEDS_A_MODEL = {"robustness", "corruptions", "uncertainty"}
FORBIDDEN = ("torch", "medlens.config", "medlens.data", "medmnist")


def array_modules() -> list[str]:
    names = sorted(p.stem for p in EVALUATE.glob("*.py") if p.stem != "__init__")
    return [f"medlens.evaluate.{n}" for n in names if n not in NEEDS_A_MODEL]


def test_array_modules_are_listed():
    modules = array_modules()
    for name in ("metrics", "validation", "calibration", "conformal", "trust", "selective"):
        assert f"medlens.evaluate.{name}" in modules
    assert not any(m.rsplit(".", 1)[1] in NEEDS_A_MODEL for m in modules)


def test_evaluate_imports_no_torch_and_no_plan():
    code = (
        "import importlib, json, sys\n"
        f"for name in {array_modules()!r}:\n"
        "    importlib.import_module(name)\n"
        f"print(json.dumps([m for m in {FORBIDDEN!r} if m in sys.modules]))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert json.loads(out.stdout) == [], out.stdout


def test_no_private_names_from_other_modules():
    bad = []
    for path in EVALUATE.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("medlens"):
                bad += [
                    f"{path.name}: {node.module}.{a.name}"
                    for a in node.names
                    if a.name.startswith("_") and node.module != f"medlens.evaluate.{path.stem}"
                ]
    assert bad == []
