"""Linear chains (fuse-chains) and constant per-channel affine ops (fold-constant-affine).

Every random chain must come out verified in float64 and either fused into one layer or
left with a logged reason.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from torch import nn

from canonc.cli import build_parser, pass_options
from canonc.core import canonize
from canonc.graph import LINEAR_TYPES
from canonc.invariance import explain
from models.pairs import split_conv

CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
PROPERTY = settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def layers(module: nn.Module) -> list[nn.Module]:
    """The Conv / ConvTranspose / Linear layers of ``module``."""
    return [m for m in module.modules() if isinstance(m, LINEAR_TYPES)]


def entries(res, rule: str) -> tuple[list[dict], list[dict]]:
    """(rewrites, refusals) of ``rule`` in a canonization report."""
    report = res.report
    return [e for e in report.rewrites if e["rule"] == rule], [e for e in report.skipped if e["rule"] == rule]


def assert_exact(model: nn.Module, res, x: torch.Tensor) -> None:
    """The float64 gate passed near rounding level, and the float32 artifact matches on ``x``."""
    ref = copy.deepcopy(model).double().eval()
    with torch.no_grad():
        y = ref(x.double())
        y32 = res.module(x.to(next(res.module.parameters()).dtype)).double()
    scale = 1 + y.abs().max().item()
    assert res.report.verified and res.report.max_abs_error_fp64 <= 1e-10 * scale
    assert (y - y32).abs().max().item() <= 1e-4 * scale


def _bias(draw, n: int) -> torch.Tensor | None:
    kind = draw(st.sampled_from(["none", "zero", "random"]))
    return None if kind == "none" else torch.zeros(n) if kind == "zero" else torch.randn(n)


def _conv(draw, dims: int, cin: int, cout: int) -> nn.Module:
    groups = draw(st.sampled_from([g for g in (1, 2, 4) if cin % g == 0 and cout % g == 0]))
    conv = CONVS[dims - 1](cin, cout, draw(st.integers(1, 3)), stride=draw(st.integers(1, 2)),
                           padding=draw(st.sampled_from([0, 0, 1])), dilation=draw(st.integers(1, 2)), groups=groups,
                           padding_mode=draw(st.sampled_from(["zeros", "zeros", "reflect", "circular"])))
    bias = _bias(draw, cout)
    conv.bias = None if bias is None else nn.Parameter(bias)
    return conv


@st.composite
def conv_chains(draw) -> tuple[nn.Module, torch.Tensor, float]:
    """Two stacked convs of one dimensionality, random groups/strides/kernels/paddings/dilations."""
    dims = draw(st.sampled_from([1, 2, 2, 3]))  # 3-D is the slowest to verify (the gate grows every side by 32)
    cin, cmid, cout = 4, 4 * draw(st.integers(1, 2)), 4 * draw(st.integers(1, 2))
    model = nn.Sequential(_conv(draw, dims, cin, cmid), _conv(draw, dims, cmid, cout)).eval()
    size = (6, 7, 8)[:dims] if dims == 3 else (13,) * dims
    return model, torch.randn((2, cin) + size), draw(st.sampled_from([1.0, 100.0]))


@given(conv_chains())
@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_conv_chain_fused_or_refused(case):
    model, x, growth = case
    try:
        with torch.no_grad():
            model(x)
    except RuntimeError:  # input too small for this chain, or padding larger than reflect allows
        assume(False)
    res = canonize(model, x, options={"max_chain_growth": growth})
    fused, refused = entries(res, "fuse-chains")
    assert len(fused) + len(refused) == 1
    assert_exact(model, res, x)
    if fused:
        assert len(layers(res.module)) == 1
        assert res.report.params_after <= growth * res.report.params_before
    else:
        assert refused[0]["reason"] and len(layers(res.module)) == 2


class Chain(nn.Module):
    """``second(regroup(first(x)))`` with a chosen way of flattening features."""

    def __init__(self, first: nn.Module, how: str, second: nn.Module) -> None:
        super().__init__()
        self.first, self.how, self.second = first, how, second
        self.flat = nn.Flatten()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.first(x)
        if self.how == "flatten":
            y = torch.flatten(y, 1)
        elif self.how == "Flatten":
            y = self.flat(y)
        elif self.how == "view":
            y = y.view(y.size(0), -1)
        elif self.how == "reshape":
            y = y.reshape(-1, math.prod(y.shape[1:]))
        return self.second(y)


@st.composite
def flat_chains(draw) -> tuple[nn.Module, torch.Tensor, float]:
    """Linear (2-D or 3-D input) or Conv1d/2d/3d, regrouped into features, then a Linear."""
    kind = draw(st.sampled_from(["linear", "linear3d", "conv1d", "conv2d", "conv3d"]))
    how = draw(st.sampled_from(["none", "flatten", "Flatten", "view", "reshape"] if kind == "linear" else
                               ["flatten", "Flatten", "view", "reshape"]))
    if kind.startswith("linear"):
        first = nn.Linear(6, draw(st.integers(2, 9)), bias=draw(st.booleans()))
        shape = (3, 6) if kind == "linear" else (3, 4, 6)
    else:
        dims = int(kind[-2])
        first = _conv(draw, dims, 2, 4)
        first.padding_mode = "zeros"
        shape = (3, 2) + (5,) * dims
    x = torch.randn(shape)
    with torch.no_grad():
        feats = math.prod(first(x).shape[1:])
    model = Chain(first, how, nn.Linear(feats, draw(st.integers(1, 5)), bias=draw(st.booleans()))).eval()
    return model, x, draw(st.sampled_from([1.0, 1000.0]))


@given(flat_chains())
@PROPERTY
def test_flatten_chain_fused_or_refused(case):
    model, x, growth = case
    res = canonize(model, x, options={"max_chain_growth": growth})
    fused, refused = entries(res, "fuse-chains")
    assert len(fused) + len(refused) == 1
    assert_exact(model, res, x)
    if fused:
        assert len(layers(res.module)) == 1
    else:
        assert "--max-chain-growth" in refused[0]["reason"]


def test_linear_linear_is_one_linear_with_product_weight():
    model = nn.Sequential(nn.Linear(5, 7), nn.Linear(7, 3)).double().eval()
    x = torch.randn(2, 5)
    res = canonize(model, x, options={"max_chain_growth": 2.0})
    (fc,) = layers(res.module)
    w1, w2 = model[0].weight.detach(), model[1].weight.detach()
    assert torch.allclose(fc.weight.double(), w2 @ w1, atol=1e-6)
    assert torch.allclose(fc.bias.double(), w2 @ model[0].bias.detach() + model[1].bias.detach(), atol=1e-6)
    assert_exact(model, res, x)


def test_three_stacked_layers_become_one_and_lint_is_clean():
    model = nn.Sequential(nn.Conv1d(3, 6, 3), nn.Conv1d(6, 6, 1), nn.Conv1d(6, 4, 2, stride=2), nn.ReLU()).eval()
    x = torch.randn(2, 3, 12)
    res = canonize(model, x, options={"max_chain_growth": 2.0})
    (conv,) = layers(res.module)
    assert conv.kernel_size == (4,) and conv.stride == (2,) and len(entries(res, "fuse-chains")[0]) == 2
    assert not [i for i in res.report.lint if i["kind"] == "linear-chain"]
    assert_exact(model, res, x)


def test_bottleneck_refused_by_growth_budget_and_fused_when_allowed():
    model = nn.Sequential(nn.Conv2d(32, 4, 1), nn.Conv2d(4, 32, 1)).eval()  # rank-4 bottleneck
    x = torch.randn(1, 32, 6, 6)
    res = canonize(model, x)
    fused, refused = entries(res, "fuse-chains")
    assert not fused and "3.62×" in refused[0]["reason"] and "--max-chain-growth 1" in refused[0]["reason"]
    res = canonize(model, x, options={"max_chain_growth": 5.0})
    assert len(entries(res, "fuse-chains")[0]) == 1 and res.report.params_after == 32 * 32 + 32


def test_padded_second_conv_refused_at_border_unless_exact():
    x = torch.randn(1, 3, 9, 9)
    padded = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Conv2d(4, 4, 3, padding=1)).eval()
    res = canonize(padded, x, options={"max_chain_growth": 10.0})
    assert "border" in entries(res, "fuse-chains")[1][0]["reason"]
    pointwise = nn.Sequential(nn.Conv2d(3, 4, 1, bias=False), nn.Conv2d(4, 4, 3, padding=1)).eval()
    res = canonize(pointwise, x, options={"max_chain_growth": 10.0})
    (conv,) = layers(res.module)
    assert conv.padding == (1, 1) and conv.kernel_size == (3, 3)
    assert_exact(pointwise, res, x)


def test_strided_chain_composes_kernel_size_and_stride():
    model = nn.Sequential(nn.Conv2d(2, 4, 3, stride=2, padding=1), nn.Conv2d(4, 4, 2, stride=2)).eval()
    x = torch.randn(1, 2, 16, 16)
    res = canonize(model, x, options={"max_chain_growth": 10.0})
    (conv,) = layers(res.module)
    assert conv.kernel_size == (5, 5) and conv.stride == (4, 4) and conv.padding == (1, 1)
    assert_exact(model, res, x)


def test_depthwise_then_depthwise_stays_depthwise():
    model = nn.Sequential(nn.Conv2d(8, 8, 3, groups=8), nn.Conv2d(8, 8, 3, groups=8)).eval()
    x = torch.randn(1, 8, 10, 10)
    res = canonize(model, x)
    assert "1.30×" in entries(res, "fuse-chains")[1][0]["reason"]  # 5×5 kernel: 208 > 160 parameters
    res = canonize(model, x, options={"max_chain_growth": 1.5})
    (conv,) = layers(res.module)
    assert conv.groups == 8 and conv.kernel_size == (5, 5)
    assert_exact(model, res, x)


def test_off_switch_keeps_chain():
    model = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4)).eval()
    res = canonize(model, torch.randn(1, 4), options={"fuse_chains": False})
    assert len(layers(res.module)) == 2 and not entries(res, "fuse-chains")[0]
    assert any(item["kind"] == "linear-chain" for item in res.report.lint)


def test_pooling_kept_by_default_and_fused_when_asked():
    model = nn.Sequential(nn.AvgPool2d(2), nn.Flatten(), nn.Linear(3 * 2 * 2, 5)).eval()
    x = torch.randn(2, 3, 4, 4)
    res = canonize(model, x)
    assert isinstance(res.module.get_submodule("0"), nn.AvgPool2d)
    res = canonize(model, x, options={"fuse_pooling": True, "max_chain_growth": 4.0})
    (fc,) = layers(res.module)
    assert fc.in_features == 48 and not any(isinstance(m, nn.AvgPool2d) for m in res.module.modules())
    assert_exact(model, res, x)
    gap = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(3, 5)).eval()
    res = canonize(gap, x, options={"fuse_pooling": True, "max_chain_growth": 100.0})
    assert "any input size" in entries(res, "fuse-chains")[1][0]["reason"]


def test_shared_intermediate_refused():
    class Fork(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b = nn.Linear(4, 4), nn.Linear(4, 4)

        def forward(self, x):
            h = self.a(x)
            return self.b(h) + h

    res = canonize(Fork().eval(), torch.randn(2, 4))
    assert "also used by" in entries(res, "fuse-chains")[1][0]["reason"]


def test_cli_options_reach_the_passes():
    args = build_parser().parse_args(["m", "--no-fuse-chains", "--max-chain-growth", "2.5", "--fuse-pooling"])
    assert pass_options(args).items() >= {"fuse_chains": False, "max_chain_growth": 2.5, "fuse_pooling": True}.items()
    assert pass_options(build_parser().parse_args(["m"]))["max_chain_growth"] == 1.0


# --- constant per-channel scale and shift -------------------------------------------------


class Normalized(nn.Module):
    """``conv((x - mean) / std)``: input normalisation inside the model."""

    def __init__(self, padding: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1))
        self.conv = nn.Conv2d(3, 4, 3, padding=padding)

    def forward(self, x):
        return torch.relu(self.conv((x - self.mean) / self.std))


def test_input_normalisation_folded_into_unpadded_first_conv():
    model = Normalized(padding=0).eval()
    x = torch.randn(2, 3, 8, 8)
    res = canonize(model, x)
    assert len(entries(res, "fold-constant-affine")[0]) == 1
    assert not [i for i in res.report.lint if i["kind"] == "constant-affine"]
    conv = res.module.get_submodule("conv")
    assert torch.allclose(conv.weight, model.conv.weight / model.std.view(1, 3, 1, 1), atol=1e-6)
    assert_exact(model, res, x)


def test_input_normalisation_before_zero_padding_needs_bias_map():
    model = Normalized(padding=1).eval()
    x = torch.randn(2, 3, 8, 8)
    res = canonize(model, x)
    assert "bias map" in entries(res, "fold-constant-affine")[0][0]["detail"] or any(
        "bias_map" in name for name, _ in res.module.named_modules())
    assert_exact(model, res, x)
    res = canonize(model, x, options={"bias_map": False})
    (refusal,) = entries(res, "fold-constant-affine")[1]
    assert "bias map" in refusal["reason"]
    assert_exact(model, res, x)


class PerChannelTransform(nn.Module):
    """torchvision Inception-v3's ``transform_input``: ``cat([x[:, i] * a_i + b_i])`` then a conv."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, stride=2)

    def forward(self, x):
        parts = [torch.unsqueeze(x[:, i], 1) * (s / 0.5) + (m - 0.5) / 0.5
                 for i, (m, s) in enumerate([(0.485, 0.229), (0.456, 0.224), (0.406, 0.225)])]
        return self.conv(torch.cat(parts, 1))


def test_inception_style_per_channel_transform_folded():
    model = PerChannelTransform().eval()
    x = torch.randn(2, 3, 9, 9)
    res = canonize(model, x)
    (fold,) = entries(res, "fold-constant-affine")[0]
    assert fold["node"] == "cat" and "conv" in fold["detail"]
    assert [n.op for n in res.module.graph.nodes] == ["placeholder", "call_module", "output"]
    assert_exact(model, res, x)


class LayerScale(nn.Module):
    """ConvNeXt-style block tail: Linear on channels-last, permute back, ``* gamma``, ``+ shift``."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 6)
        self.gamma = nn.Parameter(torch.randn(6))

    def forward(self, x):
        y = self.fc(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        return torch.relu(y.mul(self.gamma.reshape(1, -1, 1, 1)) * 2.0 + 0.25)


def test_layer_scale_folded_into_producing_linear():
    model = LayerScale().eval()
    x = torch.randn(2, 4, 3, 3)
    res = canonize(model, x)
    assert len(entries(res, "fold-constant-affine")[0]) == 3
    fc = res.module.get_submodule("fc")
    assert torch.allclose(fc.weight, model.fc.weight * 2 * model.gamma[:, None], atol=1e-6)
    assert_exact(model, res, x)


class Tokens(nn.Module):
    """ViT-style: position embedding (varies along tokens and features) and a token-wise layer scale."""

    def __init__(self) -> None:
        super().__init__()
        self.pos = nn.Parameter(torch.randn(1, 3, 4))
        self.fc = nn.Linear(4, 4)
        self.gamma = nn.Parameter(torch.randn(4))

    def forward(self, x):
        x = x + self.pos
        return torch.tanh(x + self.fc(x) * self.gamma)


def test_token_layer_scale_folded_and_position_embedding_refused():
    model = Tokens().eval()
    x = torch.randn(2, 3, 4)
    res = canonize(model, x)
    folds, refusals = entries(res, "fold-constant-affine")
    assert [f["detail"] for f in folds] == ["mul folded into fc"]
    assert [r["node"] for r in refusals] == ["add"] and "position embedding" in refusals[0]["reason"]
    assert_exact(model, res, x)


@pytest.mark.slow
def test_vit_layer_scale_folded_and_verified():
    timm = pytest.importorskip("timm")
    model = timm.create_model("vit_tiny_patch16_224", img_size=32, init_values=0.5, num_classes=10, depth=2).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("gamma"):
                p.copy_(torch.randn_like(p))
    res = canonize(model, torch.randn(1, 3, 32, 32))
    folds = entries(res, "fold-constant-affine")[0]
    assert sorted(f["detail"].split(" folded into ")[1] for f in folds) == [
        "blocks.0.attn.proj", "blocks.0.mlp.fc2", "blocks.1.attn.proj", "blocks.1.mlp.fc2"]
    assert res.report.verified


def test_constant_after_nonlinearity_refused_with_reason():
    class Scaled(nn.Module):
        def forward(self, x):
            return torch.sigmoid(torch.relu(x) * 3.0)

    res = canonize(Scaled().eval(), torch.randn(2, 3, 4))
    (refusal,) = entries(res, "fold-constant-affine")[1]
    assert refusal["reason"].startswith("left: ") and "right: " in refusal["reason"]


# --- invariance pair and zoo models ---------------------------------------------------------


def _small_vgg() -> nn.Module:
    from torchvision.models.vgg import VGG, make_layers

    from models.zoo import randomize_bn

    torch.manual_seed(0)
    model = VGG(make_layers([8, "M", 16, 16, "M", 16], batch_norm=True), num_classes=5, init_weights=True)
    model.avgpool = nn.AdaptiveAvgPool2d(2)
    model.classifier = nn.Sequential(nn.Linear(16 * 4, 12), nn.ReLU(), nn.Linear(12, 5))
    return randomize_bn(model, input_shape=(4, 3, 16, 16))


def _gap(a: torch.Tensor, b: torch.Tensor) -> float:
    """``max|a - b| / max|a|``: relevance sums to 1 over the input, so absolute values are tiny."""
    return ((a - b).abs().max() / a.abs().max()).item()


def _pair_relevance_gap(original: nn.Module, split: nn.Module, x: torch.Tensor) -> tuple[float, float, int, int]:
    """Relative relevance gap of the pair before and after canonization, and the canonical parameter counts."""
    before = _gap(explain(original, x, 1), explain(split, x, 1))
    a, b = canonize(original, x), canonize(split, x)
    after = _gap(explain(a.module, x, 1), explain(b.module, x, 1))
    return before, after, a.report.params_after, b.report.params_after


def test_split_conv_pair_explains_identically_after_canonization():
    original = _small_vgg()
    split = split_conv(original, "features.4")
    x = torch.randn(2, 3, 16, 16)
    before, after, p_orig, p_split = _pair_relevance_gap(original, split, x)
    print(f"small VGG split pair: max|R_orig - R_split| / max|R_orig| before {before:.3g}, after {after:.3g}")
    assert p_orig == p_split
    assert before > 1e-3 and after < 1e-5


@pytest.mark.slow
def test_vgg16_bn_split_pair_explains_identically_after_canonization():
    from models.pairs import vgg16_bn_split_pair

    original, split = vgg16_bn_split_pair()
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    before, after, p_orig, p_split = _pair_relevance_gap(original, split, x)
    print(f"VGG-16-BN split pair: max|R_orig - R_split| / max|R_orig| before {before:.3g}, after {after:.3g}")
    assert p_orig == p_split
    assert before > 1e-3 and after < 1e-5


@pytest.mark.slow
def test_inception_v3_transform_input_folded_and_verified():
    import torchvision

    from models.zoo import randomize_bn

    model = torchvision.models.inception_v3(weights=None, aux_logits=False, transform_input=True, init_weights=False)
    model = randomize_bn(model, input_shape=(2, 3, 80, 80))
    res = canonize(model, torch.randn(1, 3, 80, 80))
    (fold,) = entries(res, "fold-constant-affine")[0]
    assert fold["node"] == "cat" and "Conv2d_1a_3x3.conv" in fold["detail"]
    assert res.report.verified and not [i for i in res.report.lint if i["kind"] == "constant-affine"]


@pytest.mark.slow
def test_convnext_atto_layer_scale_folded_and_verified():
    timm = pytest.importorskip("timm")
    model = timm.create_model("convnext_atto").eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("gamma"):
                p.copy_(torch.randn_like(p))  # the init 1e-6 would hide a wrong fold
    res = canonize(model, torch.randn(1, 3, 32, 32))
    folds = entries(res, "fold-constant-affine")[0]
    assert len(folds) == sum(name.endswith("gamma") for name, _ in model.named_parameters()) == 12
    assert all("mlp.fc2" in f["detail"] for f in folds)
    assert res.report.verified and not [i for i in res.report.lint if i["kind"] in ("constant-affine", "linear-chain")]
