"""R1 merge-right: a BN whose input has no producer folds into the layers that consume it.

Property: over random layers (Conv1d/2d/3d, ConvTranspose1d/2d/3d, Linear), groups,
strides, dilations, padding sizes and modes, commuting ops in between, and wild BN
statistics with gammas of both signs and exact zeros, canonization either removes the
BN exactly (fp64 rel error <= 1e-9) or keeps it and says why. Nothing is written wrong.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

from canonc.core import canonize
from canonc.nn import BiasMap
from models.preact import wild_bn

_BN = {1: nn.BatchNorm1d, 2: nn.BatchNorm2d, 3: nn.BatchNorm3d}
_CONV = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}
_CONVT = {1: nn.ConvTranspose1d, 2: nn.ConvTranspose2d, 3: nn.ConvTranspose3d}
SETTINGS = settings(max_examples=20, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


class Chain(nn.Module):
    """``layer(path(bn(x)))``: the BN's input is the graph input, so it cannot merge left."""

    def __init__(self, bn: nn.Module, path: list[nn.Module], layer: nn.Module) -> None:
        super().__init__()
        self.bn = bn
        self.path = nn.Sequential(*path)
        self.layer = layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(self.path(self.bn(x)))


def bn_refused(report, rule_text: str = "") -> bool:
    """True when the report keeps the BN and gives a reason (containing ``rule_text``)."""
    reasons = " ".join(e["reason"] for e in report.skipped if e["node"] == "bn")
    return report.bn_after == 1 and bool(reasons) and rule_text in reasons


def check(model: nn.Module, x: torch.Tensor, **kwargs):
    """Canonize; the result must verify, exactly (the gate raises otherwise)."""
    res = canonize(model.eval(), x, **kwargs)
    assert res.report.verified
    assert res.report.max_rel_error_fp64 <= 1e-9
    return res


@st.composite
def conv_case(draw):
    dims = draw(st.sampled_from([1, 2, 3]))
    transposed = draw(st.booleans())
    groups = draw(st.sampled_from([1, 2, 4]))
    cin = groups * draw(st.sampled_from([1, 2]))
    cout = groups * draw(st.sampled_from([1, 2]))
    k = draw(st.integers(1, 3))
    stride = draw(st.integers(1, 2))
    dilation = draw(st.integers(1, 2))
    size = draw(st.integers(5, 7)) if dims < 3 else 4
    if transposed:
        pad = draw(st.integers(0, dilation * (k - 1)))
        out_pad = draw(st.integers(0, max(0, min(stride, dilation) - 1)))
        layer = _CONVT[dims](cin, cout, k, stride, pad, out_pad, groups, draw(st.booleans()), dilation)
    else:
        mode = draw(st.sampled_from(["zeros", "zeros", "reflect", "replicate", "circular"]))
        pad = draw(st.sampled_from([0, 1, 2, "same"])) if stride == 1 else draw(st.integers(0, 2))
        if mode == "reflect" and pad != "same" and pad >= size:
            pad = 1
        layer = _CONV[dims](cin, cout, k, stride, pad, dilation, groups, draw(st.booleans()), mode)
    return dims, cin, layer, size


@SETTINGS
@given(case=conv_case(), seed=st.integers(0, 2**16), zeros=st.integers(0, 2), bias_map=st.booleans())
def test_conv_consumer_verified_or_refused(case, seed, zeros, bias_map):
    dims, cin, layer, size = case
    torch.manual_seed(seed)
    model = Chain(wild_bn(_BN[dims](cin), seed, zeros), [], layer).double()
    x = torch.randn((1, cin) + (size,) * dims)
    res = check(model, x, options={"bias_map": bias_map})
    maps = [m for m in res.module.modules() if isinstance(m, BiasMap)]
    if res.report.bn_after == 0:
        assert not maps or bias_map
    else:
        assert not bias_map and bn_refused(res.report, "bias maps are disabled")


@SETTINGS
@given(seed=st.integers(0, 2**16), zeros=st.integers(0, 3), pool=st.sampled_from(["avg", "adaptive"]))
def test_linear_consumer_through_pool_and_flatten(seed, zeros, pool):
    torch.manual_seed(seed)
    path = [nn.AvgPool2d(2) if pool == "avg" else nn.AdaptiveAvgPool2d(2), nn.Flatten()]
    model = Chain(wild_bn(nn.BatchNorm2d(4), seed, zeros), path, nn.Linear(16 if pool == "adaptive" else 36, 3))
    res = check(model, torch.randn(1, 4, 6, 6))
    assert res.report.bn_after == 0


def test_linear_after_bn1d():
    model = Chain(wild_bn(nn.BatchNorm1d(5), 1, 2), [], nn.Linear(5, 3))
    assert check(model, torch.randn(2, 5)).report.bn_after == 0


def test_linear_on_last_axis_of_bn1d_3d_is_refused():
    model = Chain(wild_bn(nn.BatchNorm1d(5), 1, 1), [], nn.Linear(7, 3))
    assert bn_refused(check(model, torch.randn(2, 5, 7)).report, "acts on the last axis")


@pytest.mark.parametrize("pool, merges", [
    (nn.AvgPool2d(3, 1, padding=1), False),                        # counts zero padding
    (nn.AvgPool2d(3, 1, padding=1, count_include_pad=False), True),
    (nn.AvgPool2d(2, ceil_mode=True), True),
    (nn.AvgPool2d(2, divisor_override=3), False),
])
def test_avg_pool_commutes_only_without_counted_padding(pool, merges):
    model = Chain(wild_bn(nn.BatchNorm2d(4), 3, 1), [pool], nn.Conv2d(4, 2, 1))
    res = check(model, torch.randn(1, 4, 7, 7))
    assert (res.report.bn_after == 0) == merges


@pytest.mark.parametrize("negative", [False, True])
def test_max_pool_commutes_only_with_nonnegative_scale(negative):
    bn = wild_bn(nn.BatchNorm2d(4), 5, 1)
    with torch.no_grad():
        bn.weight.copy_(bn.weight.abs() * (-1 if negative else 1))
    res = check(Chain(bn, [nn.MaxPool2d(2)], nn.Conv2d(4, 2, 3, padding=1)), torch.randn(1, 4, 8, 8))
    assert (res.report.bn_after == 0) != negative
    if negative:
        assert bn_refused(res.report, "negative scale")


def test_every_consumer_is_rewritten_or_none():
    class Fan(nn.Module):
        def __init__(self, second: nn.Module) -> None:
            super().__init__()
            self.bn = wild_bn(nn.BatchNorm2d(4), 7, 1)
            self.a = nn.Conv2d(4, 3, 3, padding=1)
            self.b = second

        def forward(self, x):
            y = self.bn(x)
            return self.a(y), self.b(y)

    res = check(Fan(nn.Conv2d(4, 2, 1, groups=2)), torch.randn(1, 4, 6, 6))
    assert res.report.bn_after == 0
    res = check(Fan(nn.Tanh()), torch.randn(1, 4, 6, 6))
    assert bn_refused(res.report, "Tanh")
