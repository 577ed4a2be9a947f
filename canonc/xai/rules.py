"""zennit's z+, α-β and γ rules in closed form.

zennit computes z+ as two modified passes (positive inputs through positive weights, negative
inputs through negative weights) and α-β as four, each followed by its gradient, stabilizes
each part's sum with five elementwise operations and adds up the products of every pass:

    z = W+ x+ + W− x− + b+,  R = α · Σ x± ⊙ ∇(z± · g / stab(z))  −  β · (the same with W and b swapped)

Written out, each part's denominator is stabilized by one ``where`` (``z + ε`` where
``z ≥ 0``, ``z − ε`` where ``z < 0``, which is zennit's ``stabilize``), and on a non-negative
input (after a ReLU) the passes of the negative inputs are left out: they are zero. The
arithmetic that remains is zennit's, operation for operation (same modified parameters,
convolutions, gradients and sums, in the same order), so the relevance is equal;
``tests/test_xai_bridge.py`` checks it against zennit's own backward. The modified passes and
their gradients run as the layer's own convolution and its transpose (``conv2d_input``, what
autograd's backward runs), without an autograd graph per pass.

zennit's γ takes five passes: the four of α-β with ``W + γW±`` and the module's plain forward
``o = Wx + b`` for the output's sign. Both of its sums follow from ``o`` and the positive
contributions ``q = W+ x+ + W− x− + b+ ≥ 0``:

    z↑ = o + γ q,   z↓ = (1 + γ) o − γ q

(``z↑`` is used where ``o > 0``, a sum of two non-negative terms, ``z↓`` where ``o < 0``, of two
non-positive ones: no cancellation). :class:`ClosedGamma` takes ``o`` from the module's own
forward and computes ``q`` with one convolution per input sign; the gradients are transposed
convolutions with ``W + γW±``. After a ReLU that is one convolution and two transposed ones
instead of three and two; the relevance equals zennit's up to the rounding of ``z↑``/``z↓``.
A linear layer, whose weight rather than its input is what costs, takes ``Wᵀg + γW±ᵀg``
without building ``W + γW±``.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F
from zennit.core import ParamMod
from zennit.rules import AlphaBeta, Gamma, ZPlus

_CONV_INPUT_GRADIENTS = {nn.Conv1d: torch.nn.grad.conv1d_input, nn.Conv2d: torch.nn.grad.conv2d_input,
                         nn.Conv3d: torch.nn.grad.conv3d_input}


def transposable(module: nn.Module) -> bool:
    """Whether :func:`transposed` runs ``module``'s transpose directly: ``nn.Linear`` or a zero-padded ``nn.Conv{1,2,3}d``."""
    if isinstance(module, nn.Linear):
        return True
    return (type(module) in _CONV_INPUT_GRADIENTS and module.padding_mode == "zeros"
            and not isinstance(module.padding, str))


def _mapped(module: nn.Module, weight: torch.Tensor, x: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """``module``'s map with ``weight`` and ``bias`` (``None``: zero) in place of its own (its hooks not run)."""
    if isinstance(module, nn.Linear):
        return F.linear(x, weight, bias)
    if type(module) in _CONV_INPUT_GRADIENTS:
        return module._conv_forward(x, weight, bias)
    params = {"weight": weight, "bias": bias}
    swap = ParamMod(lambda param, name: torch.zeros_like(param) if params[name] is None else params[name],
                    param_keys=list(params), require_params=False)
    with swap(module) as swapped:
        return swapped.forward(x)


def transposed(module: nn.Module, weight: torch.Tensor, grad: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``Wᵀ grad``: the gradient of ``module``'s map with ``weight`` at an input of ``x``'s shape.

    Run directly where :func:`transposable`; otherwise by autograd through one forward.
    """
    if isinstance(module, nn.Linear):
        return grad @ weight
    if transposable(module):
        return _CONV_INPUT_GRADIENTS[type(module)](x.shape, weight, grad, module.stride, module.padding,
                                                   module.dilation, module.groups)
    leaf = x.detach().requires_grad_()
    with torch.enable_grad():
        (gradient,) = torch.autograd.grad(_mapped(module, weight, leaf, None), leaf, grad)
    return gradient


def _params(module: nn.Module, modifier: ParamMod) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``module``'s weight and bias under zennit's parameter modifier (``None``: no bias)."""
    with ParamMod.ensure(modifier)(module) as modified:
        bias = getattr(modified, "bias", None)
        return modified.weight.detach(), None if bias is None else bias.detach()


def _stabilized(z: torch.Tensor, epsilon: float) -> torch.Tensor:
    """zennit's ``stabilize(z, epsilon)``: ``z + ε`` where ``z ≥ 0`` (zero included), ``z − ε`` where ``z < 0``."""
    return torch.where(z < 0, z - epsilon, z + epsilon)


def closed_form(module: nn.Module, x: torch.Tensor, grad: torch.Tensor,
                parts: list[tuple[float, tuple[ParamMod, ParamMod]]], epsilon: float) -> torch.Tensor:
    """``R = w₁ · R₁ − w₂ · R₂ − …`` over ``parts`` of ``(weight, (modifier for x+, modifier for x−))``.

    ``R_p = x+ ⊙ W_p+ᵀ (g/stab(z_p)) + x− ⊙ W_p−ᵀ (g/stab(z_p))`` with ``z_p = W_p+ x+ + W_p− x− + b_p``
    the module's output under the part's modified parameters; a weight of 1 is not multiplied
    (zennit's z+ has no α). On a non-negative ``x`` the ``x−`` terms are zero and not computed.
    """
    inputs = [x.clamp(min=0), x.clamp(max=0)] if bool((x < 0).any()) else [x]
    relevance = None
    for weight, modifiers in parts:
        params = [_params(module, modifier) for modifier in modifiers[:len(inputs)]]
        zs = [_mapped(module, w, value, b) for value, (w, b) in zip(inputs, params)]
        scaled = grad / _stabilized(zs[0] if len(zs) == 1 else zs[0] + zs[1], epsilon)
        part = None
        for value, (w, _) in zip(inputs, params):
            term = value * transposed(module, w, scaled, x)
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


def _linear_gamma(inputs: list[torch.Tensor], weight: torch.Tensor, positive: torch.Tensor,
                  negative: torch.Tensor, up: torch.Tensor, down: torch.Tensor, gamma: float) -> torch.Tensor:
    """γ's input relevance of a linear layer, without building ``W + γW±``.

    ``(W + γW±)ᵀ g = Wᵀ g + γ W±ᵀ g``: products with ``W``, ``W+`` and ``W−`` (the rows of
    ``z↑`` and ``z↓`` stacked where the input is signed). At a small batch a large linear
    layer costs its passes over the weight, and building the two modified weights takes about
    ten of them; the products take one each.
    """
    plain = (up + down) @ weight
    if len(inputs) == 1:
        return inputs[0] * (plain + gamma * (up @ positive + down @ negative))
    n, both = len(up), torch.cat([up, down])
    pos, neg = both @ positive, both @ negative
    return (inputs[0] * (plain + gamma * (pos[:n] + neg[n:]))
            + inputs[1] * (plain + gamma * (neg[:n] + pos[n:])))


class ClosedGamma(Gamma):
    """zennit's ``Gamma`` (float stabilizer) in closed form, from the module's own output.

    Bridged (:func:`canonc.xai.bridge.bridged`), the module's output is stored with its input;
    otherwise it is recomputed.
    """

    def __init__(self, gamma: float = 0.25, stabilizer: float = 1e-6) -> None:
        super().__init__(gamma=gamma, stabilizer=stabilizer)
        self.gamma, self.stabilizer = float(gamma), float(stabilizer)

    def backward(self, module: nn.Module, grad_input: tuple, grad_output: tuple) -> tuple:
        """Relevance of the module's input."""
        x, g, gamma = self.stored_tensors["input"][0], grad_output[0], self.gamma
        weight, bias = module.weight.detach(), None if module.bias is None else module.bias.detach()
        out = self.stored_tensors.get("output")
        out = _mapped(module, weight, x, bias) if out is None else out
        signed = bool((x < 0).any())
        inputs = [x.clamp(min=0), x.clamp(max=0)] if signed else [x]
        positive, negative = weight.clamp(min=0), weight.clamp(max=0)
        q = _mapped(module, positive, inputs[0], None if bias is None else bias.clamp(min=0))
        if signed:
            q = q + _mapped(module, negative, inputs[1], None)
        up = (out > 0.) * g / _stabilized(out + gamma * q, self.stabilizer)
        down = (out < 0.) * g / _stabilized((1 + gamma) * out - gamma * q, self.stabilizer)
        if isinstance(module, nn.Linear):
            relevance = _linear_gamma(inputs, weight, positive, negative, up, down, gamma)
        else:
            more, less = weight + gamma * positive, weight + gamma * negative  # zennit's W + γW+, W + γW−
            # zennit's reducer order: x+ by z↑'s, x− by z↑'s, x+ by z↓'s, x− by z↓'s gradient
            terms = [(0, more, up), (1, less, up), (0, less, down), (1, more, down)]
            relevance = None
            for i, modified, mapped in terms if signed else terms[::2]:
                term = inputs[i] * transposed(module, modified, mapped, x)
                relevance = term if relevance is None else relevance + term
        return tuple(relevance if original.shape == relevance.shape else None for original in grad_input)

    def copy(self) -> ClosedGamma:
        """A fresh instance of the same (possibly bridged) class, γ and stabilizer."""
        copy = super().copy()
        copy.gamma, copy.stabilizer = self.gamma, self.stabilizer
        return copy
