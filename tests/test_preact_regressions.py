"""Regression tests for the failures measured in the paper's code (shared/reference/paper-code.md)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from canonc.core import canonize
from canonc.nn import BiasMap, ThreshReLU
from models.preact import wild_bn


class PreAct(nn.Module):
    """``layer(relu(bn(x)))`` or, without ``relu``, ``layer(bn(x))``."""

    def __init__(self, bn: nn.Module, layer: nn.Module, relu: bool = True) -> None:
        super().__init__()
        self.bn, self.relu, self.layer = bn, nn.ReLU() if relu else None, layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.bn(x)
        return self.layer(self.relu(x) if self.relu is not None else x)


def exact(model: nn.Module, x: torch.Tensor, **kwargs):
    res = canonize(model.eval(), x, **kwargs)
    assert res.report.verified and res.report.bn_after == 0
    assert res.report.max_rel_error_fp64 <= 1e-9
    return res


@pytest.mark.parametrize("layer, shape", [
    (nn.Conv1d(6, 4, 3), (2, 6, 9)),
    (nn.Conv3d(6, 4, 3), (1, 6, 5, 5, 5)),
    (nn.ConvTranspose2d(6, 4, 3, stride=2), (1, 6, 5, 5)),
    (nn.ConvTranspose1d(6, 4, 2, padding=0), (1, 6, 7)),
])
def test_non_2d_right_merge_shifts_the_bias(layer, shape):
    """The paper scaled the weights of Conv1d/3d/ConvTranspose but never shifted the bias (rel. error 0.4)."""
    exact(PreAct(wild_bn(nn.BatchNorm1d(6) if len(shape) == 3 else
                         (nn.BatchNorm2d, nn.BatchNorm3d)[len(shape) - 4](6), 11, 0), layer, relu=False),
          torch.randn(shape))


def test_zero_gamma_with_nonpositive_beta_stays_finite():
    """gamma = 0, beta <= 0 gave tau = ±inf, NaN in the next conv, and a silently wrong output (22 %)."""
    bn = wild_bn(nn.BatchNorm2d(8), 12, zeros=4)
    assert (bn.weight[:4] == 0).all() and (bn.bias[:2] <= 0).all()
    res = exact(PreAct(bn, nn.Conv2d(8, 4, 1)), torch.randn(1, 8, 6, 6))
    thresh = next(m for m in res.module.modules() if isinstance(m, ThreshReLU))
    assert torch.isfinite(thresh.tau).all() and thresh.keep[:4].all()
    assert all(torch.isfinite(t).all() for t in res.module.state_dict().values() if t.is_floating_point())


def test_padded_border_is_exact():
    """Folding t as a plain bias into a zero-padded conv is wrong at the border (0.59 in the Relation Network)."""
    class ConvReluBnConv(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv1, self.relu, self.bn = nn.Conv2d(3, 8, 3), nn.ReLU(), wild_bn(nn.BatchNorm2d(8), 13, 1)
            self.conv2 = nn.Conv2d(8, 8, 3, padding=1)

        def forward(self, x):
            return self.conv2(self.bn(self.relu(self.conv1(x))))

    res = exact(ConvReluBnConv(), torch.randn(1, 3, 10, 10))
    bmap = next(m for m in res.module.modules() if isinstance(m, BiasMap))
    y = torch.zeros(1, 8, 4, 4, dtype=bmap.kernel.dtype)
    border = bmap(y, torch.Size((1, 8, 4, 4)))
    assert border[..., 1:-1, 1:-1].abs().max() < 1e-6 and border.abs().max() > 1e-3


@pytest.mark.parametrize("conv", [
    nn.Conv2d(8, 8, 3, padding="same", groups=8),            # depthwise, 'same'
    nn.Conv2d(8, 4, 3, padding=2, dilation=2, groups=2),     # grouped and dilated
    nn.Conv2d(8, 4, 5, padding=4, stride=2),                 # map larger than the input's border
])
def test_cases_that_crashed_the_paper_code(conv):
    """groups > 1, dilation > 1, padding='same' and padding >= kernel raised in the paper's bias-map hook."""
    exact(PreAct(wild_bn(nn.BatchNorm2d(8), 14, 1), conv), torch.randn(1, 8, 6, 6))


def test_dataflow_not_registration_order():
    """zennit and the paper pair layers by registration order; the BN here sits next to an unrelated conv."""
    class Misleading(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.side = nn.Conv2d(4, 4, 1)          # registered right before the BN, same channels
            self.bn = wild_bn(nn.BatchNorm2d(4), 15, 1)
            self.relu = nn.ReLU()
            self.conv = nn.Conv2d(4, 2, 3, padding=1)

        def forward(self, x):
            return self.conv(self.relu(self.bn(x))) + self.side(x).sum(1, keepdim=True)

    res = exact(Misleading(), torch.randn(1, 4, 6, 6))
    assert any(r["rule"] == "merge-right" and "conv" in r["detail"] for r in res.report.rewrites)
    assert not any(r["rule"] == "merge-left" for r in res.report.rewrites)


def test_no_hooks_and_no_identity_bn_left():
    """The paper's ThreshReLU and bias maps were hooks (invisible to rules, lost on save) and left x/sqrt(1+eps) BNs."""
    res = exact(PreAct(wild_bn(nn.BatchNorm2d(4), 16, 1), nn.Conv2d(4, 2, 3, padding=1)), torch.randn(1, 4, 6, 6))
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in res.module.modules())
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in res.module.modules())
    assert any(isinstance(m, BiasMap) for m in res.module.modules())


def test_bias_map_holds_at_another_input_size():
    """The map is computed at run time from the input's size (the gate also checks a second size)."""
    model = PreAct(wild_bn(nn.BatchNorm2d(4), 17, 1), nn.Conv2d(4, 2, 3, padding=1, stride=2)).double().eval()
    res = exact(model, torch.randn(1, 4, 6, 6))
    x = torch.randn(2, 4, 11, 13, dtype=torch.float64)
    with torch.no_grad():
        assert (res.module.double()(x) - model(x)).abs().max() < 1e-12
