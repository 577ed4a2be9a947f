"""Last resort: a BatchNorm that no layer can absorb becomes an explicit per-channel linear layer.

Runs only after the other passes reached their fixed point (a BN after an activation that
feeds a residual sum: RepVGG / MobileOne identity branches, ConvMixer, DPN's last BN).
``BN(x) = s·x + t`` becomes a depthwise 1×1 ``ConvNd`` (``groups = C``, weight ``s``, bias
``t``): the same function, but XAI tools see a linear layer and apply its rule, where
zennit's composites pass a BatchNorm through as if it were the identity. The log keeps
why the BN could not merge. Opt-in (``options={"bn_as_layer": True}``, ``--bn-as-layer``): by
default such a BN stays, listed with its reason, because as a layer its relevance gets another
rule. Not under ``strategy="left-only"``, nor with bias maps disabled
(``--no-bias-map`` keeps a BN that only a border correction could absorb; a per-channel layer
in front of the padded conv would be that correction in another form).
"""

from __future__ import annotations

import torch
from torch import fx, nn

from ..fold import bn_affine
from ..graph import BN_TYPES, get_module, replace_module, shape_of
from .base import PassContext
from .merge_left import bn_refusal

RULE = "bn-as-layer"
_CONV = {3: nn.Conv1d, 4: nn.Conv2d, 5: nn.Conv3d}


def per_channel_conv(s: torch.Tensor, t: torch.Tensor, ndim: int) -> nn.Module:
    """Depthwise 1×1 conv computing ``s·x + t`` per channel of an ``ndim``-D input."""
    n = s.numel()
    conv = _CONV[ndim](n, n, 1, groups=n).to(s.dtype)
    conv.weight = nn.Parameter(s.detach().reshape((n, 1) + (1,) * (ndim - 2)).clone())
    conv.bias = nn.Parameter(t.detach().clone())
    return conv


def run(gm: fx.GraphModule, ctx: PassContext) -> None:
    """Replace every BatchNorm left in the graph by a per-channel conv (input 3-D to 5-D)."""
    if (not ctx.options.get("bn_as_layer", False) or ctx.options.get("strategy", "auto") == "left-only"
            or ctx.options.get("bias_map", True) is False):
        return
    for node in list(gm.graph.nodes):
        bn = get_module(gm, node)
        if bn is None or not isinstance(bn, BN_TYPES) or bn_refusal(bn):
            continue
        ndim = len(shape_of(node) or ())
        if ndim not in _CONV:
            ctx.skip(RULE, node.name, f"its input is {ndim}-D; a per-channel conv needs 3-D to 5-D")
            continue
        why = ctx.reason_for(node.name) or "no layer can absorb it"
        if ctx.apply(RULE, node.name, f"{node.target} → per-channel {_CONV[ndim].__name__} (kept because {why})"):
            s, t = bn_affine(bn)
            replace_module(gm, node, per_channel_conv(s, t, ndim))
