"""The method registry: rule-based methods (zennit composites) and gradient baselines.

Each :class:`Method` builds its composite for a model (``None``: the plain gradient)
and turns a gradient function into an attribution (one call for rule-based methods,
an average over noisy or scaled inputs for SmoothGrad and Integrated Gradients).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import torch
from torch import nn
from zennit.composites import LayerMapComposite, NameLayerMapComposite
from zennit.core import Composite
from zennit.rules import Epsilon
from zennit.types import Convolution, Linear

from ..errors import InputError
from .bridge import bridged
from .composites import canon_layer_map
from .groups import DEFAULT_GROUPS, layer_groups
from .rules import ClosedAlphaBeta, ClosedGamma, ClosedZPlus

GradFn = Callable[[torch.Tensor], torch.Tensor]
"""``x -> d(target logit)/dx`` under the method's composite (relevance for rule-based methods)."""


@dataclass(frozen=True)
class Method:
    """An attribution method.

    Attributes
    ----------
    name : str
        Registry key, e.g. ``"lrp-epsilon-plus"``.
    summary : str
        One line on what it does on a canonized model.
    defaults : dict
        Parameters and their default values; ``explain(..., **params)`` overrides them.
    composite : callable
        ``(model, params) -> Composite | None``; ``None`` means the plain gradient.
    attribute : callable
        ``(grad_fn, x, params) -> Tensor`` of ``x``'s shape.
    """

    name: str
    summary: str
    defaults: dict[str, object] = field(default_factory=dict)
    composite: Callable[[nn.Module, dict], Composite | None] = lambda model, params: None
    attribute: Callable[[GradFn, torch.Tensor, dict], torch.Tensor] = lambda grad_fn, x, params: grad_fn(x)

    def resolve(self, params: Mapping[str, object]) -> dict[str, object]:
        """``defaults`` updated by ``params``; unknown names raise :class:`InputError`."""
        unknown = sorted(set(params) - set(self.defaults))
        if unknown:
            known = ", ".join(sorted(self.defaults)) or "none"
            raise InputError(f"method '{self.name}' has no parameter '{unknown[0]}'; its parameters: {known}")
        return {**self.defaults, **params}


def _eb(model: nn.Module, p: dict) -> Composite:
    """zennit's ``ExcitationBackprop``: z+ on every Conv/Linear."""
    rules = [((Linear,), bridged(ClosedZPlus(stabilizer=p["stabilizer"])))]
    return LayerMapComposite(layer_map=canon_layer_map(p["stabilizer"]) + rules)


def _epsilon(model: nn.Module, p: dict) -> Composite:
    rules = [((Linear,), bridged(Epsilon(epsilon=p["epsilon"])))]
    return LayerMapComposite(layer_map=canon_layer_map(p["stabilizer"]) + rules)


def _epsilon_plus(model: nn.Module, p: dict) -> Composite:
    """zennit's ``EpsilonPlus``: z+ on convs, ε on ``nn.Linear``."""
    rules = [((Convolution,), bridged(ClosedZPlus(stabilizer=p["stabilizer"]))),
             ((nn.Linear,), bridged(Epsilon(epsilon=p["epsilon"])))]
    return LayerMapComposite(layer_map=canon_layer_map(p["stabilizer"]) + rules)


def _alpha2beta1(model: nn.Module, p: dict) -> Composite:
    """zennit's ``EpsilonAlpha2Beta1``: α2β1 on convs, ε on ``nn.Linear``."""
    rules = [((Convolution,), bridged(ClosedAlphaBeta(alpha=2.0, beta=1.0, stabilizer=p["stabilizer"]))),
             ((nn.Linear,), bridged(Epsilon(epsilon=p["epsilon"])))]
    return LayerMapComposite(layer_map=canon_layer_map(p["stabilizer"]) + rules)


def group_gammas(groups: Mapping[str, list[str]], gamma: float | Mapping[str, float],
                 default: float = 0.25) -> dict[str, float]:
    """γ per group: one float for all, or ``{group: γ}`` (groups not named get ``default``)."""
    if not isinstance(gamma, Mapping):
        return dict.fromkeys(groups, float(gamma))
    unknown = sorted(set(gamma) - set(groups))
    if unknown:
        raise InputError(f"gamma names group '{unknown[0]}', but the groups are: {', '.join(groups)}")
    return {g: float(gamma.get(g, default)) for g in groups}


def _gamma(model: nn.Module, p: dict) -> Composite:
    groups = layer_groups(model, p["groups"])
    gammas = group_gammas(groups, p["gamma"])
    name_map = [(names, bridged(ClosedGamma(gamma=gammas[g], stabilizer=p["stabilizer"]))) for g, names in groups.items()]
    return NameLayerMapComposite(name_map=name_map, layer_map=canon_layer_map(p["stabilizer"]))


def _smoothgrad(grad_fn: GradFn, x: torch.Tensor, p: dict) -> torch.Tensor:
    """Mean gradient over ``n_iter`` inputs with Gaussian noise of std ``noise_level·(max−min)`` per sample."""
    dims = tuple(range(1, x.dim()))
    std = p["noise_level"] * (x.amax(dims, keepdim=True) - x.amin(dims, keepdim=True))
    gen = torch.Generator(device=x.device).manual_seed(int(p["seed"]))
    total = torch.zeros_like(x)
    for _ in range(int(p["n_iter"])):
        noise = torch.randn(x.shape, generator=gen, device=x.device, dtype=x.dtype) * std
        total += grad_fn(x + noise)
    return total / int(p["n_iter"])


def _integrated_gradients(grad_fn: GradFn, x: torch.Tensor, p: dict) -> torch.Tensor:
    """``(x − 0) · mean_k ∇f(k/n · x)`` for ``k = 1..n`` (right Riemann sum from a zero baseline)."""
    n = int(p["n_iter"])
    total = torch.zeros_like(x)
    for k in range(1, n + 1):
        total += grad_fn(x * (k / n))
    return x * total / n


METHODS: dict[str, Method] = {m.name: m for m in (
    Method("eb", "Excitation Backprop: z+ on every Conv/Linear, Norm at sums and pooling",
           {"stabilizer": 1e-6}, _eb),
    Method("lrp-epsilon", "LRP-ε on every Conv/Linear (epsilon=0: LRP-0)",
           {"epsilon": 1e-6, "stabilizer": 1e-6}, _epsilon),
    Method("lrp-epsilon-plus", "LRP-ε+: z+ on convs, ε on dense layers",
           {"epsilon": 1e-6, "stabilizer": 1e-6}, _epsilon_plus),
    Method("lrp-alpha2beta1", "LRP-α2β1 on convs, ε on dense layers",
           {"epsilon": 1e-6, "stabilizer": 1e-6}, _alpha2beta1),
    Method("lrp-gamma", "LRP-γ with one γ per layer group (γ=0: LRP-0, γ→∞: z+)",
           {"gamma": 0.25, "groups": DEFAULT_GROUPS, "stabilizer": 1e-6}, _gamma),
    Method("gradient", "plain gradient of the target logit"),
    Method("smoothgrad", "gradient averaged over noisy copies of the input",
           {"noise_level": 0.1, "n_iter": 20, "seed": 0}, attribute=_smoothgrad),
    Method("integrated-gradients", "input × gradient averaged along the path from a zero baseline",
           {"n_iter": 20}, attribute=_integrated_gradients),
)}


def get_method(name: str) -> Method:
    """The registered method ``name``; unknown names raise :class:`InputError`."""
    try:
        return METHODS[name]
    except KeyError:
        raise InputError(f"unknown method '{name}'; choose one of {', '.join(METHODS)}") from None
