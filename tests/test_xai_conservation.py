"""Conservation under LRP-0 (ε → 0, float64): Σ R_input + Σ R_bias = R_output per sample.

The bias shares are computed from each layer's own bias, output and relevance, so a gap
means relevance was lost or created somewhere else (a module without a rule, a leftover
BN, a functional op, ThreshReLU or a bias map treated wrongly).
"""

from __future__ import annotations

import pytest
import torch
import torchvision

import canonc
from canonc.errors import InputError
from canonc.xai import conservation
from models.preact import preact_net
from models.zoo import randomize_bn


def _canonical(model: torch.nn.Module, x: torch.Tensor):
    return canonc.canonize(model.double().eval(), x, verify=False)


def _x(n: int = 2, size: int = 32) -> torch.Tensor:
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(3), dtype=torch.float64)


def test_conservation_resnet18():
    torch.manual_seed(0)
    model = randomize_bn(torchvision.models.resnet18(), input_shape=(2, 3, 32, 32))
    x = _x()
    result = conservation(_canonical(model, x).module, x, [3, 500])
    assert torch.equal(result.output, torch.ones(2, dtype=torch.float64))
    assert result.bias.abs().min() > 1e-3  # biases do absorb relevance: the check is not vacuous
    assert result.error < 1e-6


def test_conservation_with_thresh_relu_and_bias_maps():
    x = _x()
    res = _canonical(preact_net(), x)
    kinds = {type(m).__name__ for m in res.module.modules()}
    assert {"ThreshReLU", "BiasMap", "Sum"} <= kinds
    # Random pre-activation nets (ThreshReLU, bias maps) push relevances of ±1e6 through near-zero denominators: the
    # stabilizer's share (ε·R/z) is then visible at ε = 1e-12 (9e-6) and shrinks with ε (1e-15:
    # 1e-8); at ε = 1e-20 what is left is rounding of the ±1e6 terms.
    assert conservation(res.module, x, [1, 2], epsilon=1e-20).error < 1e-6


def test_conservation_densenet121():
    torch.manual_seed(0)
    model = randomize_bn(torchvision.models.densenet121(), input_shape=(2, 3, 32, 32))
    x = _x()
    res = _canonical(model, x)
    assert res.report.bn_after == 0  # the pre-activation passes left no BN
    # LRP-0 through 121 random layers reaches input and bias totals of ±1e25 that cancel to
    # the output's 1: conservation holds to float64 rounding of those totals.
    result = conservation(res.module, x, [3, 500], epsilon=1e-20)
    assert result.input.abs().max() > 1e3  # the totals do not cancel trivially
    assert result.error < 1e-9


def test_conservation_refuses_leftover_batchnorm():
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.Flatten(),
                                torch.nn.Linear(4 * 30 * 30, 3)).double().eval()
    with pytest.raises(InputError, match="BatchNorm"):
        conservation(model, _x(1), 0)
