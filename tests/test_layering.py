"""The layers of docs/architecture.md, enforced: imports point one way, down the flow.

Every ``import`` of a medlens module, at module level or inside a function, is read from the
source (with :mod:`ast`), so a function-local import of a higher layer fails here as a
top-level one does. Also: no import cycles between modules or between packages, no
``_private`` name imported from another package, and the array-only and file-only layers load
no torch.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "medlens"

# Top to bottom. A module may import from its own layer or a lower one, never a higher one.
LAYERS: list[tuple[str, ...]] = [
    ("cli", "__main__"),
    ("api",),
    ("compare", "tune", "compress", "serve"),
    ("stages",),
    ("export", "report", "analyse", "train"),
    ("run", "inference"),
    ("plan", "data", "models", "evaluate", "device", "progress"),
    ("config",),
    ("errors", ""),  # "" is the package itself (medlens/__init__.py: version, errors)
]
# Packages of one layer that must not know each other (DESIGN.md: "data/ knows nothing of
# models or training; models/ knows nothing of data files; evaluate/ works on arrays").
FORBIDDEN = {
    "data": {"models", "evaluate", "plan", "device"},
    "models": {"data", "evaluate", "plan"},
    "evaluate": {"config", "data", "models", "plan", "device", "progress"},
    "report": {"analyse", "train", "export", "inference"},
}
# Modules whose import must not load torch: the CLI checks arguments before the heavy
# libraries; evaluate/ is arrays in, numbers out; report/ renders files; run opens runs.
TORCH_FREE = ("medlens.cli", "medlens.run", "medlens.config", "medlens.report.build")
TORCH_FREE_PACKAGES = ("evaluate", "report")


def _module_name(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _resolve(name: str) -> str | None:
    """The medlens module ``name`` refers to (a module, or the package that holds a name)."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _imports(module: str) -> list[tuple[str, str, int]]:
    """(imported medlens module, imported name, line) for every import in ``module``."""
    tree = ast.parse(MODULES[module].read_text())
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module == "medlens" or node.module.startswith("medlens."):
                for alias in node.names:
                    full = f"{node.module}.{alias.name}"
                    target = full if full in MODULES else _resolve(node.module)
                    out.append((target, alias.name, node.lineno))
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == "medlens" or alias.name.startswith("medlens."):
                    out.append((_resolve(alias.name), "", node.lineno))
    return [(t, n, line) for t, n, line in out if t and t != module]


def _top(module: str) -> str:
    """The top-level part of medlens a module belongs to: "stages", "run", "" (the package)."""
    return module.split(".")[1] if "." in module else ""


def _layer(module: str) -> int:
    top = _top(module)
    for i, names in enumerate(LAYERS):
        if top in names:
            return i
    raise AssertionError(f"{module} belongs to no layer: add medlens.{top} to LAYERS")


GRAPH = {m: _imports(m) for m in MODULES}


def test_every_module_has_a_layer():
    for module in MODULES:
        _layer(module)


def test_imports_point_down():
    upward = [
        f"{m}:{line} imports {t} ({_top(t) or 'medlens'} is above {_top(m)})"
        for m, edges in GRAPH.items()
        for t, _, line in edges
        if _layer(t) < _layer(m)
    ]
    assert not upward, "imports that point up the layers:\n" + "\n".join(upward)


def test_packages_that_must_not_know_each_other():
    wrong = [
        f"{m}:{line} imports {t}"
        for m, edges in GRAPH.items()
        for t, _, line in edges
        if _top(t) in FORBIDDEN.get(_top(m), ())
    ]
    assert not wrong, "\n".join(wrong)


def test_no_private_names_across_packages():
    wrong = [
        f"{m}:{line} imports {name} from {t}"
        for m, edges in GRAPH.items()
        for t, name, line in edges
        if name.startswith("_") and not name.startswith("__") and _top(t) != _top(m)
    ]
    assert not wrong, "\n".join(wrong)


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one node (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in list(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_cycles_between_modules():
    graph = {m: {t for t, _, _ in edges} for m, edges in GRAPH.items()}
    assert _cycles(graph) == []


def test_no_import_cycles_between_packages():
    graph: dict[str, set[str]] = defaultdict(set)
    for m, edges in GRAPH.items():
        for t, _, _ in edges:
            if _top(t) != _top(m) and _top(t) and _top(m):
                graph[_top(m)].add(_top(t))
    assert _cycles(graph) == []


def test_the_checks_catch_a_cycle_and_an_upward_import():
    """The checks themselves: a planted cycle and an upward import are found."""
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _layer("medlens.train.loop") < _layer("medlens.run")  # train above run
    assert _layer("medlens.evaluate.metrics") > _layer("medlens.stages.evaluate")


def _torch_free_modules() -> list[str]:
    names = list(TORCH_FREE)
    for package in TORCH_FREE_PACKAGES:
        names += [m for m in MODULES if _top(m) == package]
    return sorted(set(names))


def test_array_and_file_layers_load_no_torch():
    code = (
        "import importlib, sys\n"
        f"for name in {_torch_free_modules()!r}:\n"
        "    importlib.import_module(name)\n"
        "heavy = sorted(m for m in ('torch', 'timm', 'torchvision', 'monai') if m in sys.modules)\n"
        "print(','.join(heavy))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(SRC), "PATH": "/usr/bin:/bin"},
        check=False,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "", f"importing them loaded {out.stdout.strip()}"
