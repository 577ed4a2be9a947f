"""R2: BN → ReLU → linear layers becomes ThreshReLU → BN', so the BN can merge right.

With ``BN(x) = s·x + t`` and ``tau = -t/s``: ``ReLU(s·x + t) = s·max(x, tau) + t`` for
``s > 0`` and ``s·min(x, tau) + t`` for ``s < 0``. Channels with ``s = 0`` are the
constant ``ReLU(t)``: ThreshReLU passes them through and BN' maps them to that
constant (scale 0), which then lands in the consumer's bias. BN' is an exact affine
BatchNorm (``eps = 0``) that :mod:`merge_right` folds into the consumers in the same
round; the rewrite is only made when every consumer accepts that fold.
"""

from __future__ import annotations

import torch
from torch import fx, nn

from .. import nn as cnn
from ..fold import affine_bn, bn_affine
from ..graph import BN_TYPES, data_users, get_module, replace_module
from .base import PassContext
from .merge_left import bn_refusal
from .merge_right import check

RULE = "thresh-relu"
_NO_IDENTITY = {
    nn.ReLU6: "ReLU6 clamps at two levels; one per-channel threshold cannot express it",
    nn.Hardtanh: "Hardtanh clamps at two levels; one per-channel threshold cannot express it",
    nn.LeakyReLU: "LeakyReLU's negative slope scales t too, so it does not commute with the BN as a threshold",
}


def thresh_relu(s: torch.Tensor, t: torch.Tensor, channel_dim: int = 1) -> cnn.ThreshReLU:
    """The ThreshReLU with ``ReLU(s·x + t) = s'·ThreshReLU(x) + t'`` (see :func:`after_affine`)."""
    module = cnn.ThreshReLU(s.numel(), channel_dim).to(s.dtype)
    zero = s == 0
    module.tau.copy_(torch.where(zero, torch.zeros_like(t), -t / torch.where(zero, torch.ones_like(s), s)))
    module.upper.copy_(s < 0)
    module.keep.copy_(zero)
    return module


def after_affine(s: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The affine map ``(s', t')`` that follows the ThreshReLU: ``s' = s``, ``t' = ReLU(t)`` where ``s = 0``."""
    return s, torch.where(s == 0, torch.relu(t), t)


def run(gm: fx.GraphModule, ctx: PassContext) -> None:
    """Move each BN behind the ReLU it feeds when its consumers can then absorb it."""
    if ctx.options.get("strategy", "auto") == "left-only":
        return
    for node in list(gm.graph.nodes):
        bn = get_module(gm, node)
        if bn is None or not isinstance(bn, BN_TYPES) or bn_refusal(bn):
            continue
        users = data_users(node)
        act = get_module(gm, users[0]) if len(users) == 1 else None
        if act is None or isinstance(act, cnn.ThreshReLU):
            continue
        if type(act) in _NO_IDENTITY:
            ctx.skip(RULE, node.name, _NO_IDENTITY[type(act)])
            continue
        if type(act) is not nn.ReLU:
            continue
        relu = users[0]
        s, t = bn_affine(bn)
        s2, t2 = after_affine(s, t)
        _, why = check(gm, relu, s2, t2, ctx.options.get("bias_map", True))
        if why:
            ctx.skip(RULE, node.name, why)
            continue
        if not ctx.apply(RULE, node.name, f"{node.target} → {relu.target} becomes ThreshReLU → affine"):
            continue
        replace_module(gm, relu, thresh_relu(s, t))
        replace_module(gm, node, affine_bn(bn, s2, t2))
        relu.replace_input_with(node, node.args[0])
        relu.replace_all_uses_with(node)
        node.args = (relu,)
        relu.append(node)
