"""One exception family for every problem a user can fix.

Each error carries a message that says what was wrong and how to fix it; the CLI prints it
on one line (no traceback) and exits with code 2.

>>> raise DataError("labels out of range in x.npz", hint="labels must lie in 0..1")
Traceback (most recent call last):
...
medlens.errors.DataError: labels out of range in x.npz (fix: labels must lie in 0..1)
"""

from __future__ import annotations


class MedlensError(Exception):
    """Base class: a problem with the user's input, options or files."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        self.message = message
        self.hint = hint
        super().__init__(f"{message} (fix: {hint})" if hint else message)


class ConfigError(MedlensError, ValueError):
    """An impossible option or plan field (negative epochs, unknown loss, bad YAML)."""


class DataError(MedlensError):
    """A data file that is missing, unreadable or not what it claims to be."""


class DatasetNotFoundError(DataError, FileNotFoundError):
    """A dataset file that is neither on disk nor downloadable."""


class ModelError(MedlensError):
    """An unknown model name, or a model that cannot take this data."""


class CheckpointError(MedlensError):
    """A run directory or weights file that is missing, corrupt or does not fit the model."""


class TrainingError(MedlensError):
    """Training that cannot go on (the loss became NaN, a GPU ran out of memory)."""


class ImageTooLargeError(DataError):
    """An image over the pixel limit: a decompression bomb or a very large image."""


class UnsupportedImageError(DataError):
    """Content that is no image kind medlens reads (sniffed from the bytes, not the name)."""


class UploadError(DataError):
    """An upload the service refuses; ``status`` is the HTTP status to answer with."""

    def __init__(self, message: str, hint: str | None = None, status: int = 400) -> None:
        super().__init__(message, hint)
        self.status = status
