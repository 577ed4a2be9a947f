"""``nn.MultiheadAttention`` unpacked into explicit q/k/v projections and attention modules.

Only when asked (``options["unpack_mha"]``, ``--unpack-mha``): the attention becomes
``q_proj``/``k_proj``/``v_proj`` ``Linear`` layers, heads split by ``unflatten``,
``MatMul(1/sqrt(d))(q, kᵀ)``, ``Softmax(-1)``, ``MatMul()(attn, v)`` and the ``out_proj``
``Linear``, so the LayerNorm before it folds into the projections and attention-aware
XAI rules reach the softmax. Masks, extra key/value biases, zero attention and returned
attention weights that are used are refused with the reason.
"""

from __future__ import annotations

import math
import operator

import torch
from torch import fx, nn

from .. import nn as cnn
from ..graph import data_users, free_name, get_module, set_module
from .base import PassContext

RULE = "unpack-mha"
_ARGS = ("query", "key", "value", "key_padding_mask", "need_weights", "attn_mask", "average_attn_weights", "is_causal")


def _refusal(mha: nn.MultiheadAttention, args: dict, node: fx.Node) -> str:
    if args.get("key_padding_mask") is not None or args.get("attn_mask") is not None or args.get("is_causal"):
        return "it is called with an attention mask"
    if mha.bias_k is not None or mha.add_zero_attn:
        return "it has extra key/value biases or zero attention"
    if any(u.op != "call_function" or u.target is not operator.getitem for u in node.users):
        return "its output tuple is used as a whole"
    if any(u.args[1] == 1 and data_users(u) for u in node.users):
        return "its attention weights are used"
    return ""


def _linear(weight: torch.Tensor, bias: torch.Tensor | None) -> nn.Linear:
    layer = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None).to(weight.dtype)
    layer.weight = nn.Parameter(weight.detach().clone())
    if bias is not None:
        layer.bias = nn.Parameter(bias.detach().clone())
    return layer


def _projections(mha: nn.MultiheadAttention) -> list[nn.Linear]:
    e = mha.embed_dim
    if mha._qkv_same_embed_dim:
        weights = mha.in_proj_weight.split(e)
    else:
        weights = (mha.q_proj_weight, mha.k_proj_weight, mha.v_proj_weight)
    biases = mha.in_proj_bias.split(e) if mha.in_proj_bias is not None else (None,) * 3
    out = mha.out_proj
    return [*(_linear(w, b) for w, b in zip(weights, biases)), _linear(out.weight, out.bias)]


def _unpack(gm: fx.GraphModule, node: fx.Node, mha: nn.MultiheadAttention, args: dict) -> list[str]:
    heads, d = mha.num_heads, mha.head_dim
    names = []
    for stem, module in zip(("q_proj", "k_proj", "v_proj", "out_proj", "attn_scores", "attn_softmax", "attn_values"),
                            (*_projections(mha), cnn.MatMul(1.0 / math.sqrt(d)), nn.Softmax(-1), cnn.MatMul())):
        name = f"{node.target}_{stem}"
        name = free_name(gm, name) if hasattr(gm.get_submodule(name.rpartition(".")[0]), name.rpartition(".")[2]) else name
        set_module(gm, name, module)
        names.append(name)
    q_name, k_name, v_name, out_name, scores_name, softmax_name, values_name = names
    g = gm.graph
    with g.inserting_before(node):
        inputs = [args["query"], args["key"], args["value"]]
        if not mha.batch_first:
            inputs = [g.call_method("transpose", (x, 0, 1)) for x in inputs]
        q, k, v = (g.call_method("transpose", (g.call_method("unflatten", (g.call_module(n, (x,)), -1, (heads, d))), 1, 2))
                   for n, x in zip((q_name, k_name, v_name), inputs))
        scores = g.call_module(scores_name, (q, g.call_method("transpose", (k, -2, -1))))
        attn = g.call_module(softmax_name, (scores,))
        values = g.call_module(values_name, (attn, v))
        out = g.call_module(out_name, (g.call_method("flatten", (g.call_method("transpose", (values, 1, 2)), -2)),))
        if not mha.batch_first:
            out = g.call_method("transpose", (out, 0, 1))
    for user in list(node.users):
        if user.args[1] == 0:
            user.replace_all_uses_with(out)
        g.erase_node(user)
    g.erase_node(node)
    return names


def run(gm: fx.GraphModule, ctx: PassContext) -> None:
    """Unpack every ``nn.MultiheadAttention`` call when ``options["unpack_mha"]`` is set."""
    if not ctx.options.get("unpack_mha"):
        return
    for node in list(gm.graph.nodes):
        mha = get_module(gm, node)
        if type(mha) is not nn.MultiheadAttention:
            continue
        args = {**dict(zip(_ARGS, node.args)), **node.kwargs}
        why = _refusal(mha, args, node)
        if why:
            ctx.skip(RULE, node.name, why)
            continue
        if ctx.apply(RULE, node.name):
            ctx.rewrites[-1].detail = f"{node.target} → " + ", ".join(_unpack(gm, node, mha, args))
