"""The optional packages of ``medlens serve`` (``pip install "medlens[serve]"``)."""

from __future__ import annotations

import importlib

from medlens.errors import ConfigError


def require_serve() -> None:
    """Raise ConfigError naming the extra when fastapi, uvicorn or python-multipart is missing."""
    for name in ("fastapi", "uvicorn", "python_multipart"):
        try:
            importlib.import_module(name)
        except ImportError:
            raise ConfigError(
                f"medlens serve needs {name.replace('_', '-')}, which is not installed",
                hint='pip install "medlens[serve]"',
            ) from None
