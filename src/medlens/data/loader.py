"""Batches drawn by index from uint8 arrays held on the training device.

A MedMNIST split is small as uint8 (PneumoniaMNIST: 3.7 MB), so it is copied to the device once
and every batch is an index into it: no worker processes, no per-image Python, no host-to-device
copy per step. Conversion to float, augmentation and normalisation then run on whole batches.
When the arrays are too large for the device they stay in pinned host memory and each batch is
copied asynchronously.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from medlens.config import AugmentConfig
from medlens.data.augment import augment_batch

# Keep arrays on a GPU only when they take at most this share of its free memory.
_DEVICE_SHARE = 0.4


class DeviceArrays:
    """uint8 images and their labels, resident on ``device`` when they fit.

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
    ) -> None:
        self.device = device
        self.channels_last = channels_last and images.ndim == 4
        images_t = torch.from_numpy(np.ascontiguousarray(images))
        labels_t = torch.from_numpy(np.ascontiguousarray(labels))
        if device.type == "cuda" and not self._fits(images_t.nbytes, device):
            self.images, self.labels = images_t.pin_memory(), labels_t.pin_memory()
        else:
            self.images, self.labels = images_t.to(device), labels_t.to(device)
        shape = (1, -1) + (1,) * (images.ndim - 2)
        self.mean = torch.tensor(mean, device=device).view(shape)
        self.std = torch.tensor(std, device=device).view(shape)

    @staticmethod
    def _fits(nbytes: int, device: torch.device) -> bool:
        free, _ = torch.cuda.mem_get_info(device)
        return nbytes <= _DEVICE_SHARE * free

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def resident(self) -> bool:
        """True when the arrays live on the training device."""
        return self.images.device == self.device

    def batches(
        self,
        batch_size: int,
        *,
        shuffle: bool = False,
        generator: torch.Generator | None = None,
        drop_last: bool = False,
        augment: AugmentConfig | None = None,
        shard: tuple[int, int] | None = None,
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Yield (normalised float images, labels) batches on the device.

        Shuffling and augmentation draw from ``generator`` (a CPU generator), so the same seed
        gives the same batches on any device. ``shard=(rank, world)``: this rank's share of
        the permutation (every ``world``-th case from ``rank``; the same permutation on every
        rank, cut to a multiple of ``world`` so that all ranks take the same number of steps).
        """
        order = (
            torch.randperm(len(self), generator=generator) if shuffle else torch.arange(len(self))
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
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            if self.resident:
                idx = idx.to(self.device)
                x, y = self.images[idx], self.labels[idx]
            else:
                x = self.images[idx].pin_memory().to(self.device, non_blocking=True)
                y = self.labels[idx].to(self.device, non_blocking=True)
            yield self.prepare(x, augment, aug_gen), y

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
