"""Pre-activation models end to end: torchvision DenseNets, timm ResNetV2, a hand-made net.

BN statistics are randomized (calibrated, gammas of both signs and about 5 % exact zeros).
"""

from __future__ import annotations

import pytest
import torch
import torchvision

from canonc.core import canonize
from canonc.nn import BiasMap, ThreshReLU
from models.preact import preact_net
from models.zoo import randomize_bn

X32 = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))


def densenet(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return randomize_bn(torchvision.models.get_model(name, weights=None), input_shape=(2, 3, 32, 32))


def exact(res) -> None:
    assert res.report.verified
    assert res.report.bn_after == 0
    assert res.report.max_rel_error_fp64 <= 1e-9


def test_densenet121_auto():
    res = canonize(densenet("densenet121"), X32)
    exact(res)
    rules = res.report.rule_counts()
    assert rules["merge-left"] == 59 and rules["merge-right"] == 62 and rules["thresh-relu"] == 62
    assert res.report.param_growth <= 1.0
    assert not any(isinstance(m, BiasMap) for m in res.module.modules())
    assert all(not a.startswith("kept") for a in res.report.bn_actions.values())
    assert len(res.report.bn_actions) == 121


@pytest.mark.slow
@pytest.mark.parametrize("name", ["densenet161", "densenet169", "densenet201"])
def test_densenets_auto(name):
    exact(canonize(densenet(name), X32))


@pytest.mark.slow
@pytest.mark.parametrize("name", ["densenet121", "densenet161", "densenet169", "densenet201"])
def test_densenets_untangle(name):
    res = canonize(densenet(name), X32, strategy="untangle")
    exact(res)
    assert 1.5 < res.report.param_growth <= 6.0
    print(f"{name} untangle: parameters ×{res.report.param_growth:.2f}")
    # Slices go right (ThreshReLU) only where there is no linear producer (the first block's
    # input, after max-pool) or where cloning would exceed the 6× parameter budget.
    why = " ".join(r.get("detail", "") for r in res.report.rewrites) + " ".join(r["reason"] for r in res.report.skipped)
    if sum(isinstance(m, ThreshReLU) for m in res.module.modules()) > 7:
        assert "max-param-growth" in why


@pytest.mark.slow
def test_densenet121_left_only_lists_every_kept_bn():
    res = canonize(densenet("densenet121"), X32, strategy="left-only", verify=False)
    assert res.report.bn_after == 62
    kept = [item for item in res.report.lint if item["kind"] == "batchnorm-left"]
    assert len(kept) == 62 and all("left-only" in item["reason"] for item in kept)


@pytest.mark.parametrize("bias_map", [True, False])
def test_preact_net_bias_maps(bias_map):
    res = canonize(preact_net(), X32, options={"bias_map": bias_map})
    assert res.report.verified and res.report.max_rel_error_fp64 <= 1e-9
    maps = [m for m in res.module.modules() if isinstance(m, BiasMap)]
    if bias_map:
        assert res.report.bn_after == 0 and len(maps) == 3
    else:
        assert res.report.bn_after == 3 and not maps
        kept = {k: v for k, v in res.report.bn_actions.items() if v.startswith("kept")}
        assert set(kept) == {"blocks_0_norm1", "blocks_1_norm1", "blocks_2_norm1"}
        assert all("bias maps are disabled" in v for v in kept.values())


def _timm(name: str) -> torch.nn.Module:
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    return randomize_bn(timm.create_model(name), input_shape=(2, 3, 32, 32))


@pytest.mark.parametrize("bias_map", [True, False])
def test_resnetv2_18_padded_preactivation(bias_map):
    res = canonize(_timm("resnetv2_18"), X32, options={"bias_map": bias_map})
    assert res.report.verified and res.report.max_rel_error_fp64 <= 1e-9
    maps = sum(isinstance(m, BiasMap) for m in res.module.modules())
    if bias_map:
        assert res.report.bn_after == 0 and maps > 0
    else:
        assert res.report.bn_after > 0 and maps == 0
        kept = [v for v in res.report.bn_actions.values() if v.startswith("kept")]
        assert len(kept) == res.report.bn_after and all("bias maps are disabled" in v for v in kept)


@pytest.mark.slow
def test_resnetv2_50():
    """Its pre-activation BNs feed 1×1 convs only (3×3 convs follow a left-mergeable BN): no bias map."""
    for bias_map in (True, False):
        res = canonize(_timm("resnetv2_50"), X32, options={"bias_map": bias_map})
        exact(res)
        assert not any(isinstance(m, BiasMap) for m in res.module.modules())
