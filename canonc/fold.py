"""The arithmetic of folding a per-channel affine map into a linear layer.

BatchNorm in eval mode is ``BN(x) = s*x + t`` with ``s = gamma / sqrt(var + eps)`` and
``t = beta - mean*s``. These helpers return *new* modules; inputs are never modified.
"""

from __future__ import annotations

import torch
from torch import nn

from .graph import CONVT_TYPES, copy_sharing
from .nn import BiasMap


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


def affine_bn(like: nn.modules.batchnorm._BatchNorm, s: torch.Tensor, t: torch.Tensor) -> nn.modules.batchnorm._BatchNorm:
    """An eval BatchNorm of ``like``'s class that computes exactly ``s*x + t`` (``eps = 0``)."""
    bn = type(like)(s.numel(), eps=0.0).to(s.dtype).eval()
    with torch.no_grad():
        bn.weight.copy_(s)
        bn.bias.copy_(t)
        bn.running_mean.zero_()
        bn.running_var.fill_(1.0)
    return bn


def zero_padded(module: nn.Module) -> bool:
    """True when a Conv pads its input with zeros (padding > 0 in some dimension).

    A per-channel constant shifted through such a conv is not constant near the border.
    """
    if module.padding_mode != "zeros":
        return False
    if isinstance(module.padding, str):
        return module.padding == "same" and any(d * (k - 1) > 0 for d, k in zip(module.dilation, module.kernel_size))
    return any(p > 0 for p in module.padding)


def needs_bias_map(module: nn.Module) -> bool:
    """True when folding a constant input shift into ``module`` needs a border map.

    ConvTranspose always does: its output positions see a varying number of taps.
    """
    return isinstance(module, CONVT_TYPES) or (not isinstance(module, nn.Linear) and zero_padded(module))


def fold_in(module: nn.Module, s: torch.Tensor, t: torch.Tensor) -> tuple[nn.Module, BiasMap | None]:
    """New layer ``L'`` (and border map) with ``L(s*x + t) = L'(x) [+ map]`` per input channel (R1).

    ``W'[:, c] = W[:, c]*s[c]`` (grouped convs: weight column ``j`` of group ``g`` is
    channel ``g*C_in/groups + j``; ConvTranspose keeps inputs on axis 0). The constant
    ``t`` pushed through the layer goes into the bias where it is the same at every
    position; with zero padding (or a transposed conv) the per-position remainder is a
    :class:`~canonc.nn.BiasMap` to add after the layer, or ``None`` when not needed.
    """
    new = copy_sharing(module, "weight", "bias")
    w = new.weight.detach()
    s, t = s.to(w.dtype), t.to(w.dtype)
    spatial = (1,) * (w.dim() - 2)
    bias = new.bias.detach() if new.bias is not None else w.new_zeros(out_channels(new))
    bmap = None
    if isinstance(new, nn.Linear):
        w2, bias = w * s, bias + w @ t
    elif isinstance(new, CONVT_TYPES):
        g = new.groups
        w2 = w * s.reshape((-1, 1) + spatial)
        wg = w.reshape((g, w.shape[0] // g) + tuple(w.shape[1:]))
        kernel = torch.einsum("gc...,gc->g...", wg, t.reshape(g, -1)).reshape((1, -1) + tuple(w.shape[2:]))
        if kernel.abs().max() > 0:
            bmap = BiasMap(new.out_channels, new.kernel_size, new.stride, new.padding, new.dilation,
                           new.output_padding, transposed=True).to(w.dtype)
            bmap.kernel.copy_(kernel)
    else:
        g = new.groups
        wg = w.reshape((g, w.shape[0] // g) + tuple(w.shape[1:]))
        w2 = (wg * s.reshape((g, 1, -1) + spatial)).reshape(w.shape)
        flat = wg.reshape(wg.shape[:3] + (-1,))
        kernel = torch.matmul(t.reshape(g, 1, 1, -1), flat).reshape((w.shape[0], 1) + tuple(w.shape[2:]))
        interior = kernel.flatten(1).sum(dim=1)
        bias = bias + interior
        if zero_padded(new) and kernel.abs().max() > 0:
            bmap = BiasMap(new.out_channels, new.kernel_size, new.stride, new.padding, new.dilation).to(w.dtype)
            bmap.kernel.copy_(kernel)
            bmap.interior.copy_(interior)
    grad = module.weight.requires_grad
    new.weight = nn.Parameter(w2.contiguous(), requires_grad=grad)
    new.bias = nn.Parameter(bias.contiguous(), requires_grad=grad)
    return new, bmap
