"""Relevance conservation of LRP-0 on a canonized model: input + biases = output.

Under LRP-0 (LRP-ε with ε → 0) every Conv/Linear passes on ``R · (z − b)/z`` and its
bias absorbs ``R · b/z``; a ``BiasMap`` absorbs ``R · M/(y + M)``; sums, pooling,
activations, gates and concatenations pass everything on. So for every sample
``Σ R_input + Σ R_bias = R_output`` exactly, and a gap means relevance was lost or
created somewhere (a module without a rule, a functional op, a leftover BatchNorm).
The bias shares are computed here from each layer's own ``b``, ``z`` and ``R``,
independently of the relevance that reaches the input.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn
from zennit.composites import LayerMapComposite
from zennit.core import stabilize
from zennit.rules import Epsilon
from zennit.types import Linear

from .. import nn as cnn
from ..errors import InputError
from .bridge import bridged
from .composites import AbsorbBias, canon_layer_map, uncovered
from .explain import as_targets, model_device_dtype, target_gradient


class _LedgerEpsilon(Epsilon):
    """LRP-ε that also records, per sample, the relevance its bias absorbs."""

    def __init__(self, epsilon: float, ledger: list[torch.Tensor]) -> None:
        super().__init__(epsilon=epsilon)
        self.epsilon = epsilon
        self.ledger = ledger

    def backward(self, module: nn.Module, grad_input: tuple, grad_output: tuple) -> tuple:
        result = super().backward(module, grad_input, grad_output)
        if getattr(module, "bias", None) is not None:
            z = module.forward(self.stored_tensors["input"][0])
            shape = [1] * z.dim()
            shape[-1 if isinstance(module, nn.Linear) else 1] = -1
            share = module.bias.view(shape) * grad_output[0] / stabilize(z, self.epsilon)
            self.ledger.append(share.detach().flatten(1).sum(1))
        return result

    def copy(self) -> _LedgerEpsilon:
        return bridged(_LedgerEpsilon(self.epsilon, self.ledger))


class _LedgerBiasMap(AbsorbBias):
    """:class:`AbsorbBias` that also records the relevance the map absorbs."""

    def __init__(self, stabilizer: float, ledger: list[torch.Tensor]) -> None:
        super().__init__(stabilizer)
        self.ledger = ledger

    def backward(self, module: nn.Module, grad_input: tuple, grad_output: tuple) -> tuple:
        y, out = self.stored_tensors["y"], self.stored_tensors["out"]
        share = (out - y) * grad_output[0] / stabilize(out, self.stabilizer)
        self.ledger.append(share.detach().flatten(1).sum(1))
        return super().backward(module, grad_input, grad_output)

    def copy(self) -> _LedgerBiasMap:
        return _LedgerBiasMap(self.stabilizer, self.ledger)


@dataclass
class Conservation:
    """Per-sample relevance totals under LRP-0.

    Attributes
    ----------
    output : Tensor
        Relevance put on the target logits (1 per sample).
    input : Tensor
        Sum of the input relevance.
    bias : Tensor
        Relevance absorbed by biases and bias maps.
    """

    output: torch.Tensor
    input: torch.Tensor
    bias: torch.Tensor

    @property
    def error(self) -> float:
        """Largest ``|input + bias − output| / max(|input|, |bias|, |output|)`` over the samples.

        The gap is measured against the largest of the three totals: LRP-0 on random nets
        can reach totals of ±1e25 that cancel to the output's 1, and float64 sums of such
        terms are exact only to about 1e-16 of their size.
        """
        gap = (self.input + self.bias - self.output).abs()
        scale = torch.stack([self.input.abs(), self.bias.abs(), self.output.abs()]).amax(0)
        return float((gap / scale).max())


def conservation(model: nn.Module, inputs: torch.Tensor, targets: int | Sequence[int] | torch.Tensor, *,
                 epsilon: float = 1e-12) -> Conservation:
    """Run LRP-ε (``epsilon`` → 0; use float64) on ``model`` and account for every share of relevance.

    Parameters
    ----------
    model : nn.Module
        A canonized model in eval mode.
    inputs : Tensor
        ``(N, C, ...)`` batch.
    targets : int, sequence of int or Tensor
        One class index, or one per sample.
    epsilon : float
        Stabilizer of every rule; tiny, so that it absorbs no relevance of note.

    Returns
    -------
    Conservation
        Output, input and bias totals per sample; ``.error`` is the relative gap.
    """
    ledger: list[torch.Tensor] = []
    rules = [((cnn.BiasMap,), _LedgerBiasMap(epsilon, ledger))] + canon_layer_map(epsilon)
    composite = LayerMapComposite(layer_map=rules + [((Linear,), bridged(_LedgerEpsilon(epsilon, ledger)))])
    problems = uncovered(model, composite)
    if problems:
        raise InputError(f"relevance is not accounted for at {problems[0]}")
    device, dtype = model_device_dtype(model)
    x = inputs.detach().to(device=device, dtype=dtype)
    t = as_targets(targets, x.shape[0], device)
    with composite.context(model):
        relevance = target_gradient(model, x, t)
    bias = torch.stack(ledger).sum(0) if ledger else torch.zeros(x.shape[0], dtype=dtype, device=device)
    return Conservation(torch.ones_like(bias), relevance.flatten(1).sum(1), bias)
