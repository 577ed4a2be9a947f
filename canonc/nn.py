"""Canonical modules that canonc puts in place of functional ops.

Every tensor-combining op of a canonical model is a call of one of these modules,
so that XAI tools which attach rules to module instances (zennit) see them.
This file depends on torch only (zennit optionally): ``codegen`` copies it verbatim
into an emitted ``model.py`` so the emitted model loads with plain torch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

try:  # zennit's Norm rule attaches to zennit.layer.Sum: subclass it when present.
    from zennit.layer import Sum as _SumBase
except ImportError:  # pragma: no cover - zennit is a dependency of canonc
    _SumBase = nn.Module


def _hooked(module: nn.Module | None) -> bool:
    """Whether ``module`` (``None``: no module) or the global registry has hooks (an XAI tool or a probe is watching)."""
    from torch.nn.modules import module as registry

    own = () if module is None else (module._forward_hooks, module._forward_pre_hooks, module._backward_hooks,
                                     module._backward_pre_hooks)
    shared = (registry._global_forward_hooks, registry._global_forward_pre_hooks,
              registry._global_backward_hooks, registry._global_backward_pre_hooks)
    return any(len(h) for h in own + shared)


def _plain_inference(module: nn.Module | None) -> bool:
    """Gradients off, not exporting, and no hooks on ``module`` (if given) or globally: in-place work is unobservable."""
    return not torch.is_grad_enabled() and not torch.onnx.is_in_onnx_export() and not _hooked(module)


class Summands(tuple):
    """The summands of one ``Sum``, not yet stacked: what ``stack_summands`` hands over in plain inference."""


def stack_summands(tensors: list[torch.Tensor], dim: int = 0) -> torch.Tensor | Summands:
    """``torch.stack(tensors, dim)`` for a ``Sum`` that is the stack's only reader.

    In plain inference (gradients off, not exporting, no global hooks) the stacked copy
    is never observed, so the summands travel as a ``Summands`` tuple and the ``Sum``
    adds them directly; a ``Sum`` with hooks of its own stacks them before its hooks run.
    """
    traced = any(isinstance(t, torch.fx.Proxy) for t in tensors)  # re-tracing a canonized model: keep the stack
    if traced or not _plain_inference(None):
        return torch.stack(tensors, dim)
    return Summands(tensors)


class _OverwritesProducer:
    """Link to the producer whose output a module may overwrite in plain inference (its only reader)."""

    _producer: tuple[nn.Module, ...] = ()  # a tuple: the producer is not registered as a child

    def overwrite_output_of(self, producer: nn.Module | None) -> None:
        """Allow overwriting the output of ``producer``, which only this module reads; ``None``: never."""
        self._producer = (producer,) if producer is not None else ()

    def _may_overwrite(self) -> bool:
        """Linked, and nobody watches the producer (its hooks could hold its output)."""
        return bool(self._producer) and not _hooked(self._producer[0])


class Sum(_OverwritesProducer, _SumBase):
    """Sum of tensors stacked on axis ``dim`` (a residual ``a + b``).

    The input is one tensor ``torch.stack([a, b, ...], dim)`` because zennit
    attributes relevance to the first positional input only; zennit's ``Norm``
    rule then splits relevance in proportion to each summand. canonc stacks on
    axis 0: a plain block copy, where stacking on the last axis interleaves the
    summands element by element (10x slower on CPU).

    Parameters
    ----------
    dim : int
        The stacking axis (zennit's own ``Sum`` defaults to -1).

    In plain inference the stack is skipped (``stack_summands``): the summands arrive as
    ``Summands`` and are added directly, into the first one where the canonizer linked
    its producer (``overwrite_output_of``) and nobody watches that producer.
    """

    def __init__(self, dim: int = -1) -> None:
        nn.Module.__init__(self)
        self.dim = dim

    def __call__(self, stacked: torch.Tensor | Summands, *args, **kwargs) -> torch.Tensor:
        if isinstance(stacked, Summands) and _hooked(self):  # hooks see the stacked tensor, as documented
            stacked = torch.stack(stacked, self.dim)
        return super().__call__(stacked, *args, **kwargs)

    def forward(self, stacked: torch.Tensor | Summands) -> torch.Tensor:
        if torch.onnx.is_in_onnx_export():  # one ReduceSum node per residual in the ONNX graph
            return torch.sum(stacked, dim=self.dim)
        # Eager: unbind + add; torch.sum over a length-2 axis is a reduction kernel ~3x slower.
        unstacked = isinstance(stacked, Summands)  # plain inference (stack_summands)
        total, *rest = stacked if unstacked else stacked.unbind(self.dim)
        if unstacked and self._may_overwrite():  # add into the first summand
            for part in rest:
                total.add_(part)
            return total
        for part in rest:
            total = total + part
        return total


class ReLU(_OverwritesProducer, nn.ReLU):
    """ReLU that overwrites its producer's output in plain inference, out of place otherwise.

    The canonizer links it to the producer (a conv, sum, ...) whose output only it reads.
    It then runs in place exactly when no one can tell: gradients off, no hooks on
    itself, its producer or globally (so XAI rules always see an out-of-place ReLU),
    and not while exporting. An unlinked ReLU (e.g. rebuilt from ``model.py``) is a
    plain out-of-place ``nn.ReLU``.
    """

    def __init__(self) -> None:
        super().__init__(inplace=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if _plain_inference(self) and self._may_overwrite():
            return torch.relu_(x)
        return torch.relu(x)


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
        # One clamp kernel over x (5x faster than min/max/where): per channel the bounds are
        # [tau, inf) for s > 0, (-inf, tau] for s < 0 and (-inf, inf) for kept channels.
        tau = self.tau.to(x.dtype)
        inf = torch.full_like(tau, float("inf"))
        low = torch.where(self.upper | self.keep, -inf, tau)
        high = torch.where(self.upper & ~self.keep, tau, inf)
        return torch.clamp(x, self._view(low, x.dim()), self._view(high, x.dim()))

    def extra_repr(self) -> str:
        return f"num_features={self.num_features}, channel_dim={self.channel_dim}"


class BiasMap(nn.Module):
    """Per-position bias of a layer whose input had a per-channel constant folded in.

    ``Conv(pad0(s*x + t)) = Conv'(pad0(x)) + M`` where ``M`` is the constant ``t`` pushed
    through the zero-padded conv: equal to the bias shift in the interior, different
    near the border. ``Conv'`` carries the interior value as its bias; this module adds
    ``M - interior``, computed at run time for the input's spatial size (so it holds
    at any input size and exports to ONNX as a Conv of a constant-of-shape).

    ``forward(y, size)`` takes the layer's output ``y`` and its *input* size.
    ``kernel`` is the layer's weight contracted with ``t`` over input channels:
    ``(out, 1, *k)`` for a conv, ``(1, out, *k)`` for a transposed conv.
    """

    def __init__(self, out_channels: int, kernel_size: tuple[int, ...], stride: tuple[int, ...],
                 padding: tuple[int, ...] | str, dilation: tuple[int, ...],
                 output_padding: tuple[int, ...] = (), transposed: bool = False) -> None:
        super().__init__()
        self.out_channels = out_channels
        self.kernel_size = tuple(kernel_size)
        self.stride = tuple(stride)
        self.padding = padding if isinstance(padding, str) else tuple(padding)
        self.dilation = tuple(dilation)
        self.output_padding = tuple(output_padding)
        self.transposed = transposed
        shape = (1, out_channels) if transposed else (out_channels, 1)
        self.register_buffer("kernel", torch.zeros(shape + self.kernel_size))
        self.register_buffer("interior", torch.zeros(out_channels))

    def forward(self, y: torch.Tensor, size: torch.Size) -> torch.Tensor:
        n = len(self.kernel_size)
        ones = y.new_ones((1, 1) + tuple(size[2:]))
        kernel = self.kernel.to(y.dtype)
        if self.transposed:
            conv_t = (F.conv_transpose1d, F.conv_transpose2d, F.conv_transpose3d)[n - 1]
            m = conv_t(ones, kernel, None, self.stride, self.padding, self.output_padding, 1, self.dilation)
        else:
            conv = (F.conv1d, F.conv2d, F.conv3d)[n - 1]
            m = conv(ones, kernel, None, self.stride, self.padding, self.dilation)
        return y + (m - self.interior.to(y.dtype).view((1, -1) + (1,) * n))

    def extra_repr(self) -> str:
        return f"out_channels={self.out_channels}, kernel_size={self.kernel_size}, transposed={self.transposed}"


CANONICAL_MODULES = (Sum, Concat, Gate, Mul, Mean, ThreshReLU, ReLU, BiasMap)


class PadSame(nn.Module):
    """TensorFlow "SAME" padding for a window op, computed from the input's size at run time.

    Pads the last ``len(kernel_size)`` axes so that a window op with padding 0 outputs
    ``ceil(size / stride)`` positions (timm's ``pad_same``), asymmetric when the total is odd.

    Parameters
    ----------
    kernel_size, stride, dilation : tuple of int
        The window op's settings, one per spatial axis.
    value : float
        The fill value (0 for a conv, ``-inf`` for max pooling).
    """

    def __init__(self, kernel_size: tuple[int, ...], stride: tuple[int, ...], dilation: tuple[int, ...],
                 value: float = 0.0) -> None:
        super().__init__()
        self.kernel_size = tuple(kernel_size)
        self.stride = tuple(stride)
        self.dilation = tuple(dilation)
        self.value = value

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pads: list[int] = []
        for axis, (k, s, d) in enumerate(zip(self.kernel_size, self.stride, self.dilation)):
            size = x.shape[x.dim() - len(self.kernel_size) + axis]
            total = max((-(-size // s) - 1) * s + (k - 1) * d + 1 - size, 0)
            pads = [total // 2, total - total // 2] + pads  # F.pad lists the last axis first
        return F.pad(x, pads, value=self.value)

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}, dilation={self.dilation}, value={self.value}"


class MatMul(nn.Module):
    """``scale * (a @ b)`` of two data tensors (attention scores and attention-weighted values).

    A module so attention-aware XAI rules (LXT's CP-LRP / AttnLRP) can attach; ``scale``
    carries a constant factor that multiplied either operand or the product.
    """

    def __init__(self, scale: float = 1.0) -> None:
        super().__init__()
        self.scale = scale

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        out = torch.matmul(a, b)
        return out if self.scale == 1.0 else out * self.scale

    def extra_repr(self) -> str:
        return f"scale={self.scale}"


CANONICAL_MODULES = CANONICAL_MODULES + (PadSame, MatMul)


class Offset(nn.Module):
    """``x + offset`` for a constant that varies along several axes (a position embedding).

    A bias-like module: XAI rules can attach (by default relevance passes to ``x``).

    Parameters
    ----------
    shape : tuple of int
        Shape of the offset (broadcastable onto the input); a parameter, zeros until loaded.
    """

    def __init__(self, shape: tuple[int, ...]) -> None:
        super().__init__()
        self.shape = tuple(shape)
        self.offset = nn.Parameter(torch.zeros(self.shape))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.offset

    def extra_repr(self) -> str:
        return f"shape={self.shape}"


CANONICAL_MODULES = CANONICAL_MODULES + (Offset,)
