"""Decode and preprocess every image once, into uint8 arrays on disk.

A cache folder ``<cache_dir>/<name>-<key>/`` holds ``images.npy`` (N, C, ...) uint8, memory-
mappable), ``arrays.npz`` (labels, hashed patient ids, splits, manifest rows, original shapes,
spacings and a hash of each cached image, which finds identical images) and ``info.json``;
each split is memory-mapped from ``rows-<hash>.npy`` beside them (:func:`rows_memmap`). The
key hashes every file's path, size and modification time, the labels and the preprocessing
settings, so the cache is rebuilt only when one of them changes.

Files are processed in chunks by a pool of worker processes (all cores by default). Each
finished chunk is saved at once under ``<cache_dir>/chunks/``, keyed by its own files and the
settings: when a later file fails, nothing already decoded is lost, and fixing that one file
rebuilds only its chunk.
"""

from __future__ import annotations

import csv
import hashlib
import json
import multiprocessing
import os
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medlens.data.dataset import image_hashes
from medlens.data.manifest import Manifest
from medlens.data.preprocess import PreprocessConfig, preprocess_image
from medlens.data.readers import LoadedImage, read_image_file
from medlens.errors import DataError, MedlensError

CACHE_VERSION = 4  # bump whenever preprocessing output changes
CHUNK = 64


@dataclass
class CachedData:
    """What a cache folder holds, loaded."""

    path: Path
    images: np.ndarray  # (N, C, ...) uint8, memory-mapped
    keep: np.ndarray  # indices into the manifest of the images that were cached
    orig_shapes: list[list[int]]
    spacings: list[list[float] | None]
    skipped: list[dict]
    modality: str | None = None  # the most common DICOM Modality tag (CT, MR, ...), if any
    patients: np.ndarray | None = None  # hashed patient ids of the kept images, if any
    hashes: np.ndarray | None = None  # (N,) "S32" hex digest of each cached image's bytes


def hash_patient(pid: str) -> str:
    """Patient ids never reach the cache in clear; a short SHA-256 keeps them apart."""
    return hashlib.sha256(f"medlens:{pid}".encode()).hexdigest()[:16]


def _file_stats(paths: list[Path]) -> list[tuple[str, int, int]]:
    out = []
    for p in paths:
        try:
            st = p.stat()
            out.append((str(p), st.st_size, st.st_mtime_ns))
        except OSError:
            out.append((str(p), -1, -1))  # a missing file: its chunk will report it
    return out


def _digest(*parts: object) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(part if isinstance(part, bytes) else json.dumps(part, sort_keys=True).encode())
    return h.hexdigest()


def prepare_file(path: str | Path, cfg: PreprocessConfig) -> tuple[np.ndarray, LoadedImage]:
    """One file as the model sees it (uint8, channel-first), and what was decoded.

    The single path from a file to a model input: the cache and ``medlens predict`` both use
    it, so a prediction sees exactly the preprocessing training saw.
    """
    img = read_image_file(path)
    return preprocess_image(img, cfg), img


def _process_chunk(paths: list[str], cfg_json: str) -> list[dict]:
    """Worker: read and preprocess each file; a failure is recorded, not raised."""
    cfg = PreprocessConfig.model_validate_json(cfg_json)
    out = []
    for p in paths:
        try:
            arr, img = prepare_file(p, cfg)
            out.append(
                {
                    "image": arr,
                    "shape": list(img.array.shape),
                    "spacing": list(img.spacing) if img.spacing else None,
                    "modality": img.meta.get("modality"),
                }
            )
        except MedlensError as exc:
            out.append({"error": str(exc)})
        except Exception as exc:  # a reader bug must not take the whole cache down
            out.append({"error": f"{p}: {type(exc).__name__}: {exc}"})
    return out


def _chunk_path(root: Path, stats: list, cfg_json: str) -> Path:
    return root / "chunks" / f"{_digest(CACHE_VERSION, stats, cfg_json)[:24]}.npz"


def _save_chunk(path: Path, results: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    good = [r for r in results if "image" in r]
    meta = [{k: v for k, v in r.items() if k != "image"} for r in results]
    images = np.stack([r["image"] for r in good]) if good else np.zeros((0,), np.uint8)
    tmp = path.with_name(path.stem + ".tmp.npz")
    np.savez(tmp, images=images, meta=np.array(json.dumps(meta)))
    os.replace(tmp, path)


def _load_chunk(path: Path) -> list[dict]:
    with np.load(path, allow_pickle=False) as f:
        meta = json.loads(str(f["meta"]))
        images = iter(f["images"]) if len(f["images"]) else iter(())
        return [dict(m, image=next(images)) if "error" not in m else m for m in meta]


def build_cache(
    manifest: Manifest,
    cfg: PreprocessConfig,
    cache_dir: Path,
    *,
    name: str,
    skip_bad: bool = False,
    workers: int | None = None,
    on_progress: Callable[[int, int], None] | None = None,
) -> CachedData:
    """Build (or reuse) the cache of ``manifest`` under ``cache_dir``; see the module doc."""
    cfg_json = cfg.model_dump_json()
    stats = _file_stats(manifest.paths)
    key = _digest(
        CACHE_VERSION, stats, manifest.labels.tobytes(), manifest.label_names, cfg_json, skip_bad
    )[:16]
    folder = cache_dir / f"{name}-{key}"
    if (folder / "info.json").is_file():
        return load_cache(folder)
    chunks = [list(range(s, min(s + CHUNK, len(manifest)))) for s in range(0, len(manifest), CHUNK)]
    results: dict[int, list[dict]] = {}
    todo = []
    for c, idx in enumerate(chunks):
        path = _chunk_path(cache_dir, [stats[i] for i in idx], cfg_json)
        if path.is_file():
            results[c] = _load_chunk(path)
        else:
            todo.append(c)
    done = sum(len(chunks[c]) for c in results)
    if on_progress:
        on_progress(done, len(manifest))
    if todo:
        n_workers = max(1, min(workers or os.cpu_count() or 1, len(todo)))
        # spawn: forking a process that has used torch's thread pools can hang the children
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(n_workers, mp_context=ctx) as pool:
            futures = {
                pool.submit(
                    _process_chunk, [str(manifest.paths[i]) for i in chunks[c]], cfg_json
                ): c
                for c in todo
            }
            for fut in as_completed(futures):
                c = futures[fut]
                results[c] = fut.result()
                # saved even with failures inside: its good images are never decoded twice
                _save_chunk(
                    _chunk_path(cache_dir, [stats[i] for i in chunks[c]], cfg_json), results[c]
                )
                done += len(chunks[c])
                if on_progress:
                    on_progress(done, len(manifest))
    flat = [r for c in range(len(chunks)) for r in results[c]]
    failed = [i for i, r in enumerate(flat) if "error" in r]
    if failed and not skip_bad:
        more = f" ({len(failed) - 1} more files failed too)" if len(failed) > 1 else ""
        raise DataError(
            f"{manifest.where(failed[0])} could not be cached: {flat[failed[0]]['error']}{more}",
            hint="fix or remove the file, or add --skip-bad to skip broken files "
            "(the files decoded so far are kept)",
        )
    return _assemble(manifest, flat, folder, cfg, key)


def _assemble(
    manifest: Manifest, flat: list[dict], folder: Path, cfg: PreprocessConfig, key: str
) -> CachedData:
    keep = np.array([i for i, r in enumerate(flat) if "image" in r], dtype=np.int64)
    skipped = [
        {"path": str(manifest.paths[i]), "row": int(manifest.rows[i]), "error": r["error"]}
        for i, r in enumerate(flat)
        if "error" in r
    ]
    if len(keep) == 0:
        raise DataError(
            f"none of the {len(flat)} files of {manifest.source} could be read",
            hint="see skipped.csv beside the cache for the reasons",
        )
    folder.mkdir(parents=True, exist_ok=True)
    first = flat[keep[0]]["image"]
    images = np.lib.format.open_memmap(
        folder / "images.npy.tmp", mode="w+", dtype=np.uint8, shape=(len(keep), *first.shape)
    )
    for j, i in enumerate(keep):
        images[j] = flat[i]["image"]
    images.flush()
    hashes = image_hashes(flat[i]["image"] for i in keep)
    del images
    os.replace(folder / "images.npy.tmp", folder / "images.npy")
    with (folder / "skipped.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["path", "row", "error"])
        writer.writeheader()
        writer.writerows(skipped)
    patients = (
        np.array([hash_patient(p) for p in manifest.patients[keep]])
        if manifest.patients is not None
        else np.zeros(0, str)
    )
    np.savez(
        folder / "arrays.npz",
        keep=keep,
        labels=manifest.labels[keep],
        patients=patients,
        rows=manifest.rows[keep],
        shapes=np.array(json.dumps([flat[i]["shape"] for i in keep])),
        spacings=np.array(json.dumps([flat[i]["spacing"] for i in keep])),
        hashes=hashes,
    )
    tags = [flat[i].get("modality") for i in keep if flat[i].get("modality")]
    info = {
        "version": CACHE_VERSION,
        "key": key,
        "source": manifest.source,
        "n": len(keep),
        "skipped": len(skipped),
        "modality": max(set(tags), key=tags.count) if tags else None,
        "preprocess": cfg.model_dump(mode="json"),
    }
    (folder / "info.json").write_text(json.dumps(info, indent=2))  # written last: marks it done
    return load_cache(folder)


def rows_memmap(cached: CachedData, rows: np.ndarray) -> np.ndarray:
    """The cached images at ``rows`` as a memory map, never read whole into RAM.

    All rows in order are the cache itself; any other selection (a split) is copied once, in
    slices, to ``rows-<hash of the rows>.npy`` in the cache folder and mapped from there.
    Copy-on-write: the array is writable (as torch wants) but the file never changes.
    """
    rows = np.asarray(rows, dtype=np.int64)
    if np.array_equal(rows, np.arange(len(cached.images))):
        return np.load(cached.path / "images.npy", mmap_mode="c")
    if len(rows) == 0:  # an empty file cannot be mapped
        return np.zeros((0, *cached.images.shape[1:]), dtype=cached.images.dtype)
    path = cached.path / f"rows-{_digest(rows.tobytes())[:16]}.npy"
    if not path.is_file():
        try:
            _write_rows(cached.images, rows, path)
        except OSError:  # a read-only cache: hold the split in RAM as before
            return np.asarray(cached.images[rows])
    return np.load(path, mmap_mode="c")


def _write_rows(images: np.ndarray, rows: np.ndarray, path: Path) -> None:
    """``images[rows]`` as a .npy file, copied in slices of about 64 MB."""
    tmp = path.with_name(f"{path.stem}.{os.getpid()}.tmp")
    out = np.lib.format.open_memmap(
        tmp, mode="w+", dtype=images.dtype, shape=(len(rows), *images.shape[1:])
    )
    step = max(1, (64 << 20) // max(1, out[0].nbytes))
    for start in range(0, len(rows), step):
        out[start : start + step] = images[rows[start : start + step]]
    out.flush()
    del out
    os.replace(tmp, path)  # atomic: several processes (ranks) may race to write it


def _hashes_of_older_cache(folder: Path, images: np.ndarray) -> np.ndarray:
    """A cache built before arrays.npz held image hashes: hashed once, kept in hashes.npy."""
    path = folder / "hashes.npy"
    if path.is_file():
        return np.load(path, allow_pickle=False)
    hashes = image_hashes(images)
    try:
        tmp = folder / f"hashes.{os.getpid()}.tmp.npy"
        np.save(tmp, hashes)
        os.replace(tmp, path)
    except OSError:  # a read-only cache: hashed again next time
        pass
    return hashes


def load_cache(folder: Path) -> CachedData:
    """Open a finished cache folder (images memory-mapped)."""
    with np.load(folder / "arrays.npz", allow_pickle=False) as f:
        keep = f["keep"]
        patients = f["patients"] if len(f["patients"]) else None
        shapes = json.loads(str(f["shapes"]))
        spacings = json.loads(str(f["spacings"]))
        hashes = f.get("hashes")
    images = np.load(folder / "images.npy", mmap_mode="r")
    if hashes is None:
        hashes = _hashes_of_older_cache(folder, images)
    with (folder / "skipped.csv").open() as f:
        skipped = list(csv.DictReader(f))
    info = json.loads((folder / "info.json").read_text())
    return CachedData(
        path=folder,
        images=images,
        keep=keep,
        orig_shapes=shapes,
        spacings=spacings,
        skipped=skipped,
        modality=info.get("modality"),
        patients=patients,
        hashes=hashes,
    )
