"""Tensor-combining ops → canonical modules: ``+`` → Sum, ``cat`` → Concat, ``*`` → Gate/Mul,
``mean`` → pooling.

XAI tools attach rules to module instances only; a functional ``a + b`` gets no rule and
zennit copies relevance into both branches (doubling it).
"""

from __future__ import annotations

import torch
from torch import fx, nn

from .. import nn as cnn
from ..graph import ADD_OPS, CAT_OPS, MUL_OPS, is_call, is_data, set_module, shape_of
from .base import PassContext
from .lift_functional import module_name

RULE = "modularize"
STACK_DIM = 0  # summands stacked on a new leading axis: a block copy (see canonc.nn.Sum)


def _call_new_module(gm: fx.GraphModule, node: fx.Node, stem: str, module: nn.Module, args: tuple) -> fx.Node:
    name = module_name(gm, node, stem)
    set_module(gm, name, module)
    with gm.graph.inserting_before(node):
        new = gm.graph.call_module(name, args)
    new.meta = dict(node.meta)
    node.replace_all_uses_with(new)
    gm.graph.erase_node(node)
    return new


def _binary_operands(node: fx.Node) -> tuple[object, object] | None:
    if len(node.args) != 2 or any(k not in ("alpha",) for k in node.kwargs):
        return None
    if node.kwargs.get("alpha", 1) != 1:
        return None
    return node.args[0], node.args[1]


def _gate_order(a: fx.Node, b: fx.Node) -> tuple[fx.Node, fx.Node] | None:
    """``(signal, gate)`` when one operand broadcasts onto the other, else None."""
    sa, sb = shape_of(a), shape_of(b)
    if sa is None or sb is None or sa == sb or len(sa) != len(sb):
        return None
    if all(y == 1 or y == x for x, y in zip(sa, sb)):
        return a, b
    if all(x == 1 or x == y for x, y in zip(sa, sb)):
        return b, a
    return None


def _rewrite_add(gm: fx.GraphModule, node: fx.Node, ctx: PassContext) -> None:
    ops = _binary_operands(node)
    if ops is None or not all(is_data(o) for o in ops):
        return
    if not ctx.apply(RULE, node.name, "add → Sum"):
        return
    a, b = ops
    with gm.graph.inserting_before(node):
        if shape_of(a) != shape_of(b):
            pair = gm.graph.call_function(torch.broadcast_tensors, (a, b))
            stacked = gm.graph.call_function(torch.stack, (pair, STACK_DIM))
        else:
            stacked = gm.graph.call_function(torch.stack, ([a, b], STACK_DIM))
    new = _call_new_module(gm, node, "add", cnn.Sum(STACK_DIM), (stacked,))
    ctx.rewrites[-1].detail = f"add → Sum {new.target}"


def _rewrite_mul(gm: fx.GraphModule, node: fx.Node, ctx: PassContext) -> None:
    ops = _binary_operands(node)
    if ops is None or not all(is_data(o) for o in ops):
        return
    order = _gate_order(*ops)
    kind, module, args = ("Gate", cnn.Gate(), order) if order else ("Mul", cnn.Mul(), ops)
    if ctx.apply(RULE, node.name, f"mul → {kind}"):
        new = _call_new_module(gm, node, "gate" if order else "mul", module, tuple(args))
        ctx.rewrites[-1].detail = f"mul → {kind} {new.target}"


def _rewrite_cat(gm: fx.GraphModule, node: fx.Node, ctx: PassContext) -> None:
    tensors = node.args[0] if node.args else node.kwargs.get("tensors")
    dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim", 0)
    if not isinstance(tensors, (list, tuple)) or not isinstance(dim, int):
        return
    if not all(is_data(t) for t in tensors):
        return
    if ctx.apply(RULE, node.name, "cat → Concat"):
        new = _call_new_module(gm, node, "cat", cnn.Concat(dim), (list(tensors),))
        ctx.rewrites[-1].detail = f"cat → Concat {new.target}"


def _rewrite_mean(gm: fx.GraphModule, node: fx.Node, ctx: PassContext) -> None:
    x = node.args[0] if node.args else None
    dims = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim")
    keepdim = node.args[2] if len(node.args) > 2 else node.kwargs.get("keepdim", False)
    shape = shape_of(x) if isinstance(x, fx.Node) else None
    if shape is None or dims is None or node.kwargs.get("dtype") is not None:
        return
    dims = (dims,) if isinstance(dims, int) else tuple(dims)
    if not all(isinstance(d, int) for d in dims) or not isinstance(keepdim, bool):
        return
    norm = sorted(d % len(shape) for d in dims)
    if len(shape) == 4 and norm == [2, 3] and keepdim:
        module: nn.Module = nn.AdaptiveAvgPool2d(1)
    else:
        module = cnn.Mean(tuple(norm), keepdim)
    if ctx.apply(RULE, node.name, f"mean → {type(module).__name__}"):
        new = _call_new_module(gm, node, "mean", module, (x,))
        ctx.rewrites[-1].detail = f"mean{tuple(norm)} → {type(module).__name__} {new.target}"


def run(gm: fx.GraphModule, ctx: PassContext) -> None:
    """Replace functional add / mul / cat / mean on data tensors by module calls."""
    for node in list(gm.graph.nodes):
        if is_call(node, ADD_OPS, ("add", "add_", "__add__", "__iadd__")):
            _rewrite_add(gm, node, ctx)
        elif is_call(node, MUL_OPS, ("mul", "mul_", "__mul__")):
            _rewrite_mul(gm, node, ctx)
        elif is_call(node, CAT_OPS):
            _rewrite_cat(gm, node, ctx)
        elif is_call(node, {torch.mean}, ("mean",)):
            _rewrite_mean(gm, node, ctx)
