"""The optional packages of ``medlens export`` (``pip install "medlens[export]"``), imported
only when needed so that training never needs them."""

from __future__ import annotations

import importlib
from types import ModuleType

from medlens.errors import ModelError

INSTALL_HINT = 'pip install "medlens[export]" (onnx, onnxruntime, onnxscript)'


def _require(name: str) -> ModuleType:
    """Import an optional package, or raise ModelError saying how to install it."""
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        raise ModelError(f"{name} is not installed ({exc})", hint=INSTALL_HINT) from exc


def require_onnx() -> ModuleType:
    """The ``onnx`` package (ModelError with the install hint when missing)."""
    return _require("onnx")


def require_onnxruntime() -> ModuleType:
    """The ``onnxruntime`` package (ModelError with the install hint when missing)."""
    return _require("onnxruntime")


def onnxruntime_available() -> bool:
    """Whether onnxruntime can be imported (without raising)."""
    try:
        importlib.import_module("onnxruntime")
    except ImportError:
        return False
    return True
