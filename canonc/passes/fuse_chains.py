"""L2: fuse two adjacent linear layers (nothing nonlinear between) into one layer.

Linear → Linear becomes one Linear; Conv → Conv one conv with the composed kernel where
that is exact at the borders (see :func:`canonc.compose.compose_conv`); a Conv or Linear
reaching a Linear through flatten / view / reshape that only regroup features becomes one
Linear on the flattened input. With ``options["fuse_pooling"]`` an AvgPool feeding a
Linear is folded the same way (adaptive pooling and means are refused: the fused Linear
would accept only the example's input size). A fusion that would have more parameters
than ``options["max_chain_growth"]`` (default 1.0) times the two layers together is
refused, as are chains whose middle value has other users. The fused conv (or a Linear
fused with a Linear) keeps the first layer's name; a fusion into a Linear on flattened
input keeps the Linear's name. ``options["fuse_chains"] = False`` turns the pass off.
"""

from __future__ import annotations

import math

import torch
from torch import fx, nn

from .. import nn as cnn
from ..compose import compose_conv, compose_linear, dense_linear, n_params
from ..graph import CONVT_TYPES, data_users, get_module, linear_base, replace_module, shape_of
from .base import PassContext

RULE = "fuse-chains"
_AVG = (nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d)
_SIZE_FREE = (nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d, cnn.Mean)
_VIEW_NAMES = ("flatten", "view", "reshape")


def _is_regroup(gm: fx.GraphModule, node: fx.Node) -> bool:
    """True for a flatten / view / reshape that keeps the batch axis and the element order."""
    module = get_module(gm, node)
    name = getattr(node.target, "__name__", node.target) if node.op in ("call_function", "call_method") else None
    if not (isinstance(module, nn.Flatten) or name in _VIEW_NAMES):
        return False
    if not node.args or not isinstance(node.args[0], fx.Node):
        return False
    src, out = shape_of(node.args[0]), shape_of(node)
    if src is None or out is None or len(src) < 2 or len(out) < 2 or src[0] != out[0]:
        return False
    if name in ("view", "reshape"):
        # the batch size must come from the data (x.size(0)) or be the -1 of a per-sample regroup
        sizes = node.args[1] if len(node.args) == 2 and isinstance(node.args[1], (tuple, list)) else node.args[1:]
        return bool(sizes) and (isinstance(sizes[0], fx.Node) or sizes[0] == -1 and math.prod(out[1:]) == math.prod(src[1:]))
    if isinstance(module, nn.Flatten):
        return module.start_dim % len(src) >= 1
    start = node.args[1] if len(node.args) > 1 else node.kwargs.get("start_dim", 0)
    return isinstance(start, int) and (start % len(src)) >= 1


def _first_layer(gm: fx.GraphModule, node: fx.Node) -> tuple[fx.Node | None, list[fx.Node]]:
    """The module node feeding ``node`` through regrouping views, and the views (in order)."""
    path: list[fx.Node] = []
    cur = node.args[0] if node.args else None
    while isinstance(cur, fx.Node) and _is_regroup(gm, cur):
        path.append(cur)
        cur = cur.args[0]
    if not isinstance(cur, fx.Node) or cur.op != "call_module":
        return None, []
    return cur, path[::-1]


def _private(first: fx.Node, path: list[fx.Node], second: fx.Node) -> str:
    """Why the chain's intermediate values are used elsewhere, or ``''``."""
    chain = [first, *path]
    for node, nxt in zip(chain, chain[1:] + [second]):
        others = [u.name for u in data_users(node) if u is not nxt]
        if others:
            return f"{node.name} is also used by {', '.join(others)}; fusing would need a copy"
    return ""


def _single_input(node: fx.Node) -> bool:
    return len(node.args) == 1 and not node.kwargs and isinstance(node.args[0], fx.Node)


def _flat_input(first_node: fx.Node, second_node: fx.Node) -> tuple[tuple[int, ...], str]:
    """Per-sample input shape of a chain that ends in a Linear on flattened features, or a reason."""
    src, mid = shape_of(first_node.args[0]), shape_of(second_node.args[0])
    if src is None or mid is None or len(src) < 2:
        return (), "shapes unknown"
    if len(mid) != 2:
        return (), f"{second_node.target} acts on the last axis of a {len(mid)}-D tensor, not on flattened features"
    return tuple(src[1:]), ""


def _budget(new_params: int, old_params: int, growth: float) -> str:
    if new_params <= growth * old_params:
        return ""
    return (f"the fused layer would have {new_params} parameters, {new_params / max(old_params, 1):.2f}× the "
            f"{old_params} of the two layers (--max-chain-growth {growth:g})")


def _plan(gm: fx.GraphModule, first_node: fx.Node, path: list[fx.Node], second_node: fx.Node,
          growth: float) -> tuple[nn.Module | None, bool, str]:
    """The fused module and whether it replaces the first layer on flattened input, or a reason."""
    first, second = get_module(gm, first_node), get_module(gm, second_node)
    old = n_params(first) + n_params(second)
    if isinstance(first, CONVT_TYPES) or isinstance(second, CONVT_TYPES):
        return None, False, "chains with a ConvTranspose are not fused"
    if not path and isinstance(first, nn.Linear) and isinstance(second, nn.Linear):
        new_params = second.out_features * (first.in_features + (first.bias is not None or second.bias is not None))
        why = _budget(new_params, old, growth)
        return (None, False, why) if why else (compose_linear(first, second), False, "")
    if not path and not isinstance(second, nn.Linear):
        new, why = compose_conv(first, second)
        if new is None:
            return None, False, why
        why = _budget(n_params(new), old, growth)
        return (None, False, why) if why else (new, False, "")
    if not isinstance(second, nn.Linear):
        return None, False, f"{second_node.target} is a conv fed through a reshape"
    in_shape, why = _flat_input(first_node, second_node)
    if why:
        return None, False, why
    why = _budget(second.out_features * (math.prod(in_shape) + 1), old, growth)
    if why:
        return None, False, why
    dtype = second.weight.dtype
    new = dense_linear(lambda x: second(first(x).reshape(x.shape[0], -1)), in_shape, dtype)
    return new, True, ""


def _candidate(first: nn.Module, pooling: bool) -> str | None:
    """``''`` when ``first`` may start a chain, a refusal reason, or ``None`` (not a chain at all)."""
    if linear_base(first) is not None:
        return ""
    if not pooling:
        return None
    if isinstance(first, _AVG):
        return ""
    if isinstance(first, _SIZE_FREE):
        return (f"{type(first).__name__} accepts any input size; a Linear fused with it would accept only "
                "the example's size")
    return None


def run(gm: fx.GraphModule, ctx: PassContext) -> None:
    """Fuse every eligible pair of adjacent linear layers."""
    if not ctx.options.get("fuse_chains", True):
        return
    growth = float(ctx.options.get("max_chain_growth", 1.0))
    pooling = bool(ctx.options.get("fuse_pooling", False))
    gone: set[fx.Node] = set()
    for node in list(gm.graph.nodes):
        second = get_module(gm, node)
        if node in gone or second is None or linear_base(second) is None or not _single_input(node):
            continue
        first_node, path = _first_layer(gm, node)
        if first_node is None or first_node in gone or not _single_input(first_node):
            continue
        first = get_module(gm, first_node)
        why = _candidate(first, pooling)
        if why is None:
            continue
        if linear_base(first) is None and not isinstance(second, nn.Linear):
            continue  # pooling folds only into a Linear
        why = why or _private(first_node, path, node)
        new, flat, why = (None, False, why) if why else _plan(gm, first_node, path, node, growth)
        if new is None:
            ctx.skip(RULE, node.name, f"{first_node.target} → {node.target}: {why}")
            continue
        kept = node if flat else first_node
        if not ctx.apply(RULE, node.name, f"{first_node.target} → {node.target} fused into {kept.target}"):
            continue
        if flat:
            with gm.graph.inserting_before(node):
                flat_in = gm.graph.call_function(torch.flatten, (first_node.args[0], 1))
            flat_in.meta = {"val": torch.empty(shape_of(node.args[0]), device="meta", dtype=new.weight.dtype)}
            node.args = (flat_in,)
            replace_module(gm, node, new)
            before = set(gm.graph.nodes)
            gm.graph.eliminate_dead_code()
            gone |= before - set(gm.graph.nodes)
        else:
            replace_module(gm, first_node, new)
            first_node.meta = dict(node.meta)
            node.replace_all_uses_with(first_node)
            gm.graph.erase_node(node)
            gone.add(node)
