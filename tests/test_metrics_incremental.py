"""Incremental forward passes (perturbation curves): window arithmetic, equality with full passes
on canonized zoo models, the work they save, and the checked fallback."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

import canonc
from canonc.xai.metrics import incremental
from canonc.xai.metrics.faithfulness import region_perturbation
from canonc.xai.metrics.incremental import IncrementalForward, _window, pays_off
from models.zoo import randomize_bn

ZOO = ("vgg11_bn", "resnet18", "densenet121", "efficientnet_b0", "mobilenet_v3_small", "squeezenet1_0")


def _canonized(name: str, size: int) -> nn.Module:
    torch.manual_seed(0)
    model = randomize_bn(torchvision.models.get_model(name), input_shape=(2, 3, size, size))
    return canonc.canonize(model, torch.randn(1, 3, size, size), verify=False).module.eval()


@pytest.mark.parametrize(("module", "box", "out_size", "expected"), [
    (nn.Conv2d(1, 1, 3, padding=1), [5, 7, 0, 2], (10, 10), [4, 8, 0, 3]),
    (nn.Conv2d(1, 1, 3, stride=2, padding=1), [5, 7, 0, 1], (5, 5), [2, 4, 0, 1]),
    (nn.Conv2d(1, 1, 3, dilation=2, padding=2), [5, 6, 9, 10], (10, 10), [3, 8, 7, 10]),
    (nn.MaxPool2d(2), [5, 7, 3, 4], (5, 5), [2, 4, 1, 2]),
    (nn.Conv2d(1, 1, 3, padding=1), [4, 4, 0, 0], (10, 10), [0, 0, 0, 0]),  # no change stays no change
])
def test_window_reach_by_hand(module, box, out_size, expected):
    assert _window(module).reach(torch.tensor([box]), out_size).tolist() == [expected]


def test_windows_of_unusable_layers_are_refused():
    assert _window(nn.Conv2d(1, 1, 3, padding="same")) is None
    assert _window(nn.MaxPool2d(3, 2, ceil_mode=True)) is None
    assert _window(nn.AvgPool2d(3, 1, 1, count_include_pad=False)) is None
    assert _window(nn.Linear(3, 3)) is None


def _patched(x: torch.Tensor, step: int, size: int) -> torch.Tensor:
    """Step ``step``: one new patch per sample (corners and edges included); sample 0 never changes."""
    out = x.clone()
    gen = torch.Generator().manual_seed(step)
    for i in range(1, len(x)):
        top, left = torch.randint(-size // 2, x.shape[2] - size // 2, (2,), generator=gen).clamp(min=0).tolist()
        out[i, :, top:top + size, left:left + size] = -1.5
    return out


@pytest.mark.parametrize("name", ZOO)
def test_every_step_equals_the_full_forward_pass(name):
    model = _canonized(name, 64)
    x = torch.randn(4, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    engine = IncrementalForward(model, x)
    with torch.no_grad():
        full = model(x)
        # float32 rounding: channels-last caches and cropped convolutions sum in another order; through
        # DenseNet-121's 120 layers (random weights) that reaches 5e-5 of the largest logit
        assert (engine.output() - full).abs().max() <= incremental.CHECK_RTOL * full.abs().max()
        for step in range(1, 6):
            x = _patched(x, step, 6)
            out, full = engine.step(x), model(x)
            assert (out - full).abs().max() <= incremental.CHECK_RTOL * full.abs().max(), (name, step)


def test_work_share_of_a_patch_step():
    """VGG-11 at 128 px, one 8-px patch: a small part of the work; no change: none; every pixel: all."""
    model = _canonized("vgg11_bn", 128)
    x = torch.randn(1, 3, 128, 128, generator=torch.Generator().manual_seed(1))
    engine = IncrementalForward(model, x)
    engine.step(x.clone())
    assert engine.work_share() == 0.0
    patch = x.clone()
    patch[:, :, 60:68, 60:68] = 0.0
    engine.step(patch)
    assert 0.05 < engine.work_share() < 0.5
    engine.step(torch.zeros_like(x))
    assert engine.work_share() == pytest.approx(1.0)
    assert pays_off(model, x, patch)
    assert not pays_off(model, x, torch.zeros_like(x))
    assert not pays_off(nn.Sequential(nn.Conv2d(3, 2, 3), nn.Flatten()), x, patch)  # not a graph module
    tiny = nn.Sequential(nn.Conv2d(3, 8, 5, stride=4, padding=2), nn.ReLU(), nn.AvgPool2d(8), nn.Flatten(),
                         nn.Linear(8 * 4 * 4, 10)).eval()
    tiny = canonc.canonize(tiny, x, verify=False).module
    small = IncrementalForward(tiny, x)
    small.step(patch)
    assert small.work_share() < 0.5  # a small share of its work, but too little work: full passes are cheaper
    assert not pays_off(tiny, x, patch)


def _region_curves(model: nn.Module, batch_size: int) -> tuple[torch.Tensor, int]:
    """Region-perturbation curves of 5 images and the number of forward calls on the model's root."""
    gen = torch.Generator().manual_seed(2)
    x, maps = torch.randn(5, 3, 96, 96, generator=gen), torch.rand(5, 96, 96, generator=gen)
    calls = [0]
    handle = model.register_forward_pre_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    try:
        curves = region_perturbation(model, x, torch.tensor([1, 2, 3, 4, 5]), maps, patch_size=8, regions=12,
                                     batch_size=batch_size, return_curve=True)
    finally:
        handle.remove()
    return curves, calls[0]


def test_region_perturbation_takes_the_incremental_path_with_the_same_curves(monkeypatch):
    model = _canonized("vgg11_bn", 96)
    fast, fast_calls = _region_curves(model, 4)
    monkeypatch.setattr(incremental, "FULL_WINDOW", -1.0)  # no step pays off: full passes only
    full, full_calls = _region_curves(model, 4)
    assert fast_calls == 2  # one check per batch of 4 samples
    assert full_calls == 2 + 5 * 13 // 4 + 1  # the layout probe, then 65 perturbed inputs, 4 per pass
    assert full.abs().max() > 0
    assert (fast - full).abs().max() <= 1e-5 * full.abs().max()


def test_region_perturbation_hardly_depends_on_the_batch_size():
    model = _canonized("vgg11_bn", 96)
    whole, _ = _region_curves(model, 5)
    single, _ = _region_curves(model, 1)
    assert (whole - single).abs().max() <= 1e-5 * whole.abs().max()


def test_a_wrong_incremental_pass_is_caught_and_recomputed(monkeypatch):
    model = _canonized("vgg11_bn", 96)
    monkeypatch.setattr(incremental, "FULL_WINDOW", -1.0)
    full, _ = _region_curves(model, 4)
    monkeypatch.undo()
    real_step = IncrementalForward.step
    monkeypatch.setattr(IncrementalForward, "step", lambda self, x: real_step(self, x).add_(0.5))
    with pytest.warns(RuntimeWarning, match="incremental forward passes differ"):
        caught, _ = _region_curves(model, 4)
    assert torch.equal(caught, full)
