"""Canonical modules that canonc puts in place of functional ops.

Every tensor-combining op of a canonical model is a call of one of these modules,
so that XAI tools which attach rules to module instances (zennit) see them.
This file depends on torch only (zennit optionally): ``codegen`` copies it verbatim
into an emitted ``model.py`` so the emitted model loads with plain torch.
"""

from __future__ import annotations

import torch
from torch import nn

try:  # zennit's Norm rule attaches to zennit.layer.Sum: subclass it when present.
    from zennit.layer import Sum as _SumBase
except ImportError:  # pragma: no cover - zennit is a dependency of canonc
    _SumBase = nn.Module


class Sum(_SumBase):
    """Sum of tensors stacked on the last axis (a residual ``a + b``).

    The input is one tensor ``torch.stack([a, b, ...], dim=-1)`` because zennit
    attributes relevance to the first positional input only; zennit's ``Norm``
    rule then splits relevance in proportion to each summand.
    """

    def __init__(self) -> None:
        nn.Module.__init__(self)
        self.dim = -1

    def forward(self, stacked: torch.Tensor) -> torch.Tensor:
        return torch.sum(stacked, dim=-1)


class Concat(nn.Module):
    """``torch.cat(tensors, dim)`` as a module (relevance flows by plain gradient)."""

    def __init__(self, dim: int = 1) -> None:
        super().__init__()
        self.dim = dim

    def forward(self, tensors: list[torch.Tensor]) -> torch.Tensor:
        return torch.cat(tensors, dim=self.dim)

    def extra_repr(self) -> str:
        return f"dim={self.dim}"


class Gate(nn.Module):
    """Multiplicative gate ``signal * gate`` (squeeze-excitation and friends).

    XAI rules send relevance to ``signal`` only; the gate is treated as a
    constant per sample.
    """

    def forward(self, signal: torch.Tensor, gate: torch.Tensor) -> torch.Tensor:
        return signal * gate


class Mul(nn.Module):
    """Element-wise product of two data-dependent tensors that is not a gate."""

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return a * b


class Mean(nn.Module):
    """Mean over fixed axes (``x.mean(dims, keepdim)``) as a pooling module."""

    def __init__(self, dims: tuple[int, ...] = (-1,), keepdim: bool = False) -> None:
        super().__init__()
        self.dims = tuple(dims)
        self.keepdim = keepdim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=self.dims, keepdim=self.keepdim)

    def extra_repr(self) -> str:
        return f"dims={self.dims}, keepdim={self.keepdim}"


class ThreshReLU(nn.ReLU):
    """Per-channel clamp ``max(x, tau)`` (``s > 0``) or ``min(x, tau)`` (``s < 0``).

    ``ReLU(s*x + t) = s*ThreshReLU(x) + t`` with ``tau = -t/s``, so a BN before a
    ReLU can move behind it and merge into the next linear layer. Channels with
    ``s == 0`` pass ``x`` through unchanged (``keep``); their constant output is
    folded into the consumer's bias by the pass that creates this module.
    It subclasses ``nn.ReLU`` so activation rules (zennit's ``Pass``) attach.

    Parameters
    ----------
    num_features : int
        Number of channels (axis ``channel_dim`` of the input).
    channel_dim : int
        Axis of the channels.
    """

    def __init__(self, num_features: int, channel_dim: int = 1) -> None:
        super().__init__()
        self.num_features = num_features
        self.channel_dim = channel_dim
        self.register_buffer("tau", torch.zeros(num_features))
        self.register_buffer("upper", torch.zeros(num_features, dtype=torch.bool))
        self.register_buffer("keep", torch.zeros(num_features, dtype=torch.bool))

    def _view(self, t: torch.Tensor, ndim: int) -> torch.Tensor:
        shape = [1] * ndim
        shape[self.channel_dim] = self.num_features
        return t.view(shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tau = self._view(self.tau, x.dim()).to(x.dtype)
        upper = self._view(self.upper, x.dim())
        keep = self._view(self.keep, x.dim())
        clamped = torch.where(upper, torch.minimum(x, tau), torch.maximum(x, tau))
        return torch.where(keep, x, clamped)

    def extra_repr(self) -> str:
        return f"num_features={self.num_features}, channel_dim={self.channel_dim}"


CANONICAL_MODULES = (Sum, Concat, Gate, Mul, Mean, ThreshReLU)
