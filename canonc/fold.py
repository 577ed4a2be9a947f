"""The arithmetic of folding a per-channel affine map into a linear layer.

BatchNorm in eval mode is ``BN(x) = s*x + t`` with ``s = gamma / sqrt(var + eps)`` and
``t = beta - mean*s``. These helpers return *new* modules; inputs are never modified.
"""

from __future__ import annotations

import torch
from torch import nn

from .graph import CONVT_TYPES, copy_sharing


def bn_affine(bn: nn.modules.batchnorm._BatchNorm) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel ``(s, t)`` of an eval-mode BatchNorm with running statistics."""
    var, mean = bn.running_var.detach(), bn.running_mean.detach()
    s = torch.rsqrt(var + bn.eps)
    if bn.weight is not None:
        s = bn.weight.detach() * s
    t = -mean * s
    if bn.bias is not None:
        t = bn.bias.detach() + t
    return s, t


def out_channels(module: nn.Module) -> int:
    """Number of output channels (features) of a Conv / ConvTranspose / Linear."""
    if isinstance(module, nn.Linear):
        return module.out_features
    return module.out_channels


def fold_out(module: nn.Module, s: torch.Tensor, t: torch.Tensor) -> nn.Module:
    """New layer computing ``s * module(x) + t`` per output channel (merge left, L1).

    ``W'[o] = s[o] * W[o]`` and ``b' = s*b + t``. ConvTranspose keeps its weight as
    ``(in, out/groups, *k)`` and so scales axis 1 within each group.
    """
    new = copy_sharing(module, "weight", "bias")
    w = new.weight.detach()
    s = s.to(w.dtype)
    t = t.to(w.dtype)
    if isinstance(new, CONVT_TYPES):
        g = new.groups
        shape = (g, 1, w.shape[1]) + (1,) * (w.dim() - 2)
        w2 = (w.reshape((g, w.shape[0] // g) + tuple(w.shape[1:])) * s.reshape(shape)).reshape(w.shape)
    else:
        w2 = w * s.reshape((-1,) + (1,) * (w.dim() - 1))
    b = new.bias.detach() if new.bias is not None else torch.zeros_like(s)
    new.weight = nn.Parameter(w2.contiguous(), requires_grad=module.weight.requires_grad)
    new.bias = nn.Parameter((s * b + t).contiguous(), requires_grad=module.weight.requires_grad)
    return new
