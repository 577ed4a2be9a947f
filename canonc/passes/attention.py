"""Attention as modules: ``scaled_dot_product_attention`` unrolled, data matmuls → ``MatMul``.

``sdpa(q, k, v)`` becomes ``MatMul(scale)(q, kᵀ)`` (plus an additive mask), ``Softmax(-1)``
and ``MatMul()(attn, v)``, so attention-aware XAI rules (LXT's CP-LRP, AttnLRP) can attach
to the score product, the softmax and the value product. ``a @ b`` / ``torch.matmul`` /
``torch.bmm`` of two data tensors become :class:`~canonc.nn.MatMul`, and a constant scalar
that multiplies an operand or the product (``q * scale``) is absorbed into its ``scale``.
"""

from __future__ import annotations

import math
import operator

import torch
import torch.nn.functional as F
from torch import fx, nn

from .. import nn as cnn
from ..graph import data_users, get_module, is_data, replace_module, shape_of
from .base import PassContext
from .constants import Constants
from .modularize import _call_new_module

RULE = "attention"
_SDPA_ARGS = ("query", "key", "value", "attn_mask", "dropout_p", "is_causal", "scale", "enable_gqa")
_MATMULS = {operator.matmul, torch.matmul, torch.bmm}
_MULS = {operator.mul, torch.mul}


def _sdpa_refusal(args: dict) -> str:
    if args.get("dropout_p", 0.0) not in (0, 0.0):
        return "attention dropout is active"
    if args.get("is_causal", False) is not False:
        return "causal attention (is_causal) is not unrolled"
    if args.get("enable_gqa", False) is not False:
        return "grouped-query attention (enable_gqa) is not unrolled"
    mask = args.get("attn_mask")
    if mask is None:
        return ""
    value = mask.meta.get("val") if isinstance(mask, fx.Node) else mask
    if not (isinstance(value, torch.Tensor) and value.is_floating_point()):
        return "an attention mask that is not a known float tensor (e.g. boolean) is not unrolled"
    return ""


def _unroll_sdpa(gm: fx.GraphModule, node: fx.Node, ctx: PassContext) -> None:
    args = {**dict(zip(_SDPA_ARGS, node.args)), **node.kwargs}
    why = _sdpa_refusal(args)
    if why:
        ctx.skip(RULE, node.name, why)
        return
    q, k, v, mask = args["query"], args["key"], args["value"], args.get("attn_mask")
    scale = args.get("scale") or 1.0 / math.sqrt(shape_of(q)[-1])
    if not ctx.apply(RULE, node.name, "scaled_dot_product_attention → MatMul, Softmax, MatMul"):
        return
    with gm.graph.inserting_before(node):
        kt = gm.graph.call_method("transpose", (k, -2, -1))
        product = gm.graph.call_function(operator.matmul, (q, kt))
        scores = product if mask is None else gm.graph.call_function(operator.add, (product, mask))
        attn = gm.graph.call_function(F.softmax, (scores, -1))
        out = gm.graph.call_function(operator.matmul, (attn, v))
    for new in (kt, product, scores, attn, out):
        new.meta["nn_module_stack"] = node.meta.get("nn_module_stack", {})
    node.replace_all_uses_with(out)
    gm.graph.erase_node(node)
    first = _call_new_module(gm, product, "attn_scores", cnn.MatMul(scale), (q, kt))
    attn = _call_new_module(gm, attn, "attn_softmax", nn.Softmax(-1), (attn.args[0],))
    last = _call_new_module(gm, out, "attn_values", cnn.MatMul(), (attn, v))
    ctx.rewrites[-1].detail = f"scaled_dot_product_attention → {first.target}, {attn.target}, {last.target}"


def _scalar(consts: Constants, node: fx.Node) -> tuple[fx.Node, float] | None:
    """``(x, c)`` when ``node`` is ``x * c`` for a data tensor ``x`` and a constant scalar ``c``."""
    if not (node.op == "call_function" and node.target in _MULS or node.op == "call_method" and node.target == "mul"):
        return None
    if len(node.args) != 2 or node.kwargs:
        return None
    for x, c in (node.args, node.args[::-1]):
        value = consts.value(c) if is_data(x) and not is_data(c) else None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return x, float(value)
        if isinstance(value, torch.Tensor) and value.numel() == 1 and value.is_floating_point():
            return x, float(value)
    return None


def _absorb_scales(gm: fx.GraphModule, node: fx.Node, consts: Constants, ctx: PassContext) -> None:
    """Fold constant scalar factors on the operands or the output of a MatMul module into its scale."""
    module = get_module(gm, node)
    scale = module.scale
    args = list(node.args)
    for i, a in enumerate(args):
        found = _scalar(consts, a) if isinstance(a, fx.Node) and data_users(a) == [node] else None
        if found and ctx.apply(RULE, a.name, f"{a.name} (× {found[1]:g}) absorbed into {node.target}"):
            args[i], scale = found[0], scale * found[1]
    users = data_users(node)
    found = _scalar(consts, users[0]) if len(users) == 1 else None
    if found and found[0] is node and ctx.apply(RULE, users[0].name, f"{users[0].name} absorbed into {node.target}"):
        scale *= found[1]
        users[0].replace_all_uses_with(node)
        gm.graph.erase_node(users[0])
    if scale != module.scale:
        node.args = tuple(args)
        replace_module(gm, node, cnn.MatMul(scale))


def run(gm: fx.GraphModule, ctx: PassContext) -> None:
    """Unroll attention and make every product of two data tensors a ``MatMul`` module."""
    for node in list(gm.graph.nodes):
        if node.op == "call_function" and node.target is F.scaled_dot_product_attention:
            _unroll_sdpa(gm, node, ctx)
    for node in list(gm.graph.nodes):
        is_matmul = node.op == "call_function" and node.target in _MATMULS or \
            node.op == "call_method" and node.target in ("matmul", "bmm")
        if is_matmul and len(node.args) == 2 and not node.kwargs and all(is_data(a) for a in node.args):
            if ctx.apply(RULE, node.name, "matmul → MatMul"):
                new = _call_new_module(gm, node, "matmul", cnn.MatMul(), tuple(node.args))
                ctx.rewrites[-1].detail = f"matmul → MatMul {new.target}"
    consts = Constants(gm)
    for node in list(gm.graph.nodes):
        if isinstance(get_module(gm, node), cnn.MatMul):
            _absorb_scales(gm, node, consts, ctx)
