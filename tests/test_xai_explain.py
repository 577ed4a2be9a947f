"""The batched API: shapes, targets, methods, reuse without copies, errors, GPU."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import canonc
from canonc.errors import InputError
from canonc.xai import METHODS, Explainer, explain


class _Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 6, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(6)
        self.conv2 = nn.Conv2d(6, 6, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(6)
        self.pool = nn.AdaptiveAvgPool2d(2)
        self.fc = nn.Linear(24, 5)

    def forward(self, x):
        h = torch.relu(self.bn1(self.conv1(x)))
        h = torch.relu(self.bn2(self.conv2(h)) + h)
        return self.fc(self.pool(h).flatten(1))


@pytest.fixture(scope="module")
def canonical():
    torch.manual_seed(0)
    model = _Net()
    for bn in (model.bn1, model.bn2):
        nn.init.uniform_(bn.running_mean, -1, 1)
        nn.init.uniform_(bn.running_var, 0.5, 2)
        nn.init.uniform_(bn.weight, 0.2, 2)
        nn.init.normal_(bn.bias)
    return canonc.canonize(model.double().eval(), torch.randn(1, 3, 12, 10, dtype=torch.float64)).module


def _x(n=3):
    return torch.randn(n, 3, 12, 10, generator=torch.Generator().manual_seed(0), dtype=torch.float64)


@pytest.mark.parametrize("method", list(METHODS))
def test_shapes_and_finite(canonical, method):
    relevance = explain(canonical, _x(), [0, 1, 4], method)
    assert relevance.shape == (3, 12, 10) and relevance.dtype == torch.float64
    assert torch.isfinite(relevance).all() and relevance.abs().sum() > 0
    full = explain(canonical, _x(), [0, 1, 4], method, keep_channels=True)
    assert full.shape == (3, 3, 12, 10)
    assert torch.allclose(full.sum(1), relevance)


def test_batched_equals_one_by_one(canonical):
    x = _x()
    batched = explain(canonical, x, [0, 1, 4], "lrp-epsilon-plus")
    for i, t in enumerate([0, 1, 4]):
        assert torch.allclose(explain(canonical, x[i:i + 1], t, "lrp-epsilon-plus")[0], batched[i])


def test_gradient_is_autograd(canonical):
    x = _x(1).requires_grad_(True)
    canonical(x)[0, 2].backward()
    assert torch.allclose(explain(canonical, x, 2, "gradient", keep_channels=True), x.grad)


def test_integrated_gradients_completeness(canonical):
    """Σ IG → f(x) − f(0) as the Riemann sum refines."""
    x = _x(1)
    with torch.no_grad():
        gap = (canonical(x)[0, 2] - canonical(torch.zeros_like(x))[0, 2]).item()
    errors = {}
    for n in (10, 80):
        ig = explain(canonical, x, 2, "integrated-gradients", n_iter=n, keep_channels=True)
        errors[n] = abs(ig.sum().item() - gap)
    assert errors[80] < errors[10] / 2
    assert errors[80] < 0.05 * ig.abs().sum().item()


def test_smoothgrad_one_iteration_is_noisy_gradient_and_seeded(canonical):
    a = explain(canonical, _x(1), 2, "smoothgrad", n_iter=3, seed=1)
    b = explain(canonical, _x(1), 2, "smoothgrad", n_iter=3, seed=1)
    c = explain(canonical, _x(1), 2, "smoothgrad", n_iter=3, noise_level=0.0)
    assert torch.equal(a, b)
    assert torch.allclose(c, explain(canonical, _x(1), 2, "gradient"))


def test_gamma_zero_is_lrp0(canonical):
    gamma0 = explain(canonical, _x(), 1, "lrp-gamma", gamma=0.0, stabilizer=1e-12)
    lrp0 = explain(canonical, _x(), 1, "lrp-epsilon", epsilon=1e-12, stabilizer=1e-12)
    assert torch.allclose(gamma0, lrp0, rtol=1e-8, atol=1e-10)
    per_group = explain(canonical, _x(), 1, "lrp-gamma", groups="2,classifier",
                        gamma={"conv1-2": 0.0, "classifier": 0.0}, stabilizer=1e-12)
    assert torch.allclose(per_group, lrp0, rtol=1e-8, atol=1e-10)
    assert not torch.allclose(explain(canonical, _x(), 1, "lrp-gamma", gamma={"conv2": 1.0}), lrp0)


def test_explainer_registers_once_and_leaves_no_trace(canonical):
    state = {k: v.clone() for k, v in canonical.state_dict().items()}
    ids = {k: id(v) for k, v in canonical.named_parameters()}
    with Explainer(canonical, "lrp-alpha2beta1") as explainer:
        hooks = sum(len(m._forward_hooks) for m in canonical.modules())
        first = explainer(_x(), 1)
        second = explainer(_x(), 1)
        assert sum(len(m._forward_hooks) for m in canonical.modules()) == hooks > 0
    assert torch.equal(first, second)
    assert sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in canonical.modules()) == 0
    assert all(torch.equal(v, state[k]) for k, v in canonical.state_dict().items())
    assert {k: id(v) for k, v in canonical.named_parameters()} == ids


def test_float32_inputs_follow_the_model(canonical):
    relevance = explain(canonical, _x().float(), 0)
    assert relevance.dtype == torch.float64


@pytest.mark.parametrize("call,message", [
    (lambda m: explain(m, _x(), 0, "lrp-nope"), "unknown method"),
    (lambda m: explain(m, _x(), 0, "eb", epsilon=1.0), "no parameter 'epsilon'"),
    (lambda m: explain(m, _x(), [0, 1], "eb"), "2 targets for 3 inputs"),
    (lambda m: explain(m, _x(), 9, "eb"), "out of range"),
    (lambda m: explain(m, _x(), 0, "lrp-gamma", gamma={"conv9": 1.0}), "conv9"),
])
def test_errors(canonical, call, message):
    with pytest.raises(InputError, match=message):
        call(canonical)


def test_train_mode_is_refused():
    model = nn.Sequential(nn.Conv2d(3, 2, 3), nn.Flatten(), nn.Linear(2 * 10 * 8, 2)).train()
    with pytest.raises(InputError, match="eval"):
        explain(model, _x().float(), 0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no GPU")
def test_gpu_equals_cpu(canonical):
    cpu = explain(canonical, _x(), [0, 1, 4], "lrp-epsilon-plus")
    gpu_model = canonical.to("cuda")
    try:
        gpu = explain(gpu_model, _x(), [0, 1, 4], "lrp-epsilon-plus")
    finally:
        canonical.to("cpu")
    assert gpu.device.type == "cuda"
    assert torch.allclose(gpu.cpu(), cpu, rtol=1e-9, atol=1e-12)
