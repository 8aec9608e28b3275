"""medlens: medical image classification from one command."""

from medlens.errors import (
    CheckpointError,
    ConfigError,
    DataError,
    DatasetNotFoundError,
    MedlensError,
    ModelError,
    TrainingError,
)

__version__ = "0.1.0"

__all__ = [
    "CheckpointError",
    "ConfigError",
    "DataError",
    "DatasetNotFoundError",
    "MedlensError",
    "ModelError",
    "TrainingError",
    "__version__",
]
