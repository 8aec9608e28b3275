"""What ``medlens models`` lists: medlens' own models and the literature's, with parameter counts.

A count comes from building the model (on the meta device: no memory, no weights), which needs
torch, timm and MONAI: 10-30 s of imports and builds. The counts are therefore kept in the cache
directory, keyed by the versions of torch, timm and MONAI and by a digest of medlens' model
code, so that only the first listing after an upgrade or a model change builds anything.

>>> row = model_catalogue()[0]  # doctest: +SKIP
>>> row.name, row.spatial_dims, row.parameters  # doctest: +SKIP
('resnet18_medmnist', 2, 11168706)
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from medlens.models.names import LITERATURE, OWN_MODELS, versioned_cache

COUNTS_FILE = "model_parameters.json"


@dataclass(frozen=True)
class CatalogueRow:
    """One listed model: ``description`` is the architecture's title for the literature's."""

    name: str
    spatial_dims: int
    parameters: int
    description: str
    own: bool


def _code_digest() -> str:
    """A digest of medlens' model modules: a changed architecture invalidates its count."""
    digest = hashlib.sha256()
    for path in sorted(Path(__file__).parent.glob("*.py")):
        digest.update(path.name.encode() + path.read_bytes())
    return digest.hexdigest()[:16]


def _count_all() -> dict[str, int]:
    from medlens.models.registry import parameter_count

    counts = {name: parameter_count(name, own.spatial_dims) for name, own in OWN_MODELS.items()}
    counts.update({name: parameter_count(name, 2) for name in LITERATURE})
    return counts


def parameter_counts() -> dict[str, int]:
    """Parameters of every listed model for one grey channel and two classes (cached)."""
    key = {pkg: metadata.version(pkg) for pkg in ("torch", "timm", "monai")}
    key["models"] = _code_digest()
    return versioned_cache(COUNTS_FILE, key, _count_all)


def model_catalogue() -> list[CatalogueRow]:
    """medlens' own models first, then the literature's architectures (all 2D timm models)."""
    counts = parameter_counts()
    rows = [
        CatalogueRow(name, own.spatial_dims, counts[name], own.description, own=True)
        for name, own in OWN_MODELS.items()
    ]
    rows += [
        CatalogueRow(name, 2, counts[name], title, own=False) for name, title in LITERATURE.items()
    ]
    return rows
