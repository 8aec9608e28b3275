"""Export a trained run for deployment: ONNX (fp32, and static INT8), with parity checks.

onnx and onnxruntime are optional (``pip install "medlens[export]"``) and imported lazily.
"""

from medlens.export.onnx_export import FORMATS, export_run
from medlens.export.runtime import OnnxPredictor

__all__ = ["FORMATS", "OnnxPredictor", "export_run"]
