"""canonc: canonical form of PyTorch models for explainable AI, with proof of equivalence."""

from .core import CanonResult, canonize
from .errors import CanoncError, InputError, RefusedError, VerificationError
from .load import load_model

__all__ = ["CanonResult", "CanoncError", "InputError", "RefusedError", "VerificationError", "canonize", "load_model"]
__version__ = "0.1.0"
