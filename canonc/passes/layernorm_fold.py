"""LN fold: a LayerNorm / RMSNorm / GroupNorm's affine part folded into the linear layers it feeds.

``LN(x) = γ⊙n(x) + β``: the normalisation ``n`` stays as an affine-free norm module and
``γ, β`` move into every consumer, ``W' = W·diag(γ)``, ``b' = b + W·β``
(:func:`canonc.fold.fold_in`). LayerNorm and RMSNorm act on the last axis: their output may
reach ``nn.Linear`` consumers through views that keep the last axis (reshape, permute,
window partition, ``x[:, 0]``, token mean), or a conv after a permute that moves the last
axis to axis 1 (timm ``LayerNorm2d``). GroupNorm acts on axis 1 and folds as a BatchNorm
merged right. A norm feeding anything else (a residual sum, an activation) keeps its
affine part, logged with the reason.
"""

from __future__ import annotations

import operator

import torch
from torch import fx, nn

from .. import nn as cnn
from ..fold import fold_in
from ..graph import data_users, get_module, linear_base, replace_module, shape_of
from .base import PassContext
from .merge_right import install, plan

RULE = "fold-norm-affine"
_LAST_AXIS = (nn.LayerNorm, nn.RMSNorm)
_RESHAPES = {"reshape", "view", "flatten", "contiguous", "clone", "unflatten", torch.reshape, torch.flatten}
_PERMUTES = {"permute", "transpose", torch.permute, torch.transpose}


def _affine(module: nn.Module) -> tuple[torch.Tensor, torch.Tensor] | None:
    """``(γ, β)`` of a norm with an affine part (β zero when absent), else None."""
    weight, bias = getattr(module, "weight", None), getattr(module, "bias", None)
    if weight is None and bias is None:
        return None
    n = (weight if weight is not None else bias).numel()
    s = weight.detach().double() if weight is not None else torch.ones(n, dtype=torch.float64)
    t = bias.detach().double() if bias is not None else torch.zeros(n, dtype=torch.float64)
    return s.reshape(-1), t.reshape(-1)


def _affine_free(module: nn.Module) -> nn.Module:
    """The same normalisation without its affine part."""
    if isinstance(module, nn.LayerNorm):
        return nn.LayerNorm(module.normalized_shape, eps=module.eps, elementwise_affine=False)
    if isinstance(module, nn.RMSNorm):
        return nn.RMSNorm(module.normalized_shape, eps=module.eps, elementwise_affine=False)
    return nn.GroupNorm(module.num_groups, module.num_channels, eps=module.eps, affine=False)


def _name(node: fx.Node) -> object:
    return node.target if node.op == "call_method" else node.target if node.op == "call_function" else None


def _permuted_last(node: fx.Node, nd: int) -> int | None:
    """Output axis that the input's last axis moves to under a permute / transpose."""
    args = node.args[1:]
    if _name(node) in ("transpose", torch.transpose):
        d0, d1 = (int(d) % nd for d in args[:2])
        last = nd - 1
        return d1 if last == d0 else d0 if last == d1 else last
    dims = args[0] if len(args) == 1 and isinstance(args[0], (tuple, list)) else args
    dims = [int(d) % nd for d in dims]
    return dims.index(nd - 1) if nd - 1 in dims else None


def _keeps_last_axis(gm: fx.GraphModule, node: fx.Node, src: fx.Node) -> bool:
    """True when every element of ``node``'s output keeps its index on ``src``'s last axis."""
    sin, sout = shape_of(src), shape_of(node)
    if sin is None or sout is None or not node.args or node.args[0] is not src or sout[-1] != sin[-1]:
        return False
    name = _name(node)
    module = get_module(gm, node)
    if isinstance(module, cnn.Mean):
        return all(d % len(sin) != len(sin) - 1 for d in module.dims)
    if name in _RESHAPES:
        return True
    if name in _PERMUTES:
        return len(sout) == len(sin) and _permuted_last(node, len(sin)) == len(sin) - 1
    if name in ("mean", torch.mean):
        dims = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim")
        dims = (dims,) if isinstance(dims, int) else dims
        return isinstance(dims, (tuple, list)) and all(isinstance(d, int) and d % len(sin) != len(sin) - 1 for d in dims)
    if name in ("roll", torch.roll):
        dims = node.args[2] if len(node.args) > 2 else node.kwargs.get("dims")
        dims = (dims,) if isinstance(dims, int) else dims
        return isinstance(dims, (tuple, list)) and all(d % len(sin) != len(sin) - 1 for d in dims)
    if name is operator.getitem:
        index = node.args[1] if isinstance(node.args[1], tuple) else (node.args[1],)
        return len(index) < len(sin) and all(isinstance(i, (int, slice)) for i in index)
    return False


def _last_axis_consumers(gm: fx.GraphModule, start: fx.Node, features: int) -> tuple[list[fx.Node], list[fx.Node], str]:
    """Linear layers fed by ``start`` over its last axis, and nodes where that axis becomes axis 1.

    Returns ``(linears, channel_first, reason)``; ``reason`` says why some path ends elsewhere.
    """
    linears, channel_first, stack = [], [], [start]
    while stack:
        src = stack.pop()
        users = data_users(src)
        if not users:
            return [], [], f"{src.name} is a graph output"
        for user in users:
            if user.op == "output":
                return [], [], f"{src.name} is a graph output"
            module = get_module(gm, user)
            if isinstance(module, nn.Linear) and linear_base(module) is nn.Linear:
                if user.args != (src,) or user.kwargs or module.in_features != features:
                    return [], [], f"{user.target} does not take it as its only input over {features} features"
                linears.append(user)
            elif _keeps_last_axis(gm, user, src):
                stack.append(user)
            elif _name(user) in _PERMUTES and user.args[0] is src and len(shape_of(src) or ()) >= 3 \
                    and _permuted_last(user, len(shape_of(src))) == 1:
                channel_first.append(user)
            else:
                what = user.target if user.op == "call_module" else getattr(user.target, "__name__", user.target)
                return [], [], f"it feeds '{what}' ({user.name}), not a Linear over its last axis"
    return linears, channel_first, ""


def _fold(gm: fx.GraphModule, node: fx.Node, module: nn.Module, s: torch.Tensor, t: torch.Tensor,
          bias_map: bool) -> tuple[list, list, str]:
    """The rewrites that absorb ``s·n(x) + t`` (Linear folds and merge-right plans), or the reason."""
    if not isinstance(module, _LAST_AXIS):
        folds, why = plan(gm, node, s, t, bias_map)
        return [], folds, why
    if len(module.normalized_shape) != 1:
        return [], [], f"it normalizes over {len(module.normalized_shape)} axes, not the last one only"
    linears, starts, why = _last_axis_consumers(gm, node, s.numel())
    folds = []
    for start in starts:
        found, why_cf = plan(gm, start, s, t, bias_map)
        why = why or why_cf
        folds += found
    return linears, folds, why


def run(gm: fx.GraphModule, ctx: PassContext) -> None:
    """Fold the affine part of every LayerNorm / RMSNorm / GroupNorm into its consumers."""
    for node in list(gm.graph.nodes):
        module = get_module(gm, node)
        if type(module) not in (nn.LayerNorm, nn.RMSNorm, nn.GroupNorm) or _affine(module) is None:
            continue
        s, t = _affine(module)
        linears, folds, why = _fold(gm, node, module, s, t, ctx.options.get("bias_map", True))
        if why:
            ctx.skip(RULE, node.name, why)
            continue
        if not ctx.apply(RULE, node.name):
            continue
        names = []
        for user in linears:
            replace_module(gm, user, fold_in(get_module(gm, user), s, t)[0])
            names.append(user.target)
        names += install(gm, folds)
        replace_module(gm, node, _affine_free(module))
        ctx.rewrites[-1].detail = f"{type(module).__name__} {node.target}: affine folded into " + ", ".join(names)
