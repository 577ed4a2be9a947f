"""The arithmetic of composing two linear layers into one (linear chains, DESIGN.md §3 L2/L3).

``Linear2(Linear1(x))`` is one Linear with ``W = W2·W1``, ``b = W2·b1 + b2``; a conv
followed by a conv is one conv with the composed kernel (stride ``s1·s2``, kernel
``(k2 − 1)·d2·s1 + (k1 − 1)·d1 + 1``) where the border semantics allow it; any chain
ending in a Linear on flattened features is one Linear on the flattened input (its
matrix read off by pushing the unit basis through). These helpers build *new* modules;
inputs are never modified.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable

import torch
from torch import nn

from .graph import CONV_TYPES


def n_params(module: nn.Module) -> int:
    """Number of parameters of ``module``."""
    return sum(p.numel() for p in module.parameters())


def conv_padding(conv: nn.Module) -> tuple[int, ...] | None:
    """Symmetric per-dimension padding of a conv, or ``None`` when it is asymmetric.

    ``'valid'`` is 0; ``'same'`` is ``d·(k − 1)/2`` when that is a whole number.
    """
    if not isinstance(conv.padding, str):
        return tuple(int(p) for p in conv.padding)
    if conv.padding == "valid":
        return (0,) * len(conv.kernel_size)
    total = [d * (k - 1) for d, k in zip(conv.dilation, conv.kernel_size)]
    return tuple(t // 2 for t in total) if all(t % 2 == 0 for t in total) else None


def dense_weight(conv: nn.Module) -> torch.Tensor:
    """Weight of a grouped conv as the equivalent ungrouped ``(out, in, *k)`` weight."""
    w = conv.weight.detach()
    g = conv.groups
    if g == 1:
        return w
    out, cin = conv.out_channels, conv.in_channels
    dense = w.new_zeros((out, cin) + tuple(w.shape[2:]))
    po, pi = out // g, cin // g
    for k in range(g):
        dense[k * po:(k + 1) * po, k * pi:(k + 1) * pi] = w[k * po:(k + 1) * po]
    return dense


def _group_mask(out: int, cin: int, groups: int) -> torch.Tensor:
    """Which (output, input) channel pairs a conv with ``groups`` connects."""
    return (torch.arange(out)[:, None] // (out // groups)) == (torch.arange(cin)[None, :] // (cin // groups))


def largest_groups(connected: torch.Tensor) -> int:
    """Largest ``g`` such that the (out, in) connectivity is block-diagonal with ``g`` blocks."""
    out, cin = connected.shape
    for g in sorted((g for g in range(1, math.gcd(out, cin) + 1) if out % g == 0 and cin % g == 0), reverse=True):
        if not (connected & ~_group_mask(out, cin, g)).any():
            return g
    return 1


def grouped_weight(dense: torch.Tensor, groups: int) -> torch.Tensor:
    """The ``(out, in/groups, *k)`` weight of a block-diagonal ungrouped ``dense`` weight."""
    out, cin = dense.shape[:2]
    po, pi = out // groups, cin // groups
    return torch.cat([dense[k * po:(k + 1) * po, k * pi:(k + 1) * pi] for k in range(groups)])


def compose_linear(first: nn.Linear, second: nn.Linear) -> nn.Linear:
    """One Linear computing ``second(first(x))``: ``W = W2·W1``, ``b = W2·b1 + b2``."""
    w1, w2 = first.weight.detach(), second.weight.detach()
    bias = first.bias is not None or second.bias is not None
    new = nn.Linear(first.in_features, second.out_features, bias=bias, dtype=w1.dtype, device=w1.device)
    with torch.no_grad():
        new.weight.copy_(w2 @ w1)
        if bias:
            b1 = first.bias.detach() if first.bias is not None else w1.new_zeros(first.out_features)
            b2 = second.bias.detach() if second.bias is not None else w2.new_zeros(second.out_features)
            new.bias.copy_(w2 @ b1 + b2)
    return new


def _conv_border(first: nn.Module, second: nn.Module, p1: tuple[int, ...], p2: tuple[int, ...]) -> tuple[tuple[int, ...], str, str]:
    """Padding and padding mode of the composed conv, or a reason why none is exact."""
    if not any(p2):
        return p1, first.padding_mode, ""
    if not all(k == 1 for k in first.kernel_size) or any(p1):
        return (), "", (f"the second conv pads (padding {p2}) the output of a {tuple(first.kernel_size)} conv with "
                        f"padding {p1}: the composed kernel would see other values at the border")
    strided = any(s != 1 for s in first.stride)
    if strided and second.padding_mode != "zeros":
        return (), "", (f"the second conv pads with '{second.padding_mode}' after a strided 1×1 conv: "
                        "padding the subsampled values is not padding the input")
    if second.padding_mode == "zeros" and first.bias is not None and first.bias.detach().abs().max() > 0:
        return (), "", ("the second conv zero-pads the first conv's output, whose bias is not zero: "
                        "the composed conv would differ at the border (a bias map would be needed)")
    # a 1x1 conv without bias maps zeros to zeros: padding its output is padding its input (stride apart)
    return tuple(p * s for p, s in zip(p2, first.stride)), second.padding_mode, ""


def compose_conv(first: nn.Module, second: nn.Module) -> tuple[nn.Module | None, str]:
    """One conv computing ``second(first(x))``, or ``(None, reason)`` when that is not exact.

    Exact when the second conv does not pad, or when the first is a 1×1 conv without
    padding whose bias is zero (zero padding of its output is zero padding of its input,
    scaled by its stride) or, at stride 1, whose consumer pads by copying values
    (reflect / replicate / circular). The composed conv keeps the largest group count
    the two group structures allow.
    """
    if type(first) is not type(second) or not isinstance(first, CONV_TYPES):
        return None, f"cannot compose a {type(first).__name__} with a {type(second).__name__}"
    p1, p2 = conv_padding(first), conv_padding(second)
    if p1 is None or p2 is None:
        return None, "asymmetric 'same' padding"
    padding, mode, why = _conv_border(first, second, p1, p2)
    if why:
        return None, why
    w1, w2 = dense_weight(first), dense_weight(second)
    k1, k2 = tuple(first.kernel_size), tuple(second.kernel_size)
    s1, s2 = tuple(first.stride), tuple(second.stride)
    d1, d2 = tuple(first.dilation), tuple(second.dilation)
    dil, kernel, offset, step = [], [], [], []
    for a, b, sa, da, db in zip(k1, k2, s1, d1, d2):
        reach = db * sa  # distance in the input between two taps of the second conv
        d = reach if a == 1 else da if b == 1 else math.gcd(da, reach)
        dil.append(d)
        kernel.append(((b - 1) * reach + (a - 1) * da) // d + 1)
        offset.append(reach // d if b > 1 else 0)
        step.append(da // d if a > 1 else 1)
    w = w1.new_zeros((w2.shape[0], w1.shape[1]) + tuple(kernel))
    for j in itertools.product(*(range(b) for b in k2)):
        taps = tuple(slice(ji * o, ji * o + (a - 1) * st + 1, st) for ji, o, a, st in zip(j, offset, k1, step))
        w[(slice(None), slice(None)) + taps] += torch.einsum("om,mc...->oc...", w2[(slice(None), slice(None)) + j], w1)
    connected = (_group_mask(second.out_channels, second.in_channels, second.groups).double()
                 @ _group_mask(first.out_channels, first.in_channels, first.groups).double()) > 0
    groups = largest_groups(connected)
    bias = first.bias is not None or second.bias is not None
    new = type(first)(first.in_channels, second.out_channels, tuple(kernel), stride=tuple(a * b for a, b in zip(s1, s2)),
                      padding=padding, dilation=tuple(dil), groups=groups, bias=bias, padding_mode=mode,
                      dtype=w1.dtype, device=w1.device)
    with torch.no_grad():
        new.weight.copy_(grouped_weight(w, groups))
        if bias:
            b1 = first.bias.detach() if first.bias is not None else w1.new_zeros(first.out_channels)
            b2 = second.bias.detach() if second.bias is not None else w2.new_zeros(second.out_channels)
            new.bias.copy_(w2.flatten(2).sum(2) @ b1 + b2)
    return new, ""


def dense_linear(fn: Callable[[torch.Tensor], torch.Tensor], in_shape: tuple[int, ...], dtype: torch.dtype,
                 chunk: int = 1024) -> nn.Linear:
    """The Linear on flattened inputs that computes the affine map ``fn`` exactly.

    ``fn`` maps a batch ``(N, *in_shape)`` to ``(N, F)``; its matrix is read off the unit
    basis (in chunks) and its bias off the zero input.
    """
    size = math.prod(in_shape)
    with torch.no_grad():
        bias = fn(torch.zeros((1,) + in_shape, dtype=dtype))[0]
        cols = []
        for start in range(0, size, chunk):
            n = min(chunk, size - start)
            basis = torch.zeros(n, size, dtype=dtype)
            basis[torch.arange(n), torch.arange(start, start + n)] = 1.0
            cols.append(fn(basis.reshape((n,) + in_shape)) - bias)
        new = nn.Linear(size, bias.numel(), dtype=dtype)
        new.weight.copy_(torch.cat(cols).T)
        new.bias.copy_(bias)
    return new
