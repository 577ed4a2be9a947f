"""Rules for canonc's own modules, and a check that every module of a model gets one.

A canonized model needs no zennit canonizer: BN is merged, residual adds are
:class:`canonc.nn.Sum`, gates are :class:`canonc.nn.Gate`, reductions are pooling
modules. This file says which zennit rule each of those modules gets (``CANON_LAYER_MAP``)
and lists the modules a composite would silently leave to the plain gradient
(:func:`uncovered`).
"""

from __future__ import annotations

import torch
from torch import nn
from zennit.core import Composite, Hook, stabilize
from zennit.rules import Norm, Pass
from zennit.types import Activation, AvgPool, BatchNorm, Linear, MaxPool

from .. import nn as cnn
from .bridge import bridged


class SignalOnly(Hook):
    """Rule for :class:`canonc.nn.Gate`: all relevance to the signal, none to the gate.

    The gate (e.g. a squeeze-excitation scale) is treated as a constant per sample:
    the signal receives the relevance of the gated output unchanged.
    """

    def backward(self, module: nn.Module, grad_input: tuple, grad_output: tuple) -> tuple:
        """Pass the output relevance to the first input (the signal), zero to the others."""
        rest = tuple(None if g is None else torch.zeros_like(g) for g in grad_input[1:])
        return (grad_output[0].sum_to_size(grad_input[0].shape),) + rest


class SplitEven(Hook):
    """Rule for :class:`canonc.nn.Mul` (a product of two data tensors): each factor gets half.

    This is LXT's uniform rule for gated products; it conserves relevance.
    """

    def backward(self, module: nn.Module, grad_input: tuple, grad_output: tuple) -> tuple:
        """Give each input ``R / n``, summed over broadcast axes."""
        n = len(grad_input)
        return tuple(None if g is None else (grad_output[0] / n).sum_to_size(g.shape) for g in grad_input)


class AbsorbBias(Hook):
    """Rule for :class:`canonc.nn.BiasMap` (``y + M``, a constant border map added to a layer's output).

    The map absorbs its share ``M / (y + M)`` of the relevance and ``y`` gets the rest,
    i.e. LRP-ε on the addition of a constant. Followed by LRP-0/ε on the layer this is
    exactly LRP-0/ε of the layer with its full per-position bias ``b + M``.
    Only ``y`` (the first input) is hooked; the second input is a size, not a tensor.
    """

    def __init__(self, stabilizer: float = 1e-6) -> None:
        super().__init__()
        self.stabilizer = stabilizer

    def pre_forward(self, module: nn.Module, input: tuple) -> tuple:
        """Hook the layer output ``y`` only and leave the size argument alone."""
        return (super().pre_forward(module, input[:1]), *input[1:])

    def forward(self, module: nn.Module, input: tuple, output: torch.Tensor) -> None:
        """Store ``y`` and ``y + M`` for the backward pass."""
        self.stored_tensors["y"] = input[0]
        self.stored_tensors["out"] = output

    def backward(self, module: nn.Module, grad_input: tuple, grad_output: tuple) -> tuple:
        """``R_y = y · R / (y + M)``."""
        y, out = self.stored_tensors["y"], self.stored_tensors["out"]
        return (y * grad_output[0] / stabilize(out, self.stabilizer),)

    def copy(self) -> AbsorbBias:
        """A fresh instance with the same stabilizer (one per module)."""
        return AbsorbBias(self.stabilizer)


def canon_layer_map(stabilizer: float = 1e-6) -> list[tuple[tuple[type, ...], Hook]]:
    """Rules for every non-linear-layer module of a canonized model.

    Activations (``ThreshReLU`` included: it subclasses ``nn.ReLU``) pass relevance
    through; ``Sum``, average pooling and ``Mean`` split it in proportion to each input's
    contribution (zennit's ``Norm``); ``Gate`` sends it to the signal; ``Mul`` halves it.
    ``BiasMap`` absorbs its share of relevance like a bias (:class:`AbsorbBias`).
    ``Concat`` and max pooling get no rule: their gradient already is the LRP rule. A
    leftover BatchNorm (an uncanonized model explained with ``strict=False``) is passed
    through, as zennit's LRP composites do. Single-input rules go through :func:`bridged`.
    """
    return [
        ((cnn.Gate,), SignalOnly()),
        ((cnn.Mul,), SplitEven()),
        ((cnn.BiasMap,), AbsorbBias(stabilizer)),
        ((Activation,), bridged(Pass())),
        ((cnn.Sum,), bridged(Norm(stabilizer=stabilizer))),
        ((AvgPool, cnn.Mean), bridged(Norm(stabilizer=stabilizer))),
        ((BatchNorm,), bridged(Pass())),
    ]


RULE_ROLES: tuple[type, ...] = (Linear, cnn.Sum, AvgPool, cnn.Mean, Activation, cnn.Gate, cnn.Mul, cnn.BiasMap)
"""Module types whose relevance is wrong under the plain gradient: each needs a rule."""

GRADIENT_ROLES: tuple[type, ...] = (cnn.Concat, MaxPool, nn.Flatten, nn.Unflatten, nn.Dropout, nn.Identity)
"""Module types whose gradient is the correct LRP rule (routing, selection, reshaping)."""


def uncovered(model: nn.Module, composite: Composite) -> list[str]:
    """Modules that ``composite`` would leave to a wrong rule, each as ``"name (Type): why"``.

    Flags every BatchNorm (zennit's built-in composites silently treat it as the
    identity), every module with a rule-relevant role (linear layers, sums, pooling,
    activations, gates) that the composite maps to no rule, and every leaf module of
    a type canonc does not know.
    """
    problems = []
    ctx: dict = {}
    for name, module in model.named_modules():
        rule = composite.module_map(ctx, name, module)
        kind = type(module).__name__
        if isinstance(module, BatchNorm):
            problems.append(f"{name} ({kind}): BatchNorm left in the model; canonize it first")
        elif isinstance(module, RULE_ROLES):
            if rule is None:
                problems.append(f"{name} ({kind}): no rule; it would get the plain gradient")
        elif rule is None and not isinstance(module, GRADIENT_ROLES) and not list(module.children()):
            problems.append(f"{name} ({kind}): unknown module type; no rule is known for it")
    return problems
