"""The bridged rules' zero-free backward and the closed-form z+ / α-β / γ rules: the same relevance as
zennit's ``BasicHook.backward`` (γ: up to rounding), with fewer convolutions (the all-zero passes after
a ReLU are skipped; γ takes the output's sign from the module's own forward)."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn
from zennit.core import BasicHook

import canonc
from canonc.xai import Explainer, bridge, rules
from models.zoo import randomize_bn


def zennits_own_backward(monkeypatch) -> None:
    """Every rule of canonc's methods computes its relevance with zennit's ``BasicHook.backward``."""
    for cls in (bridge._BridgedBasic, rules.ClosedZPlus, rules.ClosedAlphaBeta, rules.ClosedGamma):
        monkeypatch.setattr(cls, "backward", BasicHook.backward)


@pytest.fixture(scope="module")
def models():
    """Canonized models with ReLU-fed convs, residual sums, dense concat and a squeeze-excitation gate."""
    out = {}
    for name in ("vgg11_bn", "resnet18", "densenet121", "efficientnet_b0"):
        torch.manual_seed(0)
        model = randomize_bn(torchvision.models.get_model(name), input_shape=(2, 3, 48, 48))
        out[name] = canonc.canonize(model, torch.randn(1, 3, 48, 48), verify=False).module
    return out


def _relevance(model: nn.Module, method: str, x: torch.Tensor, **params) -> torch.Tensor:
    with Explainer(model, method, **params) as explainer:
        return explainer(x, [3, 5], keep_channels=True)


@pytest.mark.parametrize("method", ["eb", "lrp-epsilon-plus", "lrp-alpha2beta1", "lrp-epsilon"])
@pytest.mark.parametrize("name", ["vgg11_bn", "resnet18", "densenet121", "efficientnet_b0"])
def test_canoncs_rules_equal_zennits_backward(models, name, method, monkeypatch):
    x = torch.randn(2, 3, 48, 48, generator=torch.Generator().manual_seed(1))
    ours = _relevance(models[name], method, x)
    zennits_own_backward(monkeypatch)
    theirs = _relevance(models[name], method, x)
    assert theirs.abs().max() > 0
    assert torch.equal(ours, theirs)


def _conv_calls(model: nn.Module, method: str, x: torch.Tensor, monkeypatch) -> int:
    calls = [0]
    original = nn.Conv2d._conv_forward

    def counted(self, *args):
        calls[0] += 1
        return original(self, *args)

    with monkeypatch.context() as patch:
        patch.setattr(nn.Conv2d, "_conv_forward", counted)
        _relevance(model, method, x)
    return calls[0]


@pytest.mark.parametrize("gamma", [0.25, 10.0])
@pytest.mark.parametrize("name", ["vgg11_bn", "resnet18", "densenet121", "efficientnet_b0"])
def test_closed_gamma_equals_zennits_backward_up_to_rounding(models, name, gamma, monkeypatch):
    """z↑ = o + γq and z↓ = (1+γ)o − γq round differently from zennit's sums of passes, nothing else."""
    x = torch.randn(2, 3, 48, 48, generator=torch.Generator().manual_seed(1))
    ours = _relevance(models[name], "lrp-gamma", x, gamma=gamma)
    zennits_own_backward(monkeypatch)
    theirs = _relevance(models[name], "lrp-gamma", x, gamma=gamma)
    assert theirs.abs().max() > 0
    assert (ours - theirs).abs().max() <= 1e-5 * theirs.abs().max()


@pytest.mark.parametrize(("method", "passes"), [("lrp-epsilon-plus", 2), ("lrp-alpha2beta1", 4)])
def test_relu_fed_convs_skip_their_zero_passes(models, method, passes, monkeypatch):
    """VGG-11: 8 convs; the first sees the signed image (all passes), the other 7 only ReLU outputs."""
    x = torch.randn(2, 3, 48, 48, generator=torch.Generator().manual_seed(1))
    convs = 8
    ours = _conv_calls(models["vgg11_bn"], method, x, monkeypatch)
    zennits_own_backward(monkeypatch)
    theirs = _conv_calls(models["vgg11_bn"], method, x, monkeypatch)
    assert theirs == convs + convs * passes  # the forward, then every modified pass
    assert ours == convs + passes + (convs - 1) * passes // 2  # half the passes of the ReLU-fed convs


def test_closed_gamma_takes_one_conv_per_relu_fed_layer(models, monkeypatch):
    """VGG-11 under LRP-γ: zennit runs the forward and five passes per conv; the closed form one pass
    (``q``) per input sign, since ``o`` is the forward's and the gradients are transposed convs."""
    x = torch.randn(2, 3, 48, 48, generator=torch.Generator().manual_seed(1))
    convs = 8
    ours = _conv_calls(models["vgg11_bn"], "lrp-gamma", x, monkeypatch)
    zennits_own_backward(monkeypatch)
    assert _conv_calls(models["vgg11_bn"], "lrp-gamma", x, monkeypatch) == convs + convs * 5
    assert ours == convs + 2 + (convs - 1)


def _two_conv_relevance(rule, second: nn.Module | None = None) -> torch.Tensor:
    """A signed input into the first conv, a ReLU output into the second; ``rule`` on both convs."""
    from zennit.attribution import Gradient
    from zennit.composites import LayerMapComposite
    from zennit.types import Convolution

    torch.manual_seed(0)
    second = nn.Conv2d(4, 3, 3, stride=2, padding=1) if second is None else second
    model = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.ReLU(), second, nn.Flatten(), nn.LazyLinear(4))
    x = torch.randn(2, 2, 7, 7, generator=torch.Generator().manual_seed(1))
    model(x)  # the lazy layer's shape
    with Gradient(model.eval(), LayerMapComposite([((Convolution,), rule)])) as attributor:
        return attributor(x, torch.eye(4)[[1, 2]])[1]


@pytest.mark.parametrize(("alpha", "beta"), [(3.0, 2.0), (1.0, 0.0)])
def test_closed_alpha_beta_equals_zennits_on_signed_and_relu_inputs(alpha, beta):
    """Any α-β: the first conv sees a signed input, the second a ReLU output; equal to zennit's AlphaBeta."""
    from zennit.rules import AlphaBeta

    from canonc.xai.bridge import bridged

    ours = _two_conv_relevance(bridged(rules.ClosedAlphaBeta(alpha, beta, stabilizer=1e-6)))
    assert ours.abs().max() > 0
    assert torch.equal(ours, _two_conv_relevance(AlphaBeta(alpha, beta, stabilizer=1e-6)))


@pytest.mark.parametrize("gamma", [0.0, 0.5, 4.0])
def test_closed_gamma_equals_zennits_on_signed_and_relu_inputs_bridged_or_not(gamma):
    """Bridged, ``o`` is the module's stored output; plain (zennit's registration), it is recomputed."""
    from zennit.rules import Gamma

    from canonc.xai.bridge import bridged

    theirs = _two_conv_relevance(Gamma(gamma, stabilizer=1e-6))
    assert theirs.abs().max() > 0
    for rule in (bridged(rules.ClosedGamma(gamma, stabilizer=1e-6)), rules.ClosedGamma(gamma, stabilizer=1e-6)):
        assert (_two_conv_relevance(rule) - theirs).abs().max() <= 1e-5 * theirs.abs().max()


@pytest.mark.parametrize("gamma", [0.5, 4.0])
def test_closed_gamma_on_linear_layers_equals_zennits_on_signed_and_relu_inputs(gamma):
    """Linear layers take ``(W + γW±)ᵀ g`` as products with ``W``, ``W+`` and ``W−``: the first sees a
    signed input, the second a ReLU output; zennit's relevance, bridged or not."""
    from zennit.attribution import Gradient
    from zennit.composites import LayerMapComposite
    from zennit.rules import Gamma

    from canonc.xai.bridge import bridged

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 4)).eval()
    x = torch.randn(3, 5, generator=torch.Generator().manual_seed(1))

    def relevance(rule):
        with Gradient(model, LayerMapComposite([((nn.Linear,), rule)])) as attributor:
            return attributor(x, torch.eye(4)[[1, 2, 3]])[1]

    theirs = relevance(Gamma(gamma, stabilizer=1e-6))
    assert theirs.abs().max() > 0
    for rule in (bridged(rules.ClosedGamma(gamma, stabilizer=1e-6)), rules.ClosedGamma(gamma, stabilizer=1e-6)):
        assert (relevance(rule) - theirs).abs().max() <= 1e-5 * theirs.abs().max()


def test_closed_rules_transpose_strided_dilated_grouped_convs():
    """The direct transposes take the conv's stride, padding, dilation and groups: zennit's relevance."""
    from zennit.rules import AlphaBeta, Gamma, ZPlus

    second = nn.Conv2d(4, 4, 3, stride=2, padding=2, dilation=2, groups=2)
    for ours, theirs in ((rules.ClosedZPlus(stabilizer=1e-6), ZPlus(stabilizer=1e-6)),
                         (rules.ClosedAlphaBeta(2.0, 1.0, stabilizer=1e-6), AlphaBeta(2.0, 1.0, stabilizer=1e-6))):
        expected = _two_conv_relevance(theirs, second)
        assert expected.abs().max() > 0
        assert torch.equal(_two_conv_relevance(ours, second), expected)
    expected = _two_conv_relevance(Gamma(0.5, stabilizer=1e-6), second)
    ours = _two_conv_relevance(rules.ClosedGamma(0.5, stabilizer=1e-6), second)
    assert (ours - expected).abs().max() <= 1e-5 * expected.abs().max()


@pytest.mark.parametrize("second", [nn.Conv2d(4, 3, 3, stride=2, padding=1, padding_mode="reflect"),
                                    nn.ConvTranspose2d(4, 3, 3, stride=2)], ids=["reflect", "transpose"])
def test_closed_rules_differentiate_layers_they_cannot_transpose_directly(second):
    """A reflect-padded conv and a transposed conv: their transposes by autograd, the same relevance
    (zennit's rules bridged too: its own hooks fail on a ``ConvTranspose2d`` input)."""
    from zennit.rules import Gamma, ZPlus

    from canonc.xai.bridge import bridged

    assert not rules.transposable(second)
    theirs = _two_conv_relevance(bridged(ZPlus(stabilizer=1e-6)), second)
    assert theirs.abs().max() > 0
    assert torch.equal(_two_conv_relevance(bridged(rules.ClosedZPlus(stabilizer=1e-6)), second), theirs)
    theirs = _two_conv_relevance(bridged(Gamma(0.5, stabilizer=1e-6)), second)
    ours = _two_conv_relevance(bridged(rules.ClosedGamma(0.5, stabilizer=1e-6)), second)
    assert (ours - theirs).abs().max() <= 1e-5 * theirs.abs().max()


def test_an_all_zero_input_falls_back_to_zennits_backward():
    """A bias-free conv fed only zeros: every pass is zero, the relevance is zero, not an error."""
    model = nn.Sequential(nn.Conv2d(1, 2, 3, bias=False), nn.Flatten(), nn.Linear(2 * 9, 6)).eval()
    relevance = _relevance(model, "lrp-epsilon-plus", torch.zeros(2, 1, 5, 5))
    assert relevance.shape == (2, 1, 5, 5)
    assert torch.equal(relevance, torch.zeros_like(relevance))


def test_a_zero_input_pass_with_a_bias_is_computed(monkeypatch):
    """A rule whose zero-input pass keeps a (negative) bias: that pass's output is the bias, not zero."""
    from zennit.attribution import Gradient
    from zennit.composites import LayerMapComposite
    from zennit.rules import ClampMod
    from zennit.types import Convolution

    from canonc.xai.bridge import bridged

    torch.manual_seed(0)
    model = nn.Sequential(nn.ReLU(), nn.Conv2d(2, 3, 3), nn.Flatten(), nn.Linear(27, 4)).eval()
    nn.init.constant_(model[1].bias, -0.5)
    rule = BasicHook(input_modifiers=[lambda x: x.clamp(min=0), lambda x: x.clamp(max=0)],
                     param_modifiers=[ClampMod(min=0.0), ClampMod(max=0.0)],  # biases kept on both passes
                     output_modifiers=[lambda y: y] * 2,
                     gradient_mapper=lambda grad, outs: [grad / sum(outs)] * 2,
                     reducer=lambda xs, gs: xs[0] * gs[0] + xs[1] * gs[1])
    x = torch.randn(2, 2, 5, 5, generator=torch.Generator().manual_seed(1))

    def relevance() -> torch.Tensor:
        with Gradient(model, LayerMapComposite([((Convolution,), bridged(rule))])) as attributor:
            return attributor(x, torch.eye(4)[[1, 2]])[1]

    ours = relevance()
    monkeypatch.setattr(bridge._BridgedBasic, "backward", BasicHook.backward)
    assert torch.equal(ours, relevance())
