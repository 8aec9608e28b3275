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


def serve(run_dir, **options) -> None:
    """Serve a trained run over HTTP until interrupted: ``/`` (a page for clinicians),
    ``POST /predict``, ``/health``, ``/model``, ``/docs``. Options: see
    :func:`medlens.serve.app.serve` (``host``, ``port``, ``api_key``, ``max_upload_mb``,
    ``onnx``, ``access_log``, ``announce``). Needs ``pip install "medlens[serve]"``.

    >>> serve("runs/breastmnist", port=8000)  # doctest: +SKIP
    """
    require_serve()
    from medlens.serve.app import serve as run_service

    run_service(run_dir, **options)
