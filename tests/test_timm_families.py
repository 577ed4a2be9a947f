"""timm families: canonized and verified at small input sizes, BN merged, LayerNorm affine folded."""

from __future__ import annotations

import pytest
import timm
import torch
from timm.layers import pad_same
from torch import nn

from canonc import canonize
from canonc import nn as cnn
from canonc.zoo import TIMM_FAMILIES, build, count_layernorm, randomize

# LayerNorms whose affine part cannot move exactly: they feed a residual stream or an activation.
LN_AFFINE_LEFT = {"convnext_atto": 1, "swin_tiny_patch4_window7_224": 13, "mobilevit_xxs": 3}


def check_family(name: str, side: int) -> None:
    model, x = build("timm", name, side)
    # RepVGG / MobileOne identity branches, ConvMixer and DPN keep a BN after an activation: the
    # family table is measured with the opt-in last resort that turns it into a per-channel conv.
    res = canonize(model, x, options={"bn_as_layer": True})
    assert res.report.verified and res.report.max_rel_error_fp64 <= 1e-9
    assert not [e for e in res.report.lint if e["kind"] in ("functional-layer", "opaque-module", "batchnorm-left")]
    assert res.report.bn_after == 0
    assert count_layernorm(res.module)[1] == LN_AFFINE_LEFT.get(name, 0)


@pytest.mark.parametrize("name", ["convnext_atto", "repvgg_a0"])
def test_representative_families(name, one_thread):
    check_family(name, 32)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(TIMM_FAMILIES.values()))
def test_every_family(name, one_thread):
    check_family(name, 64)


@pytest.mark.parametrize("size", [7, 8, 9, 16, 17])
def test_pad_same_module_matches_timm(size):
    x = torch.randn(2, 3, size, size + 3)
    for k, s, d, value in [((3, 3), (2, 2), (1, 1), 0.0), ((5, 5), (2, 2), (1, 1), -float("inf")),
                           ((3, 3), (1, 1), (2, 2), 0.0), ((4, 4), (3, 3), (1, 1), 0.0)]:
        assert torch.equal(cnn.PadSame(k, s, d, value)(x), pad_same(x, k, s, d, value=value))


@pytest.mark.parametrize("conv", [timm.layers.StdConv2d, timm.layers.ScaledStdConv2d])
def test_weight_standardised_conv_becomes_a_plain_conv(conv, one_thread):
    model = randomize(nn.Sequential(conv(3, 8, 3, padding=1), nn.BatchNorm2d(8)), (2, 3, 8, 8))
    res = canonize(model, torch.randn(1, 3, 8, 8))
    assert res.report.verified and res.report.max_rel_error_fp64 <= 1e-9 and res.report.bn_after == 0
    convs = [m for m in res.module.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 1 and type(convs[0]) is nn.Conv2d
    assert [e["rule"] for e in res.report.rewrites] == ["lift-layer", "merge-left"]


def test_same_padding_conv_merges_its_bn(one_thread):
    model = randomize(nn.Sequential(timm.layers.create_conv2d(3, 8, 3, stride=2, padding="same"), nn.BatchNorm2d(8)),
                      (2, 3, 9, 9))
    res = canonize(model, torch.randn(1, 3, 9, 9))
    assert res.report.verified and res.report.bn_after == 0
    assert [type(m).__name__ for m in res.module.modules()][1:] == ["PadSame", "Conv2d"]
    y = torch.randn(1, 3, 12, 12)
    assert torch.allclose(res.module(y), model(y), atol=1e-5)  # another input size: the padding follows it


def test_unfused_attention_scale_absorbed(one_thread):
    torch.manual_seed(0)
    model = randomize(timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32, depth=1), (2, 3, 32, 32))
    model.blocks[0].attn.fused_attn = False  # q * scale, q @ kᵀ, softmax, attn @ v written out
    res = canonize(model, torch.randn(1, 3, 32, 32))
    assert res.report.verified and res.report.max_rel_error_fp64 <= 1e-9
    products = [m for m in res.module.modules() if isinstance(m, cnn.MatMul)]
    assert [m.scale for m in products] == [pytest.approx(64 ** -0.5), 1.0]
    assert not [e for e in res.report.lint if e["kind"] in ("constant-affine", "functional-combine", "functional-layer")]


class LinearNorm(nn.Module):
    """LeViT's ``Linear → BatchNorm1d`` over the flattened tokens, then an activation and a sum."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(6, 6, bias=False)
        self.bn = nn.BatchNorm1d(6)
        self.act = nn.Hardswish()
        self.bn_after_act = nn.BatchNorm1d(6)

    def forward(self, x):
        y = self.bn(self.linear(x).flatten(0, 1)).reshape_as(x)
        z = self.act(y).transpose(1, 2)
        return self.bn_after_act(z) + z


def test_bn_over_linear_rows_merges_and_a_stuck_bn_becomes_a_layer(wild_bn, one_thread):
    model = wild_bn(LinearNorm())
    res = canonize(model, torch.randn(2, 5, 6), options={"bn_as_layer": True})
    assert res.report.verified and res.report.max_rel_error_fp64 <= 1e-9 and res.report.bn_after == 0
    rules = {e["node"]: e["rule"] for e in res.report.rewrites if e["node"] in ("bn", "bn_after_act")}
    assert rules == {"bn": "merge-left-views", "bn_after_act": "bn-as-layer"}
    layer = res.module.get_submodule("bn_after_act")
    assert type(layer) is nn.Conv1d and layer.groups == 6 and layer.kernel_size == (1,)
    assert canonize(model, torch.randn(2, 5, 6), strategy="left-only").report.bn_after == 1
    assert canonize(model, torch.randn(2, 5, 6)).report.bn_after == 1  # opt-in: by default kept with its reason
