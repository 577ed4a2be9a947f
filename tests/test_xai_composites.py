"""Every rule-relevant module of a canonized model gets a rule; canonc's own rules do what they say."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn
from zennit.composites import EpsilonPlus

import canonc
from canonc import nn as cnn
from canonc.errors import InputError
from canonc.xai import Explainer, explain, get_method, uncovered
from models.zoo import randomize_bn


def _capture(module: nn.Module, store: dict, key: str) -> None:
    """Record the relevance that arrives at ``module``'s output under ``store[key]``.

    Register it after the explainer: the rules replace module outputs in the forward pass.
    """

    def hook(_module, _inputs, output):
        output.register_hook(lambda grad: store.setdefault(key, grad))

    module.register_forward_hook(hook)


RULE_METHODS = ["eb", "lrp-epsilon", "lrp-epsilon-plus", "lrp-alpha2beta1", "lrp-gamma"]


@pytest.fixture(scope="module")
def canonized():
    """Canonized torchvision models covering residual sums, gates (SE), concat and hard-swish."""
    out = {}
    for name in ("resnet18", "mobilenet_v3_small", "squeezenet1_0"):
        torch.manual_seed(0)
        model = randomize_bn(torchvision.models.get_model(name), input_shape=(2, 3, 64, 64))
        out[name] = (model, canonc.canonize(model, torch.randn(1, 3, 64, 64), verify=False).module)
    return out


@pytest.mark.parametrize("method", RULE_METHODS)
def test_no_module_of_a_canonized_model_is_missed(canonized, method):
    for name, (_, module) in canonized.items():
        composite = get_method(method).composite(module, get_method(method).resolve({}))
        assert uncovered(module, composite) == [], name
        kinds = {type(m) for m in module.modules()}
        assert not any(issubclass(k, nn.modules.batchnorm._BatchNorm) for k in kinds), name


def test_the_test_models_contain_the_special_modules(canonized):
    kinds = {type(m).__name__ for _, module in canonized.values() for m in module.modules()}
    assert {"Sum", "Gate", "Concat", "Hardswish", "AdaptiveAvgPool2d"} <= kinds


def test_original_models_are_flagged(canonized):
    original = canonized["resnet18"][0]
    problems = uncovered(original, EpsilonPlus())
    assert any("bn1 (BatchNorm2d)" in p for p in problems)
    with pytest.raises(InputError, match="BatchNorm"):
        Explainer(original, "lrp-epsilon-plus")
    relevance = explain(original, torch.randn(1, 3, 64, 64), 1, "lrp-epsilon-plus", strict=False)
    assert relevance.shape == (1, 64, 64) and torch.isfinite(relevance).all()


def test_unknown_leaf_module_is_flagged():
    class Odd(nn.Module):
        def forward(self, x):
            return x * 2

    model = nn.Sequential(nn.Conv2d(3, 4, 3), Odd(), nn.Flatten(), nn.Linear(4, 2)).eval()
    composite = get_method("eb").composite(model, get_method("eb").resolve({}))
    assert uncovered(model, composite) == ["1 (Odd): unknown module type; no rule is known for it"]


class _Gated(nn.Module):
    """``fc(conv(x) * gate(x))`` with canonc's Gate; the gate gets no relevance."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 3, 1)
        self.gate_conv = nn.Conv2d(2, 3, 1)
        self.sigmoid = nn.Sigmoid()
        self.gate = cnn.Gate()
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(3 * 4 * 4, 2)

    def forward(self, x):
        g = self.sigmoid(self.gate_conv(x).mean((2, 3), keepdim=True))
        return self.fc(self.flatten(self.gate(self.conv(x), g)))


def test_gate_sends_all_relevance_to_the_signal():
    torch.manual_seed(0)
    model = _Gated().double().eval()
    x = torch.randn(2, 2, 4, 4, dtype=torch.float64)
    seen: dict = {}
    with Explainer(model, "lrp-epsilon", strict=False, epsilon=1e-12) as explainer:
        for key in ("gate", "conv", "gate_conv"):  # after the rules: outputs carry relevance
            _capture(getattr(model, key), seen, key)
        explainer(x, [0, 1])
    assert torch.equal(seen["gate"], seen["conv"])  # signal's relevance = the gated output's relevance
    assert seen["gate_conv"].abs().max() == 0  # the gate gets none


def test_mul_splits_relevance_evenly():
    class Product(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b, self.mul, self.fc = nn.Linear(3, 4), nn.Linear(3, 4), cnn.Mul(), nn.Linear(4, 2)

        def forward(self, x):
            return self.fc(self.mul(self.a(x), self.b(x)))

    torch.manual_seed(0)
    model = Product().double().eval()
    seen: dict = {}
    with Explainer(model, "lrp-epsilon") as explainer:
        for key in ("a", "b", "mul"):
            _capture(getattr(model, key), seen, key)
        explainer(torch.randn(2, 3, dtype=torch.float64), 0)
    assert torch.allclose(seen["a"], seen["mul"] / 2) and torch.allclose(seen["b"], seen["mul"] / 2)


def test_thresh_relu_passes_relevance_through():
    act = cnn.ThreshReLU(2)
    act.tau.copy_(torch.tensor([0.5, -0.5]))
    model = nn.Sequential(act, nn.Flatten(), nn.Linear(2 * 3 * 3, 2)).double().eval()
    x = torch.randn(1, 2, 3, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    seen: dict = {}
    with Explainer(model, "lrp-epsilon") as explainer:
        _capture(model[0], seen, "out")
        relevance = explainer(x, 0, keep_channels=True)
    clamped = x < torch.tensor([0.5, -0.5], dtype=x.dtype).view(1, 2, 1, 1)
    assert clamped.any()  # clamped units receive relevance at tau and pass it on unchanged
    assert torch.equal(relevance, seen["out"])
