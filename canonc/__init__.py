"""canonc: canonical form of PyTorch models for explainable AI, with proof of equivalence."""

from . import xai
from .core import CanonResult, canonize
from .errors import CanoncError, InputError, RefusedError, VerificationError
from .load import load_model
from .onnx_export import export_onnx

__all__ = [
    "CanonResult", "CanoncError", "InputError", "RefusedError", "VerificationError", "canonize", "export_onnx",
    "load_model", "xai",
]
__version__ = "0.1.0"
