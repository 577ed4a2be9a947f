"""L1: merge a BatchNorm into the Conv / ConvTranspose / Linear that produces its input.

``W'[o] = s[o]·W[o]``, ``b' = s·b + t``. The BN input may pass through transposes or
permutes that bring the producer's channel axis to axis 1 (Linear → BatchNorm1d on 3-D
data). A producer (or path node) with other data users is cloned for the BN path. The
BN node disappears; no identity BN is left behind.
"""

from __future__ import annotations

from torch import fx, nn

from ..fold import bn_affine, fold_out, out_channels
from ..graph import (
    BN_TYPES,
    CONVT_TYPES,
    clone_chain,
    data_users,
    get_module,
    linear_base,
    replace_module,
    shape_of,
)
from .base import PassContext

RULE = "merge-left"


def bn_refusal(bn: nn.Module) -> str:
    """Why a BN is not a fixed per-channel affine map, or ``''`` when it is."""
    if bn.running_mean is None or bn.running_var is None:
        return "BN has no running statistics (track_running_stats=False): it normalizes with batch statistics, so it is not affine"
    return ""


def _axis_through(node: fx.Node, axis: int) -> int | None:
    """Axis of ``node``'s input that becomes ``axis`` of its output (transpose/permute)."""
    shape = shape_of(node)
    if shape is None:
        return None
    nd = len(shape)
    if node.target in ("transpose",) or getattr(node.target, "__name__", "") == "transpose":
        d0, d1 = (int(d) % nd for d in node.args[1:3])
        return d1 if axis == d0 else d0 if axis == d1 else axis
    if node.target == "permute" or getattr(node.target, "__name__", "") == "permute":
        dims = node.args[1] if len(node.args) == 2 and isinstance(node.args[1], (tuple, list)) else node.args[1:]
        return int(dims[axis]) % nd
    return None


def find_producer(gm: fx.GraphModule, bn_node: fx.Node) -> tuple[fx.Node | None, list[fx.Node], str]:
    """Walk up from a BN to the linear layer whose output channels it normalizes.

    Returns
    -------
    producer, path, reason
        ``path`` lists the view nodes between producer and BN (producer first);
        ``reason`` says why there is no producer when ``producer`` is None.
    """
    path: list[fx.Node] = []
    cur = bn_node.args[0]
    axis = 1
    while True:
        if not isinstance(cur, fx.Node):
            return None, [], "BN input is not a tensor node"
        module = get_module(gm, cur)
        if module is not None and linear_base(module) is not None:
            shape = shape_of(cur)
            out_axis = (len(shape) - 1 if shape else 1) if isinstance(module, nn.Linear) else 1
            if axis != out_axis:
                return None, [], f"BN normalizes axis {axis} of {cur.target}'s output, not its channel axis"
            return cur, path[::-1], ""
        if module is not None and isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear) + CONVT_TYPES):
            return None, [], f"{cur.target} is a {type(module).__name__} subclass with its own forward"
        new_axis = _axis_through(cur, axis) if cur.op in ("call_method", "call_function") else None
        if new_axis is None:
            what = cur.target if cur.op == "call_module" else getattr(cur.target, "__name__", cur.target)
            return None, [], f"BN input comes from '{what}', not from a Conv/ConvTranspose/Linear"
        path.append(cur)
        axis = new_axis
        cur = cur.args[0]


def _private_path(gm: fx.GraphModule, bn_node: fx.Node, producer: fx.Node, path: list[fx.Node]) -> fx.Node:
    """Make producer→path→BN a chain nobody else uses, cloning it if shared. Returns the producer."""
    chain = [producer, *path]
    nexts = chain[1:] + [bn_node]
    if all(data_users(n) == [nx] for n, nx in zip(chain, nexts)):
        return producer
    return clone_chain(gm, chain, bn_node)[producer]


def run(gm: fx.GraphModule, ctx: PassContext) -> None:
    """Merge every eligible BN into its producer."""
    for node in list(gm.graph.nodes):
        bn = get_module(gm, node)
        if bn is None or not isinstance(bn, BN_TYPES):
            continue
        refusal = bn_refusal(bn)
        if refusal:
            ctx.skip(RULE, node.name, refusal)
            continue
        producer, path, reason = find_producer(gm, node)
        if producer is None:
            ctx.skip(RULE, node.name, reason)
            continue
        layer = gm.get_submodule(producer.target)
        if out_channels(layer) != bn.num_features:
            ctx.skip(RULE, node.name, f"{producer.target} has {out_channels(layer)} channels, BN has {bn.num_features}")
            continue
        if not ctx.apply(RULE, node.name, f"{node.target} folded into {producer.target}"):
            continue
        producer = _private_path(gm, node, producer, path)
        s, t = bn_affine(bn)
        replace_module(gm, producer, fold_out(gm.get_submodule(producer.target), s, t))
        ctx.rewrites[-1].detail = f"{node.target} folded into {producer.target}"
        node.replace_all_uses_with(node.args[0])
        gm.graph.erase_node(node)
