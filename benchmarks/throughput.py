"""Training throughput: medlens' device-resident pipeline against the usual PyTorch pipeline and
a bare loop (the ceiling), same model, batch size and optimizer, in one run.

- **usual**: a ``torch.utils.data.Dataset`` over the ``.npz`` arrays that makes a PIL image per
  item, torchvision transforms (random affine rotation/zoom/shift, horizontal flip, ToTensor,
  Normalize) and a ``DataLoader`` with ``--workers`` processes and pinned memory; fp32, NCHW.
- **medlens**: ``DeviceArrays.batches`` (uint8 arrays on the device, batches by index, one
  batched ``grid_sample`` for the same augmentations), channels_last, bf16 autocast on GPUs
  (what ``medlens train`` does).
- **medlens streamed**: the same, but with ``data_on_device="never"``: the uint8 arrays stay in
  host memory and a ``DataLoader`` with ``--workers`` processes gathers each batch of indices
  (pinned on CUDA) before the same on-device augmentation (what a dataset too large for the
  device gets).
- **bare**: random batches indexed from a float tensor already on the device, no augmentation,
  same precision and layout as medlens: the most a data pipeline could give.

Cases: ResNet-18 at 28 px (MedMNIST stem, ``resnet18_medmnist``), ResNet-18 and ResNet-50 at
224 px (BreastMNIST upsampled once from 28 px). Each cell is images/s over ``--steps`` optimizer
steps after ``--warmup`` steps.

Run: python benchmarks/throughput.py [--device cuda] [--steps 50] [--cases r18-28 r18-224]
"""

from __future__ import annotations

import argparse
import time
from datetime import date
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from medlens.config import AugmentConfig
from medlens.data.loader import DeviceArrays
from medlens.device import autocast
from medlens.export.speed import hardware
from medlens.models.registry import create_model

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "medmnist"
AUGMENT = AugmentConfig(hflip=True, rotate_deg=10, scale=(0.9, 1.1), translate=0.05)
CASES = {
    "r18-28": ("resnet18_medmnist", 28, 128),
    "r18-224": ("resnet18", 224, 64),
    "r50-224": ("resnet50", 224, 64),
}


def images_at(size: int) -> tuple[np.ndarray, np.ndarray]:
    data = np.load(DATA / "breastmnist.npz")
    images, labels = data["train_images"], data["train_labels"].ravel()
    if size != images.shape[-1]:
        images = np.stack([np.asarray(Image.fromarray(a).resize((size, size))) for a in images])
    return images, labels


class NpzDataset(torch.utils.data.Dataset):
    """The usual way: one PIL image per item through torchvision transforms."""

    def __init__(self, images: np.ndarray, labels: np.ndarray) -> None:
        from torchvision import transforms as T

        self.images, self.labels = images, labels
        self.transform = T.Compose(
            [
                T.RandomAffine(10, translate=(0.05, 0.05), scale=(0.9, 1.1)),
                T.RandomHorizontalFlip(),
                T.ToTensor(),
                T.Normalize([0.5], [0.5]),
            ]
        )

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        return self.transform(Image.fromarray(self.images[i])), int(self.labels[i])


def _step(model, opt, x, y, device, amp: bool) -> None:
    with autocast(device, amp):
        loss = torch.nn.functional.cross_entropy(model(x), y)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


def _timed(batches, model, opt, device, amp: bool, warmup: int, steps: int) -> float:
    seen, start = 0, None
    for i, (x, y) in enumerate(batches):
        if i == warmup:
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        _step(model, opt, x, y, device, amp)
        if i >= warmup:
            seen += x.shape[0]
        if i + 1 == warmup + steps:
            break
    if device.type == "cuda":
        torch.cuda.synchronize()
    return seen / (time.perf_counter() - start)


def _forever(make):
    while True:
        yield from make()


def run_case(name: str, size: int, batch: int, args, device) -> dict:
    images, labels = images_at(size)
    out = {"case": f"{name} @ {size} px, batch {batch}"}

    def fresh(channels_last: bool):
        torch.manual_seed(0)
        model = create_model(name, in_chans=1, num_classes=2).to(device)
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
        return model, torch.optim.AdamW(model.parameters(), lr=1e-3)

    model, opt = fresh(False)
    loader = torch.utils.data.DataLoader(
        NpzDataset(images, labels),
        batch_size=batch,
        shuffle=True,
        num_workers=args.workers,
        pin_memory=device.type == "cuda",
        drop_last=True,
        persistent_workers=args.workers > 0,
    )
    out["usual"] = _timed(_forever(lambda: iter(loader)), model, opt, device, False, **args.t)

    model, opt = fresh(True)
    data = DeviceArrays(images[:, None], labels, device, [0.5], [0.5], channels_last=True)
    gen = torch.Generator().manual_seed(0)
    medlens = _forever(
        lambda: data.batches(batch, shuffle=True, generator=gen, drop_last=True, augment=AUGMENT)
    )
    out["medlens"] = _timed(medlens, model, opt, device, True, **args.t)

    model, opt = fresh(True)
    data = DeviceArrays(
        images[:, None],
        labels,
        device,
        [0.5],
        [0.5],
        channels_last=True,
        on_device="never",
        workers=args.workers,
    )
    gen = torch.Generator().manual_seed(0)
    streamed = _forever(
        lambda: data.batches(batch, shuffle=True, generator=gen, drop_last=True, augment=AUGMENT)
    )
    out["streamed"] = _timed(streamed, model, opt, device, True, **args.t)

    model, opt = fresh(True)
    x_all = (torch.from_numpy(images[:, None]).float().div(255).to(device) - 0.5) / 0.5
    y_all = torch.from_numpy(labels).long().to(device)

    def bare():
        while True:
            idx = torch.randint(0, len(y_all), (batch,), device=device)
            yield x_all[idx].contiguous(memory_format=torch.channels_last), y_all[idx]

    out["bare"] = _timed(bare(), model, opt, device, True, **args.t)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    args = parser.parse_args()
    args.t = {"warmup": args.warmup, "steps": args.steps}
    device = torch.device(args.device)
    rows = [run_case(*CASES[c], args, device) for c in args.cases]
    hw = hardware()
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else "no GPU"
    print(f"\n## Training throughput, images/s ({date.today()})\n")
    print(
        f"{gpu}; {hw['cpu']}, {hw['cores']} cores; torch {hw['torch']}; usual and streamed: "
        f"{args.workers} DataLoader workers; {args.steps} steps after {args.warmup} warm-up\n"
    )
    print(
        "| case | usual | medlens | medlens streamed | bare (ceiling) | medlens / usual "
        "| streamed / usual | medlens / bare |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['case']} | {r['usual']:.0f} | {r['medlens']:.0f} | {r['streamed']:.0f} | "
            f"{r['bare']:.0f} | {r['medlens'] / r['usual']:.2f}x | "
            f"{r['streamed'] / r['usual']:.2f}x | {r['medlens'] / r['bare']:.0%} |"
        )


if __name__ == "__main__":
    main()
