"""The FastAPI application: a web page, POST /predict, GET /health, GET /model, OpenAPI docs.

>>> app = create_app("runs/breastmnist", api_key="s3cret")  # doctest: +SKIP
>>> uvicorn.run(app, host="127.0.0.1", port=8000)  # doctest: +SKIP

Privacy: uploads live in memory only (see :mod:`medlens.serve.upload`); nothing from an upload
(its bytes, its file name, its DICOM header) is written to disk or to a log, and responses
carry ``Cache-Control: no-store``.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse

from medlens.errors import MedlensError, UploadError
from medlens.serve.model import DEFAULT_MAX_PIXELS, ServedModel
from medlens.serve.packages import require_serve
from medlens.serve.upload import FIELD, file_field, read_body

log = logging.getLogger("medlens.serve")

DEFAULT_MAX_UPLOAD_MB = 64.0
API_KEY_HEADER = "X-API-Key"
_NO_STORE = {"Cache-Control": "no-store"}
_PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data: blob:; "
    "style-src 'self' 'unsafe-inline'; script-src 'self' 'unsafe-inline'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}

_ERROR_SCHEMA = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {"type": "string", "description": "what was wrong"},
        "hint": {"type": "string", "description": "how to fix it"},
    },
}


def _error_response(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ERROR_SCHEMA}}}


_UNAUTHORISED = {401: _error_response(f"the {API_KEY_HEADER} header is missing or wrong")}
#: every answer /predict gives other than 200, as the service really gives them
PREDICT_ERRORS = {
    400: _error_response("a broken image file, an empty file or a malformed multipart body"),
    **_UNAUTHORISED,
    413: _error_response("the body is over --max-upload-mb, or the image has too many pixels"),
    415: _error_response("the body is not multipart/form-data, or the file is not an image "
                         "medlens reads (PNG, JPEG, TIFF, BMP, DICOM, NIfTI)"),
    422: _error_response("the form has no field 'file', a query parameter is not valid, or "
                         "the image has the wrong dimensionality (a volume for a 2D model)"),
    500: _error_response("the service failed on this request"),
}  # fmt: skip
_PREDICTION_SCHEMA = {
    "type": "object",
    "required": ["predicted", "probabilities", "confidence", "in_distribution", "ood"],
    "properties": {
        "predicted": {
            "oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]
        },
        "top_class": {"type": "string"},
        "probabilities": {"type": "object", "additionalProperties": {"type": "number"}},
        "confidence": {"type": "number"},
        "calibrated": {"type": "boolean"},
        "prediction_set": {"type": ["array", "null"], "items": {"type": "string"}},
        "in_distribution": {
            "type": ["boolean", "null"],
            "description": "false: the image looks unlike the training images (or its DICOM "
            "header contradicts the run's modality); null: the run has no OOD guard",
        },
        "ood": {"type": "object"},
        "heatmap": {"type": "object"},
        "input": {"type": "object"},
        "seconds": {"type": "number"},
    },
}  # fmt: skip


def predict_openapi(limit: int) -> dict[str, Any]:
    """The /predict request body: its upload constraints."""
    return {
        "requestBody": {
            "required": True,
            "content": {
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "required": [FIELD],
                        "properties": {
                            FIELD: {
                                "type": "string",
                                "format": "binary",
                                "minLength": 1,
                                "maxLength": limit,
                                "description": "one image file, at most "
                                f"{limit / 2**20:.0f} MiB: PNG, JPEG, TIFF, BMP, DICOM or NIfTI "
                                "(.nii, .nii.gz). Bytes that are not such an image are "
                                "refused with 415, a damaged image with 400",
                            }
                        },
                    },
                    "encoding": {
                        FIELD: {
                            "contentType": "image/png, image/jpeg, image/tiff, image/bmp, "
                            "application/dicom, application/octet-stream"
                        }
                    },
                }
            },
        },
    }


#: /predict's answers (given to the route, so FastAPI adds no 422 of its own)
PREDICT_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "the prediction",
        "content": {"application/json": {"schema": _PREDICTION_SCHEMA}},
    },
    **PREDICT_ERRORS,
}


def _error(status: int, message: str, hint: str | None = None) -> Any:
    body = {"error": message, **({"hint": hint} if hint else {})}
    return JSONResponse(body, status_code=status, headers=_NO_STORE)


def page_html() -> str:
    """The clinician's page (``static/index.html``)."""
    return resources.files("medlens.serve").joinpath("static/index.html").read_text()


def create_app(
    run_dir: str | Path | ServedModel,
    *,
    api_key: str | None = None,
    max_upload_mb: float = DEFAULT_MAX_UPLOAD_MB,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    onnx: bool | None = None,
) -> Any:
    """A FastAPI app serving one run. The run is loaded (and its weights verified) here, so a
    bad run directory fails before the server starts. ``api_key``: when set, /predict and
    /model need it in the ``X-API-Key`` header; / and /health stay open."""
    from medlens import __version__

    served = (
        run_dir
        if isinstance(run_dir, ServedModel)
        else ServedModel(run_dir, onnx=onnx, max_pixels=max_pixels)
    )
    limit = int(max_upload_mb * 2**20)
    app = FastAPI(
        title="medlens",
        version=__version__,
        description=f"Predictions of the medlens run '{served.run.root.name}' "
        f"({served.recipe.model.name} on {served.recipe.data.source}). Research use only: "
        "not a medical device.",
    )
    app.state.served = served

    def authorised(request: Request) -> bool:
        if api_key is None:
            return True
        given = request.headers.get(API_KEY_HEADER, "")
        return secrets.compare_digest(given.encode(), api_key.encode())

    def refused() -> Any:
        return _error(
            401,
            f"a valid API key is needed in the {API_KEY_HEADER} header",
            hint="ask the service's operator for the key",
        )

    @app.exception_handler(MedlensError)
    async def _medlens_error(request: Request, exc: MedlensError) -> Any:
        status = exc.status if isinstance(exc, UploadError) else 400
        return _error(status, exc.message, exc.hint)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> Any:
        where = ", ".join(".".join(str(p) for p in e.get("loc", ())) for e in exc.errors())
        return _error(422, f"invalid request parameter(s): {where}", "see /docs for the API")

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> Any:
        # the type only: a parser's message could quote bytes of the upload
        log.error("request to %s failed: %s", request.url.path, type(exc).__name__)
        return _error(500, f"the service failed on this request ({type(exc).__name__})")

    html = page_html()  # read once, not per request

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page() -> Any:
        return HTMLResponse(html, headers=_PAGE_HEADERS)

    @app.get("/health", summary="Liveness: the model is loaded")
    async def health() -> dict[str, Any]:
        return {
            "status": "ok",
            "run": served.run.root.name,
            "backend": served.backend,
            "api_key_required": api_key is not None,
            "max_upload_mb": max_upload_mb,
        }

    @app.get(
        "/model",
        summary="The model card: model, data, metrics, calibration, OOD guard",
        responses=_UNAUTHORISED,
    )
    async def model(request: Request) -> Any:
        if not authorised(request):
            return refused()
        return served.card()

    @app.post(
        "/predict",
        summary="Classify one uploaded image (multipart field 'file')",
        openapi_extra=predict_openapi(limit),
        responses=PREDICT_RESPONSES,
    )
    async def predict(request: Request, heatmap: bool = True) -> Any:
        if not authorised(request):
            return refused()
        body = await read_body(request.stream(), limit, request.headers.get("content-length"))
        data = file_field(body, request.headers.get("content-type"))
        result = await run_in_threadpool(served.predict, data, heatmap)
        return JSONResponse(result, headers=_NO_STORE)

    return app


def serve(
    run_dir: str | Path,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    api_key: str | None = None,
    max_upload_mb: float = DEFAULT_MAX_UPLOAD_MB,
    onnx: bool | None = None,
    access_log: bool = True,
    announce: Callable[[str], None] = print,
) -> None:
    """Load the run and serve it with uvicorn until interrupted; ``announce`` gets the
    address once the run has loaded (a bad run fails before anything is announced)."""
    require_serve()
    import uvicorn

    app = create_app(run_dir, api_key=api_key, max_upload_mb=max_upload_mb, onnx=onnx)
    announce(f"serving {run_dir} on http://{host}:{port}  (docs: /docs; Ctrl+C stops)")
    # the access log holds method, path, status and client address: never upload content
    uvicorn.run(app, host=host, port=port, access_log=access_log, log_level="info")
