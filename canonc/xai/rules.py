"""zennit's z+ and α-β rules in closed form.

zennit computes z+ as two modified passes (positive inputs through positive weights, negative
inputs through negative weights) and α-β as four, each followed by its gradient, stabilizes
each part's sum with five elementwise operations and adds up the products of every pass:

    z = W+ x+ + W− x− + b+,  R = α · Σ x± ⊙ ∇(z± · g / stab(z))  −  β · (the same with W and b swapped)

Written out, each part's denominator is stabilized by one ``where`` (``z + ε`` where
``z ≥ 0``, ``z − ε`` where ``z < 0``, which is zennit's ``stabilize``), and on a non-negative
input (after a ReLU) the passes of the negative inputs are left out: they are zero. The
arithmetic that remains is zennit's, operation for operation (same modified parameters,
convolutions, gradients and sums, in the same order), so the relevance is equal;
``tests/test_xai_bridge.py`` checks it against zennit's own backward.
"""

from __future__ import annotations

import torch
from torch import nn
from zennit.core import ParamMod
from zennit.rules import AlphaBeta, ZPlus


def _stabilized(z: torch.Tensor, epsilon: float) -> torch.Tensor:
    """zennit's ``stabilize(z, epsilon)``: ``z + ε`` where ``z ≥ 0`` (zero included), ``z − ε`` where ``z < 0``."""
    return torch.where(z < 0, z - epsilon, z + epsilon)


def closed_form(module: nn.Module, x: torch.Tensor, grad: torch.Tensor,
                parts: list[tuple[float, tuple[ParamMod, ParamMod]]], epsilon: float) -> torch.Tensor:
    """``R = w₁ · R₁ − w₂ · R₂ − …`` over ``parts`` of ``(weight, (modifier for x+, modifier for x−))``.

    ``R_p = x+ ⊙ ∇(z_p+) · g/stab(z_p) + x− ⊙ ∇(z_p−) · g/stab(z_p)`` with ``z_p = z_p+ + z_p−``
    the module's outputs under the part's modified parameters; a weight of 1 is not
    multiplied (zennit's z+ has no α). On a non-negative ``x`` the ``x−`` terms are zero
    and not computed.
    """
    inputs = [x.clamp(min=0), x.clamp(max=0)] if bool((x < 0).any()) else [x]
    leaves, outputs, grads = [], [], []
    for _, modifiers in parts:
        zs = []
        for value, modifier in zip(inputs, modifiers):
            leaf = value.detach().requires_grad_()
            with ParamMod.ensure(modifier)(module) as modified, torch.autograd.enable_grad():
                zs.append(modified.forward(leaf))
            leaves.append(leaf)
        total = zs[0].detach() if len(zs) == 1 else zs[0].detach() + zs[1].detach()
        scaled = grad / _stabilized(total, epsilon)
        outputs += zs
        grads += [scaled] * len(zs)
    gradients = iter(torch.autograd.grad(outputs, leaves, grad_outputs=grads))
    relevance = None
    for weight, _ in parts:
        part = None
        for value in inputs:
            term = value * next(gradients)
            part = term if part is None else part + term
        part = part if weight == 1.0 else weight * part
        relevance = part if relevance is None else relevance - part
    return relevance


class _ClosedForm:
    """Mixin over zennit's ``ZPlus`` / ``AlphaBeta``: the backward by :func:`closed_form`.

    ``weights`` holds one weight per part (z+: ``(1,)``; α-β: ``(α, β)``); each part takes two
    consecutive parameter modifiers of the rule (for ``x+`` and ``x−``).
    """

    weights: tuple[float, ...]
    stabilizer: float

    def backward(self, module: nn.Module, grad_input: tuple, grad_output: tuple) -> tuple:
        """Relevance of the module's input."""
        pairs = [tuple(self.param_modifiers[2 * i:2 * i + 2]) for i in range(len(self.weights))]
        relevance = closed_form(module, self.stored_tensors["input"][0], grad_output[0],
                                list(zip(self.weights, pairs)), self.stabilizer)
        return tuple(relevance if original.shape == relevance.shape else None for original in grad_input)

    def copy(self) -> _ClosedForm:
        """A fresh instance of the same (possibly bridged) class, weights and stabilizer."""
        copy = super().copy()
        copy.weights, copy.stabilizer = self.weights, self.stabilizer
        return copy


class ClosedZPlus(_ClosedForm, ZPlus):
    """zennit's ``ZPlus`` (float stabilizer) in closed form."""

    def __init__(self, stabilizer: float = 1e-6) -> None:
        super().__init__(stabilizer=stabilizer)
        self.weights, self.stabilizer = (1.0,), float(stabilizer)


class ClosedAlphaBeta(_ClosedForm, AlphaBeta):
    """zennit's ``AlphaBeta`` (float stabilizer) in closed form."""

    def __init__(self, alpha: float = 2.0, beta: float = 1.0, stabilizer: float = 1e-6) -> None:
        super().__init__(alpha=alpha, beta=beta, stabilizer=stabilizer)
        self.weights, self.stabilizer = (float(alpha), float(beta)), float(stabilizer)
