"""Implementation invariance, shown: two models of one function, explained before and after canonization.

Rule-based explanations (LRP) depend on how a function is written down: a Conv → BN
and the fused Conv get different heatmaps. Canonizing both models must make their
explanations agree. The explanation is zennit's ``EpsilonPlusFlat`` composite with the
``Gradient`` attributor, in float64 (canonc models need no zennit canonizer).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn
from zennit.attribution import Gradient
from zennit.composites import EpsilonPlusFlat

from .core import canonize
from .errors import InputError

SAME_FUNCTION = 1e-6
"""Largest relative output difference (float64) of two models taken as the same function."""


@dataclass
class InvarianceResult:
    """Maximum relative difference of the two models' explanations (``max|Ra - Rb| / max|Ra|``)."""

    output_difference: float
    before: float
    after: float
    target: int

    def summary(self) -> str:
        """Two lines a person reads."""
        return (f"explanation difference (EpsilonPlusFlat, fp64, target {self.target}): "
                f"before canonization {self.before:.3g}, after {self.after:.3g}\n"
                f"output difference of the two models {self.output_difference:.3g}")


def _no_inplace(model: nn.Module) -> nn.Module:
    for m in model.modules():
        if hasattr(m, "inplace"):
            m.inplace = False
    return model


def explain(model: nn.Module, x: torch.Tensor, target: int) -> torch.Tensor:
    """EpsilonPlusFlat relevance of ``x`` (float64) for output ``target``; ``model`` is not modified."""
    model = _no_inplace(copy.deepcopy(model)).double().eval()
    x = x.detach().double()
    with torch.no_grad():
        n_out = model(x).shape[1]
    with Gradient(model=model, composite=EpsilonPlusFlat()) as attributor:
        _, relevance = attributor(x, torch.eye(n_out, dtype=x.dtype)[[target] * x.shape[0]])
    return relevance.detach()


def _rel_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    scale = a.abs().max().item()
    return (a - b).abs().max().item() / scale if scale > 0 else (a - b).abs().max().item()


def invariance(model_a: nn.Module, model_b: nn.Module, x: torch.Tensor, *, target: int | None = None,
               strategy: str = "auto", options: dict | None = None) -> InvarianceResult:
    """Explain ``model_a`` and ``model_b`` on ``x`` before and after canonizing both.

    Parameters
    ----------
    model_a, model_b : nn.Module
        Two models that compute the same function (checked in float64).
    x : Tensor
        Input batch.
    target : int, optional
        Output index to explain (default: ``model_a``'s top class on the first sample).
    strategy, options
        Passed to :func:`canonc.canonize` for both models.

    Raises
    ------
    InputError
        When the two models do not compute the same function.
    """
    a64, b64 = (copy.deepcopy(m).double().eval() for m in (model_a, model_b))
    x64 = x.detach().double()
    with torch.no_grad():
        ya, yb = a64(x64), b64(x64)
    out_diff = _rel_diff(ya, yb)
    if ya.shape != yb.shape or out_diff > SAME_FUNCTION:
        raise InputError(f"the two models compute different functions (relative output difference {out_diff:.3g}); "
                         "pass two implementations of the same model")
    target = int(ya[0].argmax()) if target is None else target
    before = _rel_diff(explain(a64, x64, target), explain(b64, x64, target))
    ca, cb = (canonize(m, x64, strategy=strategy, options=options).module for m in (a64, b64))
    after = _rel_diff(explain(ca, x64, target), explain(cb, x64, target))
    return InvarianceResult(out_diff, before, after, target)
