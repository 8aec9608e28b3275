"""``medlens serve``: a trained run behind a FastAPI service with a page for clinicians.

fastapi, uvicorn and python-multipart come with the ``serve`` extra; they are imported only
when a service is built, so training never needs them.
"""

from __future__ import annotations

from medlens.errors import ConfigError


def require_serve() -> None:
    """Raise ConfigError naming the extra when fastapi, uvicorn or python-multipart is missing."""
    import importlib

    for name in ("fastapi", "uvicorn", "python_multipart"):
        try:
            importlib.import_module(name)
        except ImportError:
            raise ConfigError(
                f"medlens serve needs {name.replace('_', '-')}, which is not installed",
                hint='pip install "medlens[serve]"',
            ) from None
