"""How a decoded file becomes a uint8 array: the ``data.preprocess`` section of a plan.

The settings live here, beside the rest of the plan; ``medlens.data.preprocess`` applies them.
"""

from __future__ import annotations

import math
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from medlens.errors import ConfigError

# CT windows as (center, width) in Hounsfield units. These are the values most often quoted in
# radiology teaching material (e.g. Radiopaedia, "Windowing (CT)": lungs W1500 L-600,
# mediastinum W350 L50, abdominal soft tissue W400 L50, liver W150-160 L30-60, bone W1800 L400,
# brain W80 L40, subdural W130-300 L50-100, stroke W40 L40); departments vary them a little.
WINDOW_PRESETS: dict[str, tuple[float, float]] = {
    "lung": (-600.0, 1500.0),
    "mediastinum": (50.0, 350.0),
    "soft_tissue": (40.0, 400.0),
    "abdomen": (50.0, 400.0),
    "liver": (60.0, 160.0),
    "bone": (400.0, 1800.0),
    "brain": (40.0, 80.0),
    "subdural": (75.0, 215.0),
    "stroke": (40.0, 40.0),
}

Window = tuple[float, float]

# Standard square sides for 2D images, largest first: the planner and the default cache size
# pick from them.
STANDARD_SIDES = (224, 192, 160, 128, 112, 96, 80, 64, 48, 32)


def native_side(real: int, default: int) -> int:
    """The largest standard side not above ``real`` (the images' own size) nor ``default``.

    >>> native_side(150, 224), native_side(512, 224), native_side(20, 224)
    (128, 224, 20)
    """
    fits = [s for s in STANDARD_SIDES if s <= min(real, default)]
    return fits[0] if fits else min(real, default)


class PreprocessConfig(BaseModel):
    """How a decoded file becomes a uint8 array of the model's size."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    size: list[int] = Field(description="target size, [H, W] or [D, H, W]")
    resize: Literal["pad", "crop", "stretch"] = Field(
        "pad",
        description="pad: keep aspect, fit inside, pad with the minimum; crop: keep aspect, "
        "fill, centre-crop; stretch: plain resize",
    )
    channels: Literal[1, 3] = Field(1, description="gray -> 3 repeats; colour -> 1 luminance")
    window: str | None = Field(
        None,
        description="a preset (lung, bone, ...), 'C,W' such as '40,400', or 'file' for the "
        "DICOM's own window, with its VOI LUT Function (images without one are normalised "
        "instead)",
    )
    normalize: Literal["percentile", "minmax", "zscore", "none"] = Field(
        "percentile", description="how intensities become 0..1 when no window applies"
    )
    percentiles: tuple[float, float] = Field((0.5, 99.5), description="for normalize=percentile")
    clahe: bool = Field(False, description="contrast-limited adaptive histogram equalisation")
    clahe_clip: float = Field(0.01, gt=0.0, le=1.0, description="CLAHE clip limit")
    denoise: Literal["none", "nlm"] = Field("none", description="non-local-means denoising")
    target_spacing: list[float] | None = Field(
        None, description="3D only: resample to this voxel spacing (mm, [D, H, W]) first"
    )

    @field_validator("size")
    @classmethod
    def _size(cls, v: list[int]) -> list[int]:
        if len(v) not in (2, 3) or min(v) < 1:
            raise ValueError("size needs 2 ([H, W]) or 3 ([D, H, W]) positive values")
        return v

    @field_validator("window")
    @classmethod
    def _window(cls, v: str | None) -> str | None:
        if v is None:
            return None
        v = v.strip()
        if v.lower() in WINDOW_PRESETS or v.lower() == "file":
            return v.lower()
        parse_window(v, None)  # raises ConfigError (a ValueError) naming the presets
        return v

    @field_validator("percentiles")
    @classmethod
    def _percentiles(cls, v: tuple[float, float]) -> tuple[float, float]:
        if not 0.0 <= v[0] < v[1] <= 100.0:
            raise ValueError("percentiles must be (low, high) with 0 <= low < high <= 100")
        return v

    @field_validator("target_spacing")
    @classmethod
    def _spacing(cls, v: list[float] | None) -> list[float] | None:
        if v is not None and (len(v) != 3 or not all(math.isfinite(s) and s > 0 for s in v)):
            raise ValueError("target_spacing needs 3 positive values in mm, [D, H, W]")
        return v

    @model_validator(mode="after")
    def _spacing_is_3d(self) -> PreprocessConfig:
        if self.target_spacing is not None and len(self.size) != 3:
            raise ValueError("target_spacing applies to 3D volumes only; size has 2 values")
        return self


def parse_window(window: str, file_window: Window | None) -> Window | None:
    """A preset name, ``"C,W"`` or ``"file"`` -> (center, width); None for "file" without one.

    >>> parse_window("lung", None), parse_window("40, 400", None)
    ((-600.0, 1500.0), (40.0, 400.0))
    """
    name = window.strip().lower()
    if name == "file":
        return file_window
    if name in WINDOW_PRESETS:
        return WINDOW_PRESETS[name]
    parts = name.split(",")
    if len(parts) == 2:
        try:
            center, width = float(parts[0]), float(parts[1])
        except ValueError:
            pass
        else:
            if math.isfinite(center) and math.isfinite(width) and width > 0:
                return center, width
            raise ConfigError(
                f"window {window!r} needs a finite center and a positive width",
                hint="write it as 'center,width', e.g. '40,400'",
            )
    raise ConfigError(
        f"unknown window {window!r}",
        hint=f"use a preset ({', '.join(WINDOW_PRESETS)}), 'center,width' such as '40,400', "
        "or 'file' for the DICOM's own window",
    )
