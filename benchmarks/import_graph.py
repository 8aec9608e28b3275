"""The import graph of ``src/medlens``: its cycles (strongly connected components) and its
largest modules, for this checkout or another (``git archive 7fabc69 src | tar -x -C /tmp/b``).

``from pkg import submodule`` counts as an import of the submodule only, as grimp (the graph
behind import-linter) counts it. networkx finds the components.

Run: python benchmarks/import_graph.py [CHECKOUT]
"""

import ast
import sys
from pathlib import Path

import networkx as nx

root = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).resolve().parents[1]) / "src"
mods = {}
for p in (root / "medlens").rglob("*.py"):
    rel = p.relative_to(root).with_suffix("")
    name = ".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)
    mods[name] = p
g = nx.DiGraph()
for name, p in mods.items():
    g.add_node(name)
    pkg = name if p.name == "__init__.py" else name.rsplit(".", 1)[0]
    for node in ast.walk(ast.parse(p.read_text())):
        targets = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = pkg.split(".")
                parts = parts[: len(parts) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            subs = [f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in mods]
            targets = subs if len(subs) == len(node.names) else [base, *subs]  # as grimp
        for t in targets:
            if t in mods and t != name:
                g.add_edge(name, t)
sccs = [c for c in nx.strongly_connected_components(g) if len(c) > 1]
print(f"{len(mods)} modules, {g.number_of_edges()} import edges, {len(sccs)} cycles (SCCs > 1)")
for c in sorted(sccs, key=len, reverse=True):
    print(f"  {len(c)}: {', '.join(sorted(c))}")
sizes = sorted(((len(p.read_text().splitlines()), n) for n, p in mods.items()), reverse=True)
print("largest:", ", ".join(f"{n} {lines}" for lines, n in sizes[:8]))
print("total lines:", sum(lines for lines, _ in sizes))
