"""``x + c`` with a constant ``c`` that no layer could absorb (a position embedding) → ``Offset``.

Runs after ``fold-constant-affine``: what is left are constants that vary along several
axes. As a module the offset is visible to XAI tools (a bias-like term), and the graph has
no functional add left.
"""

from __future__ import annotations

import operator

import torch
from torch import fx

from .. import nn as cnn
from ..graph import is_data, shape_of
from .base import PassContext
from .constants import Constants
from .modularize import _call_new_module

RULE = "constant-offset"
_ADDS = {operator.add, torch.add}


def run(gm: fx.GraphModule, ctx: PassContext) -> None:
    """Replace each remaining ``data + constant tensor`` by an ``Offset`` module call."""
    consts = Constants(gm)
    for node in list(gm.graph.nodes):
        if not (node.op == "call_function" and node.target in _ADDS or node.op == "call_method" and node.target == "add"):
            continue
        if len(node.args) != 2 or node.kwargs:
            continue
        for x, c in (node.args, node.args[::-1]):
            value = consts.value(c) if is_data(x) and not is_data(c) else None
            if not (isinstance(value, torch.Tensor) and value.is_floating_point() and shape_of(node) == shape_of(x)):
                continue
            if ctx.apply(RULE, node.name, "add of a constant → Offset"):
                module = cnn.Offset(tuple(value.shape)).to(value.dtype)
                module.offset.data.copy_(value)
                new = _call_new_module(gm, node, "offset", module, (x,))
                ctx.rewrites[-1].detail = f"add of a constant {tuple(value.shape)} → Offset {new.target}"
            break
