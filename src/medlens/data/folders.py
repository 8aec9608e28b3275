"""Image folders as they are downloaded: class folders, with or without split folders.

Layouts read without options (split folder names in any case and spelling that
:func:`~medlens.data.manifest.split_name` knows: ``Training``, ``valid``, ``dev``, ``TEST``...)::

    folder/<class>/*.png                          medlens makes train, val and test
    folder/train|val|test/<class>/*.png           the folder's own splits
    folder/train|test/<class>/*.png               val is carved out of train (labelled.py)
    folder/chest_xray/train/<class>/*.png         one sub-folder and nothing else: looked into
    folder/data/images/<class>/*.png              (twice at most)

Images may sit deeper inside a class folder (``<class>/<patient>/*.dcm``). Folders whose
names start with ``.`` or ``__`` (``__MACOSX``) are ignored; so are folders beside split
folders that are not splits, and each choice is written to :attr:`Manifest.notes`.

>>> m = scan_folder("chest_xray")  # doctest: +SKIP
>>> sorted(set(m.splits)), m.label_names  # doctest: +SKIP
(['test', 'train'], ['NORMAL', 'PNEUMONIA'])
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from medlens.data.dataset import SPLITS
from medlens.data.manifest import Manifest, split_name
from medlens.data.readers import image_kind
from medlens.errors import DataError

MAX_NESTING = 2  # single sub-folders looked into before the class or split folders


@dataclass
class FolderLayout:
    """Where the class folders are: one root, or one root per split."""

    roots: dict[str | None, Path]  # split (None: no splits) -> folder of class folders
    classes: list[str]
    files: dict[tuple[str | None, str], list[Path]]  # (split, class) -> its image files
    notes: list[str] = field(default_factory=list)


def _folders(folder: Path) -> list[Path]:
    return sorted(d for d in folder.iterdir() if d.is_dir() and not d.name.startswith((".", "__")))


def _images(folder: Path, recursive: bool) -> list[Path]:
    files = folder.rglob("*") if recursive else folder.iterdir()
    return sorted(f for f in files if f.is_file() and not f.name.startswith(".") and image_kind(f))


def _shown(path: Path, top: Path) -> str:
    return top.name if path == top else f"{top.name}/{path.relative_to(top).as_posix()}"


def find_layout(folder: Path) -> FolderLayout:
    """The class (and split) folders of ``folder``; DataError naming the folder when there
    are none, or when a split folder lacks a class that another has."""
    root, notes = folder, []
    for _ in range(MAX_NESTING):
        subs = _folders(root)
        # a lone sub-folder that holds folders (not a lone class folder) is looked into
        if len(subs) != 1 or split_name(subs[0].name) or not _folders(subs[0]):
            break
        if _images(root, recursive=False):
            break
        root = subs[0]
    subs = _folders(root)
    if root != folder:
        notes.append(f"class folders found in {_shown(root, folder)}, below the folder given")
    split_dirs: dict[str, Path] = {}
    for d in subs:
        split = split_name(d.name)
        if split is None:
            continue
        if split in split_dirs:
            raise DataError(
                f"{root}: folders {split_dirs[split].name} and {d.name} both look like the "
                f"{split} split",
                hint="merge them, or rename one",
            )
        split_dirs[split] = d
    if not split_dirs:
        found = _classes(root, folder)
        files = {(None, c): f for c, f in found.items()}
        return FolderLayout({None: root}, list(found), files, notes)
    others = [d.name for d in subs if split_name(d.name) is None]
    roots = {s: split_dirs[s] for s in SPLITS if s in split_dirs}
    spelled = [f"{d.name} as {s}" for s, d in roots.items() if d.name != s]
    if spelled:
        notes.append("split folders read: " + ", ".join(spelled))
    if others:
        notes.append(f"folders beside the split folders ignored: {', '.join(others)}")
    per_split = {s: _classes(d, folder, at_least=1) for s, d in roots.items()}
    classes = sorted(set().union(*(set(c) for c in per_split.values())))
    if len(classes) < 2:
        raise DataError(
            f"{root}: the split folders hold one class only ({classes[0]})",
            hint="a classifier needs at least two classes, one sub-folder each",
        )
    for s, names in per_split.items():
        lacking = [c for c in classes if c not in names]
        if lacking:
            have = [roots[t].name for t, n in per_split.items() if set(lacking) & set(n)]
            raise DataError(
                f"{roots[s]} has no folder for class(es) {', '.join(lacking)}, which "
                f"{' and '.join(have)} {'have' if len(have) > 1 else 'has'}",
                hint=f"add {roots[s].name}/{lacking[0]} with its images, or remove the class "
                "from every split folder",
            )
    files = {(s, c): found[c] for s, found in per_split.items() for c in found}
    return FolderLayout(roots, classes, files, notes)


def _classes(root: Path, top: Path, at_least: int = 2) -> dict[str, list[Path]]:
    """The class folders in ``root`` (``at_least`` of them, none empty) and their images."""
    subs = _folders(root)
    where = _shown(root, top) if root != top else str(root)
    if len(subs) < at_least:
        loose = _images(root, recursive=False)
        found = (
            f"{len(loose)} image(s) but no class sub-folders"
            if loose and not subs
            else f"one sub-folder ({subs[0].name})"
            if subs
            else "no images and no sub-folders"
        )
        raise DataError(
            f"{where} holds {found}: no class folders to read labels from",
            hint="put each class's images in a sub-folder named after the class "
            "(folder/<class>/...), or give a CSV manifest with path and label columns "
            "(--image-root for the images' folder)",
        )
    found = {d.name: _images(d, recursive=True) for d in subs}
    empty = [name for name, files in found.items() if not files]
    if empty:
        raise DataError(
            f"{where}: class folder(s) {', '.join(empty)} hold no images",
            hint="add images or remove the empty folders",
        )
    return found


def scan_folder(folder: str | Path) -> Manifest:
    """A labelled image folder in any layout of the module doc, as a :class:`Manifest`."""
    folder = Path(folder).resolve()
    layout = find_layout(folder)
    paths, labels, splits = [], [], []
    for split in layout.roots:
        for k, name in enumerate(layout.classes):
            files = layout.files[split, name]
            paths += files
            labels += [k] * len(files)
            splits += [split] * len(files)
    with_splits = None not in layout.roots
    return Manifest(
        source=str(folder),
        paths=paths,
        labels=np.asarray(labels, np.int64),
        label_names=layout.classes,
        task="binary" if len(layout.classes) == 2 else "multi-class",
        rows=np.arange(len(paths)),
        splits=np.asarray(splits, str) if with_splits else None,
        notes=layout.notes,
        split_source="split folders",
    )
