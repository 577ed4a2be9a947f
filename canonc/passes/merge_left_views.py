"""L1 through views: a BatchNorm1d over ``(N, C)`` rows of a Linear's output merges into the Linear.

LeViT writes ``bn(linear(x).flatten(0, 1)).reshape_as(x)``: the BN's channel axis is the
Linear's feature axis, carried through views that keep the last axis (flatten of leading
axes, reshape, permutes that leave it last). ``W' = s·W``, ``b' = s·b + t`` as in
:mod:`canonc.passes.merge_left`; a path with other users is cloned for the BN.
"""

from __future__ import annotations

from torch import fx, nn

from ..fold import bn_affine, fold_out
from ..graph import get_module, linear_base, replace_module, shape_of
from .base import PassContext
from .layernorm_fold import _keeps_last_axis
from .merge_left import _private_path, bn_refusal

RULE = "merge-left-views"


def _producer(gm: fx.GraphModule, bn_node: fx.Node) -> tuple[fx.Node | None, list[fx.Node]]:
    """The Linear whose features reach the BN's channel axis through last-axis views, and the path."""
    path: list[fx.Node] = []
    cur = bn_node.args[0]
    while isinstance(cur, fx.Node):
        module = get_module(gm, cur)
        if module is not None:
            return (cur, path[::-1]) if linear_base(module) is nn.Linear else (None, [])
        if not cur.args or not isinstance(cur.args[0], fx.Node) or not _keeps_last_axis(gm, cur, cur.args[0]):
            return None, []
        path.append(cur)
        cur = cur.args[0]
    return None, []


def run(gm: fx.GraphModule, ctx: PassContext) -> None:
    """Merge each BatchNorm1d on 2-D rows of a Linear's output into that Linear."""
    for node in list(gm.graph.nodes):
        bn = get_module(gm, node)
        if type(bn) is not nn.BatchNorm1d or bn_refusal(bn) or len(shape_of(node) or ()) != 2:
            continue
        producer, path = _producer(gm, node)
        if producer is None or not path or get_module(gm, producer).out_features != bn.num_features:
            continue
        if not ctx.apply(RULE, node.name):
            continue
        producer = _private_path(gm, node, producer, path)
        s, t = bn_affine(bn)
        replace_module(gm, producer, fold_out(get_module(gm, producer), s, t))
        ctx.rewrites[-1].detail = f"{node.target} folded into {producer.target} through " + ", ".join(p.name for p in path)
        node.replace_all_uses_with(node.args[0])
        gm.graph.erase_node(node)
