"""Batches drawn by index from uint8 arrays, resident on the training device or streamed.

Resident: a MedMNIST split is small as uint8 (PneumoniaMNIST: 3.7 MB), so it is copied to the
device once and every batch is an index into it: no worker processes, no per-image Python, no
host-to-device copy per step.

Streamed: when the arrays do not fit (or ``on_device="never"``) they stay where they are, a
memory-mapped cache file or an array in RAM, and a ``DataLoader`` with worker processes gathers
each batch of indices (pinned on CUDA), which is copied to the device asynchronously.

Both modes draw the batch order and the augmentation from the same generators, and both convert
to float, augment and normalise whole batches on the device, so on the CPU they give identical
batches for a seed.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator
from typing import Literal

import numpy as np
import torch

from medlens.config import AugmentConfig, Plan
from medlens.data.augment import augment_batch
from medlens.errors import ConfigError

OnDevice = Literal["auto", "always", "never"]
# Keep arrays on a device only when they take at most this share of its free memory.
_DEVICE_SHARE = 0.4
_PREFETCH = 4  # batches each streaming worker prepares ahead


def default_workers() -> int:
    """Streaming worker processes when the plan does not say: half the usable cores, 1 to 8."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        cores = os.cpu_count() or 1
    return max(1, min(8, cores // 2))


def _available_ram() -> float:
    try:
        return float(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return float(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))


def _tensor_view(a: np.ndarray) -> torch.Tensor:
    """A CPU tensor sharing ``a``'s memory (a read-only memmap too: nothing writes to it)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*not writable.*")
        return torch.from_numpy(a)


def _whole_npy(a: np.ndarray) -> str | None:
    """The .npy file ``a`` maps in full, if it does (so a worker can map it again)."""
    name = getattr(a, "filename", None)
    if not isinstance(a, np.memmap) or not name or not str(name).endswith(".npy"):
        return None
    whole = np.load(name, mmap_mode="r")
    same = whole.shape == a.shape and whole.offset == a.offset and a.flags.c_contiguous
    return str(name) if same else None


class _Gather(torch.utils.data.Dataset):
    """One item is one batch: the rows at an index array, read in ascending order (sequential
    reads from a memmap) and returned in the order asked."""

    def __init__(self, images: np.ndarray, labels: np.ndarray) -> None:
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def __getitem__(self, idx: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        ascending = np.argsort(idx, kind="stable")
        x = np.empty((len(idx), *self.images.shape[1:]), dtype=self.images.dtype)
        x[ascending] = self.images[idx[ascending]]
        return torch.from_numpy(x), torch.from_numpy(np.ascontiguousarray(self.labels[idx]))

    def __getstate__(self) -> dict:
        # spawned workers map the cache file again instead of receiving a pickled copy of it
        state = dict(self.__dict__)
        state["images"] = _whole_npy(self.images) or self.images
        return state

    def __setstate__(self, state: dict) -> None:
        if isinstance(state["images"], str):
            state["images"] = np.load(state["images"], mmap_mode="r")
        self.__dict__.update(state)


class _Batches(torch.utils.data.Sampler):
    """The index arrays of the current pass; set before each pass over the loader."""

    def __init__(self) -> None:
        self.batches: list[np.ndarray] = []

    def __iter__(self) -> Iterator[np.ndarray]:
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


def _in_ram(images: np.ndarray) -> np.ndarray:
    """``images`` as a writable C-contiguous array (a read-only one is copied into RAM)."""
    out = np.ascontiguousarray(images)
    return out if out.flags.writeable else out.copy()


class DeviceArrays:
    """uint8 images and their labels, resident on ``device`` when they fit, else streamed.

    ``on_device``: ``"auto"`` keeps them on the device when they fit, ``"always"`` insists
    (a :class:`ConfigError` when they do not fit), ``"never"`` streams them through
    ``workers`` loader processes (None: :func:`default_workers`).

    >>> data = DeviceArrays(images, labels, torch.device("cpu"), [0.5], [0.2])  # doctest: +SKIP
    >>> for x, y in data.batches(128, shuffle=True, generator=g): ...  # doctest: +SKIP
    """

    def __init__(
        self,
        images: np.ndarray,
        labels: np.ndarray,
        device: torch.device,
        mean: list[float],
        std: list[float],
        channels_last: bool = False,
        *,
        on_device: OnDevice = "auto",
        workers: int | None = None,
    ) -> None:
        self.device = device
        self.channels_last = channels_last and images.ndim == 4
        self.resident = self._place(images, on_device)
        if self.resident:
            self.images = torch.from_numpy(_in_ram(images)).to(device)
            self.labels = torch.from_numpy(np.ascontiguousarray(labels)).to(device)
        else:
            # the source stays as it is (a memmap is read batch by batch, never whole)
            self.host, self.host_labels = images, np.ascontiguousarray(labels)
            self.images, self.labels = _tensor_view(images), torch.from_numpy(self.host_labels)
        self.workers = default_workers() if workers is None else workers
        self._loader: torch.utils.data.DataLoader | None = None
        self._pass = _Batches()
        shape = (1, -1) + (1,) * (images.ndim - 2)
        self.mean = torch.tensor(mean, device=device).view(shape)
        self.std = torch.tensor(std, device=device).view(shape)

    def _place(self, images: np.ndarray, on_device: OnDevice) -> bool:
        """Whether the arrays go onto the device (see the class doc)."""
        if on_device == "never":
            return False
        fits = self._fits(images, self.device)
        if on_device == "always" and not fits:
            raise ConfigError(
                f"train.data_on_device is always, but the {images.nbytes / 2**30:.1f} GiB of "
                f"uint8 images do not fit in {_DEVICE_SHARE:.0%} of the free memory of "
                f"{self.device}",
                hint="set train.data_on_device=auto (or never) to stream them from host "
                "memory or the cache, or use smaller images",
            )
        return fits

    @staticmethod
    def _fits(images: np.ndarray, device: torch.device) -> bool:
        if device.type == "cuda":
            free, _ = torch.cuda.mem_get_info(device)
            return images.nbytes <= _DEVICE_SHARE * free
        if not isinstance(images, np.memmap):
            return True  # already in RAM: a CPU tensor over it costs nothing more
        return images.nbytes <= _DEVICE_SHARE * _available_ram()

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def batches(
        self,
        batch_size: int,
        *,
        shuffle: bool = False,
        generator: torch.Generator | None = None,
        drop_last: bool = False,
        augment: AugmentConfig | None = None,
        shard: tuple[int, int] | None = None,
        weights: np.ndarray | None = None,
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Yield (normalised float images, labels) batches on the device.

        Shuffling and augmentation draw from ``generator`` (a CPU generator), so the same seed
        gives the same batches in both modes. ``shard=(rank, world)``: this rank's share of
        the permutation (every ``world``-th case from ``rank``; the same permutation on every
        rank, cut to a multiple of ``world`` so that all ranks take the same number of steps).
        Streamed, one pass at a time: a new pass ends the one before. ``weights``: (N,) draw
        probabilities (see :mod:`medlens.data.sampling`) instead of a permutation.
        """
        if weights is not None:  # class-balanced: as many draws as images, with replacement
            p = torch.as_tensor(weights, dtype=torch.float64)
            order = torch.multinomial(p, len(self), replacement=True, generator=generator)
        else:
            order = (
                torch.randperm(len(self), generator=generator)
                if shuffle
                else torch.arange(len(self))
            )
        rank, world = shard or (0, 1)
        if world > 1:
            order = order[: len(order) - len(order) % world][rank::world]
        n = len(order)
        if drop_last and n > batch_size:
            order = order[: n - n % batch_size]
        aug_gen = None
        if augment is not None:
            seed = int(torch.randint(0, 2**62, (1,), generator=generator)) + rank
            aug_gen = torch.Generator(device=self.device).manual_seed(seed)
        for x, y in self._gathered(order, batch_size):
            yield self.prepare(x, augment, aug_gen), y

    def uint8_batches(self, batch_size: int) -> Iterator[torch.Tensor]:
        """The stored uint8 images in order, ``batch_size`` at a time, on the device."""
        for x, _ in self._gathered(torch.arange(len(self)), batch_size):
            yield x

    def _gathered(
        self, order: torch.Tensor, batch_size: int
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """uint8 images and labels at ``order``, ``batch_size`` at a time, on the device."""
        chunks = torch.split(order, batch_size)
        if self.resident:
            for idx in chunks:
                idx = idx.to(self.device)
                yield self.images[idx], self.labels[idx]
            return
        self._pass.batches = [idx.numpy() for idx in chunks]
        for x, y in self._stream():
            yield x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)

    def _stream(self) -> torch.utils.data.DataLoader:
        """The loader over this pass's index arrays (made once: its workers persist)."""
        if self._loader is None:
            self._loader = torch.utils.data.DataLoader(
                _Gather(self.host, self.host_labels),
                batch_size=None,  # each item is already a batch
                sampler=self._pass,
                num_workers=self.workers,
                pin_memory=self.device.type == "cuda",
                persistent_workers=self.workers > 0,
                prefetch_factor=_PREFETCH if self.workers > 0 else None,
            )
        return self._loader

    def prepare(
        self,
        x: torch.Tensor,
        augment: AugmentConfig | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """uint8 batch -> float in [0, 1] -> augmented -> normalised."""
        x = x.float().div_(255.0)
        if augment is not None and generator is not None:
            x = augment_batch(x, augment, generator)
        x = (x - self.mean) / self.std
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x


def device_arrays(
    plan: Plan, images: np.ndarray, labels: np.ndarray, device: torch.device
) -> DeviceArrays:
    """Images and labels on ``device`` (or streamed to it), normalised and laid out as the plan
    says."""
    return DeviceArrays(
        images,
        labels,
        device,
        plan.data.mean,
        plan.data.std,
        plan.train.channels_last,
        on_device=plan.train.data_on_device,
        workers=plan.train.workers,
    )


def unlabelled_arrays(plan: Plan, images: np.ndarray, device: torch.device) -> DeviceArrays:
    """New cases as the model's device arrays; their labels are placeholders (zeros)."""
    multi = plan.data.task == "multi-label"
    shape = (len(images),) + ((plan.data.n_classes,) if multi else ())
    return device_arrays(plan, images, np.zeros(shape, dtype=np.int64), device)
