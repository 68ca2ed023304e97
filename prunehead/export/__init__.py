"""Export: a verified ONNX graph of a pruned (or unpruned) model, timed against the unpruned one.

`export_onnx(model, path)` writes the graph (dynamic batch and length) and returns its `Signature`;
`check_onnx` compares it with PyTorch; `export_model(model, out, ExportOptions(...))` is the whole
`prunehead export onnx` pipeline (check, optional optimization / int8, latency, export.json).
"""

from .onnx import ExportCheckError, Signature, check_onnx, compare, export_onnx, onnx_param_count, signature
from .pipeline import ExportOptions, export_model, randomize_weights_, unpruned_reference

__all__ = ["ExportCheckError", "ExportOptions", "Signature", "check_onnx", "compare", "export_model", "export_onnx",
           "onnx_param_count", "randomize_weights_", "signature", "unpruned_reference"]
