"""R2 ThreshReLU: BN → ReLU → linear layers becomes ThreshReLU → (BN merged right).

Property over random consumers and wild BN statistics (gammas of both signs, exact zeros
with beta <= 0): verified exactly with no BN and no inf/NaN anywhere, or refused with a
reason. ThreshReLU is a module with buffers, not a hook.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

from canonc.core import canonize
from canonc.nn import ThreshReLU
from models.preact import wild_bn

SETTINGS = settings(max_examples=15, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])


class PreAct(nn.Module):
    """``layer(path(act(bn(x))))``."""

    def __init__(self, bn: nn.Module, act: nn.Module, path: list[nn.Module], layer: nn.Module) -> None:
        super().__init__()
        self.bn = bn
        self.act = act
        self.path = nn.Sequential(*path)
        self.layer = layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(self.path(self.act(self.bn(x))))


def canon(model: nn.Module, x: torch.Tensor, **kwargs):
    res = canonize(model.eval(), x, **kwargs)
    assert res.report.verified and res.report.max_rel_error_fp64 <= 1e-9
    return res


@SETTINGS
@given(seed=st.integers(0, 2**16), zeros=st.integers(0, 4), k=st.integers(1, 3), stride=st.integers(1, 2),
       groups=st.sampled_from([1, 2, 4]), padding=st.integers(0, 2), dims=st.sampled_from([1, 2, 3]),
       transposed=st.booleans())
def test_bn_relu_conv_verified(seed, zeros, k, stride, groups, padding, dims, transposed):
    torch.manual_seed(seed)
    bn = wild_bn((nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)[dims - 1](8), seed, zeros)
    if transposed:
        layer = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)[dims - 1](
            8, 4, k, stride, min(padding, k - 1), groups=groups)
    else:
        layer = (nn.Conv1d, nn.Conv2d, nn.Conv3d)[dims - 1](8, 4, k, stride, padding, groups=groups)
    x = torch.randn((1, 8) + (5,) * dims)
    res = canon(PreAct(bn, nn.ReLU(), [], layer), x)
    assert res.report.bn_after == 0
    threshs = [m for m in res.module.modules() if isinstance(m, ThreshReLU)]
    assert len(threshs) == 1 and torch.isfinite(threshs[0].tau).all()
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in res.module.modules())
    assert all(torch.isfinite(p).all() for p in res.module.parameters())


@pytest.mark.parametrize("path, layer", [
    ([nn.AdaptiveAvgPool2d(1), nn.Flatten()], nn.Linear(6, 3)),   # DenseNet's tail
    ([nn.AvgPool2d(2)], nn.Conv2d(6, 3, 1)),                       # DenseNet's transition
])
def test_through_pooling(path, layer):
    res = canon(PreAct(wild_bn(nn.BatchNorm2d(6), 2, 2), nn.ReLU(), path, layer), torch.randn(1, 6, 4, 4))
    assert res.report.bn_after == 0


def test_all_gammas_zero_is_a_constant():
    """gamma = 0 with beta <= 0 made the paper's ThreshReLU inf and its output NaN-laundered."""
    bn = wild_bn(nn.BatchNorm2d(4), 0, zeros=4)
    res = canon(PreAct(bn, nn.ReLU(), [], nn.Conv2d(4, 2, 3, padding=1)), torch.randn(1, 4, 5, 5))
    thresh = next(m for m in res.module.modules() if isinstance(m, ThreshReLU))
    assert thresh.keep.all() and torch.isfinite(thresh.tau).all()
    y = res.module(torch.randn(2, 4, 5, 5))
    assert torch.isfinite(y).all()


@pytest.mark.parametrize("act, why", [
    (nn.ReLU6(), "two levels"), (nn.Hardtanh(), "two levels"), (nn.LeakyReLU(0.1), "negative slope"),
])
def test_other_activations_refused_with_reason(act, why):
    res = canon(PreAct(wild_bn(nn.BatchNorm2d(4), 1, 1), act, [], nn.Conv2d(4, 2, 1)), torch.randn(1, 4, 5, 5))
    assert res.report.bn_after == 1
    assert why in " ".join(e["reason"] for e in res.report.skipped if e["node"] == "bn")


def test_no_bias_map_refuses_padded_consumer_and_still_verifies():
    model = PreAct(wild_bn(nn.BatchNorm2d(4), 3, 1), nn.ReLU(), [], nn.Conv2d(4, 2, 3, padding=2, dilation=2))
    res = canon(model, torch.randn(1, 4, 6, 6), options={"bias_map": False})
    assert res.report.bn_after == 1
    assert "bias maps are disabled" in res.report.lint[0]["reason"]


def test_left_only_keeps_the_bn_with_reason():
    model = PreAct(wild_bn(nn.BatchNorm2d(4), 3, 1), nn.ReLU(), [], nn.Conv2d(4, 2, 1))
    res = canon(model, torch.randn(1, 4, 6, 6), strategy="left-only")
    assert res.report.bn_after == 1
    assert "left-only" in res.report.lint[0]["reason"]


def test_threshrelu_is_exact_on_any_rank():
    """The paper's hook handled 4-D inputs only: BN1d → ReLU → Linear on (N, C)."""
    res = canon(PreAct(wild_bn(nn.BatchNorm1d(6), 4, 2), nn.ReLU(), [], nn.Linear(6, 2)), torch.randn(3, 6))
    assert res.report.bn_after == 0
