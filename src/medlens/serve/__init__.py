"""``medlens serve``: a trained run behind a FastAPI service with a page for clinicians.

fastapi, uvicorn and python-multipart come with the ``serve`` extra; they are imported only
when a service is built, so training never needs them.
"""

from __future__ import annotations

from medlens.serve.packages import require_serve

__all__ = ["require_serve", "serve"]


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
