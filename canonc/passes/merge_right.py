"""R1: merge a BatchNorm into the Conv / ConvTranspose / Linear layers that consume it.

``L(s·x + t) = L'(x)`` with ``W'[:, c] = W[:, c]·s[c]`` and ``t`` pushed into the bias
(see :func:`canonc.fold.fold_in`). The BN output may reach its consumers through ops
that commute with a per-channel affine map: average pooling (no counted padding),
adaptive average pooling, flatten (a Linear then sees each channel repeated), and max
pooling when every ``s >= 0``. Every consumer must accept; each gets its own weights.
A zero-padded conv or a transposed conv also gets a :class:`~canonc.nn.BiasMap`, unless
the user disabled bias maps (``options["bias_map"] = False``): then the BN is refused.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import fx, nn

from .. import nn as cnn
from ..fold import bn_affine, fold_in, needs_bias_map
from ..graph import (
    BN_TYPES,
    CONVT_TYPES,
    data_users,
    free_name,
    get_module,
    linear_base,
    replace_module,
    set_module,
    shape_of,
)
from .base import PassContext
from .merge_left import bn_refusal

RULE = "merge-right"
_AVG = (nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d)
_ADAPTIVE_AVG = (nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d)
_MAX = (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d)


@dataclass
class Fold:
    """One consumer's rewrite: its node, new layer and border map (or None)."""

    node: fx.Node
    layer: nn.Module
    bias_map: cnn.BiasMap | None


def _padding_counts(pool: nn.Module) -> bool:
    pad = pool.padding if isinstance(pool.padding, tuple) else (pool.padding,)
    return pool.count_include_pad and any(p > 0 for p in pad)


def _is_flatten(node: fx.Node, module: nn.Module | None) -> bool:
    """True when ``node`` flattens all axes after the batch axis into one."""
    src, out = shape_of(node.args[0]) if node.args and isinstance(node.args[0], fx.Node) else None, shape_of(node)
    if src is None or out is None or len(src) < 2:
        return False
    is_view = isinstance(module, nn.Flatten) or (node.op in ("call_function", "call_method") and getattr(
        node.target, "__name__", node.target) in ("flatten", "view", "reshape"))
    return is_view and len(out) == 2 and out[0] == src[0] and out[1] == int(torch.tensor(src[1:]).prod())


def commute_step(gm: fx.GraphModule, node: fx.Node, s: torch.Tensor) -> tuple[int, str]:
    """How a per-channel affine map on ``node``'s input moves past ``node``.

    Returns ``(repeat, reason)``: ``repeat`` is how many times each channel is repeated
    in the output's features (1 unless ``node`` flattens), or 0 with the ``reason`` why
    the map does not commute with ``node``.
    """
    module = get_module(gm, node)
    what = type(module).__name__ if module is not None else getattr(node.target, "__name__", str(node.target))
    if isinstance(module, _AVG):
        if getattr(module, "divisor_override", None) is not None:
            return 0, f"{node.target} overrides the divisor"
        if _padding_counts(module):
            return 0, f"{node.target} counts zero padding in its average (count_include_pad=True)"
        return 1, ""
    if isinstance(module, _ADAPTIVE_AVG):
        return 1, ""
    if isinstance(module, _MAX) and not getattr(module, "return_indices", False):
        if (s < 0).any():
            return 0, f"{node.target} is a max pool and some channels have a negative scale"
        return 1, ""
    if _is_flatten(node, module):
        src = shape_of(node.args[0])
        return int(torch.tensor(src[2:]).prod()) if len(src) > 2 else 1, ""
    return 0, f"it feeds '{what}' ({node.name}), which is not a Conv/ConvTranspose/Linear and does not commute with a per-channel affine map"


def _accepts(gm: fx.GraphModule, user: fx.Node, src: fx.Node, channels: int, repeat: int) -> str:
    """Why ``user`` (a linear layer) cannot take the affine map on its input ``src``; ``''`` if it can."""
    layer = get_module(gm, user)
    if user.args[0] is not src or len(user.args) != 1 or user.kwargs:
        return f"{user.target} takes it as an extra argument"
    if isinstance(layer, nn.Linear):
        shape = shape_of(src)
        if shape is None or len(shape) != 2:
            return f"{user.target} (Linear) acts on the last axis, not on the channel axis"
        if layer.in_features != channels * repeat:
            return f"{user.target} has {layer.in_features} input features, expected {channels * repeat}"
        return ""
    if repeat != 1 or layer.in_channels != channels:
        return f"{user.target} has {layer.in_channels} input channels, the BN has {channels}"
    shape = shape_of(src)
    if shape is not None and len(shape) != len(layer.kernel_size) + 2:
        return f"{user.target} gets an unbatched input, so its channel axis is not the BN's"
    if isinstance(layer, CONVT_TYPES) and layer.padding_mode != "zeros":
        return f"{user.target} pads with '{layer.padding_mode}'"
    return ""


def consumers(gm: fx.GraphModule, start: fx.Node, s: torch.Tensor) -> tuple[list[tuple[fx.Node, int]], str]:
    """Every linear layer fed by ``start`` through commuting ops, with its channel repeat.

    Returns ``(consumers, reason)``; ``reason`` is non-empty when some path ends
    elsewhere (the affine map on ``start``'s channels cannot be merged right).
    """
    channels = s.numel()
    found: list[tuple[fx.Node, int]] = []
    stack = [(start, 1)]
    while stack:
        src, repeat = stack.pop()
        users = data_users(src)
        if not users:
            return [], f"{src.name} is a graph output"
        for user in users:
            if user.op == "output":
                return [], f"{src.name} is a graph output"
            layer = get_module(gm, user)
            if layer is not None and linear_base(layer) is not None:
                why = _accepts(gm, user, src, channels, repeat)
                if why:
                    return [], why
                found.append((user, repeat))
                continue
            if layer is not None and isinstance(layer, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d) + CONVT_TYPES):
                return [], f"{user.target} is a {type(layer).__name__} subclass with its own forward"
            step, why = commute_step(gm, user, s)
            if not step:
                return [], why
            stack.append((user, repeat * step))
    return found, ""


def check(gm: fx.GraphModule, start: fx.Node, s: torch.Tensor, t: torch.Tensor,
          bias_map: bool) -> tuple[list[tuple[fx.Node, int]], str]:
    """The consumers of ``start`` (see :func:`consumers`) if ``s·start + t`` can merge into them.

    With bias maps disabled, a consumer that would need one (zero-padded or transposed
    conv, ``t`` not all zero) refuses. Nothing is built or modified.
    """
    found, why = consumers(gm, start, s)
    if why or bias_map or not (t != 0).any():
        return found, why
    for node, _ in found:
        layer = gm.get_submodule(node.target)
        if needs_bias_map(layer):
            kind = "transposed conv" if isinstance(layer, CONVT_TYPES) else f"conv with zero padding {layer.padding}"
            return [], f"{node.target} is a {kind}: the shift needs a bias map, and bias maps are disabled (--no-bias-map)"
    return found, ""


def plan(gm: fx.GraphModule, start: fx.Node, s: torch.Tensor, t: torch.Tensor, bias_map: bool) -> tuple[list[Fold], str]:
    """New layers for every consumer of ``start`` so that ``s·start + t`` can be dropped.

    Returns ``(folds, reason)``; nothing is modified.
    """
    found, why = check(gm, start, s, t, bias_map)
    if why:
        return [], why
    folds = []
    for node, repeat in found:
        s_in, t_in = (s, t) if repeat == 1 else (s.repeat_interleave(repeat), t.repeat_interleave(repeat))
        new, bmap = fold_in(gm.get_submodule(node.target), s_in, t_in)
        folds.append(Fold(node, new, bmap))
    return folds, ""


def _sibling_name(gm: fx.GraphModule, base: str) -> str:
    try:
        gm.get_submodule(base)
    except AttributeError:
        return base
    return free_name(gm, base)


def install(gm: fx.GraphModule, folds: list[Fold]) -> list[str]:
    """Put each fold's layer in place and add its bias map after it; returns the layer names."""
    names = []
    for fold in folds:
        replace_module(gm, fold.node, fold.layer)
        names.append(fold.node.target)
        if fold.bias_map is None:
            continue
        name = _sibling_name(gm, fold.node.target + "_bias_map")
        set_module(gm, name, fold.bias_map)
        with gm.graph.inserting_after(fold.node):
            size = gm.graph.call_function(getattr, (fold.node.args[0], "shape"))
        with gm.graph.inserting_after(size):
            new = gm.graph.call_module(name, (fold.node, size))
        new.meta = dict(fold.node.meta)
        fold.node.replace_all_uses_with(new, delete_user_cb=lambda u, n=new: u is not n)
        names[-1] += f" (+ {name})"
    return names


def run(gm: fx.GraphModule, ctx: PassContext) -> None:
    """Merge every remaining BN into the layers that consume it."""
    strategy = ctx.options.get("strategy", "auto")
    for node in list(gm.graph.nodes):
        bn = get_module(gm, node)
        if bn is None or not isinstance(bn, BN_TYPES) or bn_refusal(bn):
            continue
        if strategy == "left-only":
            ctx.skip(RULE, node.name, "strategy left-only keeps a BN that cannot merge into a preceding layer")
            continue
        s, t = bn_affine(bn)
        folds, why = plan(gm, node, s, t, ctx.options.get("bias_map", True))
        if why:
            ctx.skip(RULE, node.name, why)
            continue
        if not ctx.apply(RULE, node.name):
            continue
        ctx.rewrites[-1].detail = f"{node.target} folded into " + ", ".join(install(gm, folds))
        node.replace_all_uses_with(node.args[0])
        gm.graph.erase_node(node)
