"""Region Perturbation, Pixel-Flipping and Faithfulness Correlation on a linear model whose
curves are known in closed form: the logit of class 0 is the sum of all input values."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from canonc.errors import InputError
from canonc.xai.metrics import faithfulness_correlation, pixel_flipping, region_perturbation
from canonc.xai.metrics.common import forward_layout

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: one thread is fastest on shared cores


def _sum_model(n_values: int) -> nn.Module:
    """Logit 0 = Σ x (every channel and pixel), logit 1 = 0."""
    model = nn.Sequential(nn.Flatten(), nn.Linear(n_values, 2, bias=False)).double().eval()
    with torch.no_grad():
        model[1].weight.zero_()
        model[1].weight[0] = 1.0
    return model


def _patch_image() -> tuple[torch.Tensor, torch.Tensor]:
    """A 2-channel 4×4 image constant on each 2×2 patch, and a map ranking patches P1, P2, P3, P0.

    Patches (row-major) P0..P3 hold 1, 2, 3, 4 in channel 0 and 10, 30, 20, 40 in channel 1.
    """
    values = torch.tensor([[[1.0, 2.0], [3.0, 4.0]], [[10.0, 30.0], [20.0, 40.0]]], dtype=torch.float64)
    x = values.repeat_interleave(2, 1).repeat_interleave(2, 2)[None]
    relevance = torch.tensor([[0.1, 0.4], [0.3, 0.2]], dtype=torch.float64)
    return x, relevance.repeat_interleave(2, 0).repeat_interleave(2, 1)[None]


def test_region_perturbation_curve_in_closed_form():
    x, relevance = _patch_image()
    model, target = _sum_model(32), torch.tensor([0])
    # Black = per-channel minimum (1, 10); removing a patch lowers Σx by 4 · Σ_c (x_c − min_c):
    # P1: 4 · (1 + 20) = 84, P2: 4 · (2 + 10) = 48, P3: 4 · (3 + 30) = 132, P0: 0.
    curve = region_perturbation(model, x, target, relevance, patch_size=2, regions=4, softmax=False,
                                return_curve=True)
    assert curve.tolist() == [[84.0, 132.0, 264.0, 264.0]]
    aopc = region_perturbation(model, x, target, relevance, patch_size=2, regions=4, softmax=False)
    assert aopc.item() == pytest.approx((0 + 84 + 132 + 264 + 264) / 5, abs=1e-12)
    # lerf reverses the order; regions beyond the number of patches are clipped to 4.
    lerf = region_perturbation(model, x, target, relevance, patch_size=2, regions=9, order="lerf", softmax=False,
                               return_curve=True)
    assert lerf.tolist() == [[0.0, 132.0, 180.0, 264.0]]


def test_region_perturbation_quantus_black_and_trapezoid():
    x, relevance = _patch_image()
    # quantus's black is the minimum over all channels (1): P1: 4 · (1 + 29) = 120, P2: 84, P3: 168, P0: 36.
    curve = region_perturbation(_sum_model(32), x, torch.tensor([0]), relevance, patch_size=2, regions=4,
                                softmax=False, return_curve=True, quantus_compat=True)
    assert curve.tolist() == [[120.0, 204.0, 372.0, 408.0]]
    score = region_perturbation(_sum_model(32), x, torch.tensor([0]), relevance, patch_size=2, regions=4,
                                softmax=False, quantus_compat=True)
    assert score.item() == pytest.approx(1104 - (120 + 408) / 2, abs=1e-12)


def test_region_perturbation_mean_and_blur_baselines():
    x, relevance = _patch_image()
    model, target = _sum_model(32), torch.tensor([0])
    # mean per channel: 2.5 and 25; P1: 4 · (−0.5 + 5) = 18, then P2: 4 · (0.5 − 5) = −18, P3: 4 · (1.5 + 15) = 66
    curve = region_perturbation(model, x, target, relevance, patch_size=2, regions=3, baseline="mean",
                                softmax=False, return_curve=True)
    assert curve[0].tolist() == pytest.approx([18.0, 0.0, 66.0], abs=1e-12)
    # A 1×1 box blur is the image itself: nothing changes.
    blur = region_perturbation(model, x, target, relevance, patch_size=2, regions=3, baseline="blur",
                               blur_kernel_size=1, softmax=False, return_curve=True)
    assert blur.abs().max().item() == 0.0


def test_region_perturbation_grid_pads_like_quantus():
    # 5×5 image, patch 2: padded to 6×6 with (0, 1) on each axis → a 3×3 grid; the one relevant
    # pixel (4, 4) lies in the last patch, which covers only that pixel of the image.
    x = torch.ones(1, 1, 5, 5, dtype=torch.float64)
    x[0, 0, 0, 0] = 0.0
    relevance = torch.zeros(1, 5, 5, dtype=torch.float64)
    relevance[0, 4, 4] = 1.0
    curve = region_perturbation(_sum_model(25), x, torch.tensor([0]), relevance, patch_size=2, regions=1,
                                softmax=False, return_curve=True)
    assert curve.tolist() == [[1.0]]


def test_pixel_flipping_curve_in_closed_form():
    x = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]], dtype=torch.float64)
    relevance = torch.tensor([[[0.4, 0.1], [0.3, 0.2]]], dtype=torch.float64)
    # order 1, 3, 4, 2 replaced by the minimum 1: Σx = 10 → 10, 8, 5, 4
    kwargs = {"features_in_step": 1, "softmax": False}
    curve = pixel_flipping(_sum_model(4), x, torch.tensor([0]), relevance, return_curve=True, **kwargs)
    assert curve.tolist() == [[10.0, 8.0, 5.0, 4.0]]
    score = pixel_flipping(_sum_model(4), x, torch.tensor([0]), relevance, **kwargs)
    assert score.item() == pytest.approx((37 - (10 + 4) / 2) / 4, abs=1e-12)  # trapezoid over 0..4 steps / 4
    compat = pixel_flipping(_sum_model(4), x, torch.tensor([0]), relevance, quantus_compat=True, **kwargs)
    assert compat.item() == pytest.approx(27 - (10 + 4) / 2, abs=1e-12)  # np.trapz of quantus's curve


def test_faithfulness_correlation_is_one_for_exact_contributions():
    # For Σx with a black baseline the drop of a removed subset is exactly its Σ_c (x − min_c):
    # relevance equal to that per pixel correlates perfectly, its negation anti-correlates.
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(3, 2, 6, 6, generator=gen, dtype=torch.float64)
    contribution = (x - x.amin((2, 3), keepdim=True)).sum(1)
    kwargs = {"runs": 12, "subset_size": 5, "batch_size": 7}
    scores = faithfulness_correlation(_sum_model(72), x, torch.zeros(3, dtype=torch.long), contribution, **kwargs)
    assert scores.tolist() == pytest.approx([1.0] * 3, abs=1e-12)
    flipped = faithfulness_correlation(_sum_model(72), x, torch.zeros(3, dtype=torch.long), -contribution, **kwargs)
    assert flipped.tolist() == pytest.approx([-1.0] * 3, abs=1e-12)


def test_random_draws_do_not_depend_on_batch_size():
    gen = torch.Generator().manual_seed(1)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 64, 3))
    model = model.double().eval()
    for p in model.parameters():
        p.data = torch.randn(p.shape, generator=gen, dtype=torch.float64)
    x = torch.randn(5, 3, 8, 8, generator=gen, dtype=torch.float64)
    relevance = torch.randn(5, 8, 8, generator=gen, dtype=torch.float64)
    targets = torch.arange(5) % 3
    for metric, kwargs in ((region_perturbation, {"patch_size": 3, "regions": 5, "order": "random",
                                                  "baseline": "uniform", "seed": 3}),
                           (pixel_flipping, {"features_in_step": 16, "baseline": "uniform", "seed": 3}),
                           (faithfulness_correlation, {"runs": 6, "subset_size": 10, "seed": 3})):
        whole = metric(model, x, targets, relevance, batch_size=64, **kwargs)
        for batch_size in (2, 3):
            chunked = metric(model, x, targets, relevance, batch_size=batch_size, **kwargs)
            assert chunked.tolist() == pytest.approx(whole.tolist(), abs=1e-12)
        other_seed = metric(model, x, targets, relevance, batch_size=64, **{**kwargs, "seed": 4})
        assert not torch.allclose(other_seed, whole)


class _RawFlatten(nn.Module):
    """A conv net that flattens by memory order, as a hand-written ``view`` or ``as_strided`` does."""

    def __init__(self, raises: bool) -> None:
        super().__init__()
        self.raises = raises
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 64, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        if self.raises:
            return self.fc(y.view(len(y), -1))  # RuntimeError on a channels_last y
        return self.fc(torch.as_strided(y, (len(y), y[0].numel()), (y[0].numel(), 1)))  # silently reordered


class _Contiguous(nn.Module):
    """``model`` fed contiguous inputs whatever their layout (its first conv then runs NCHW)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x.contiguous())


def test_forward_passes_take_channels_last_images_only_where_the_model_gives_the_same_outputs():
    torch.manual_seed(0)
    x = torch.rand(6, 3, 8, 8)
    convnet = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 64, 3)).eval()
    viewing, strided = _RawFlatten(raises=True).eval(), _RawFlatten(raises=False).eval()
    assert forward_layout(convnet, x) == torch.channels_last
    assert forward_layout(viewing, x) == torch.contiguous_format
    assert forward_layout(strided, x) == torch.contiguous_format
    assert forward_layout(nn.Linear(8, 3), torch.rand(6, 8)) == torch.contiguous_format
    relevance, targets = torch.rand(6, 8, 8), torch.arange(6) % 3
    kwargs = {"patch_size": 2, "regions": 6, "return_curve": True, "batch_size": 4}
    layouts = []
    convnet[0].register_forward_pre_hook(
        lambda _, args: layouts.append(args[0].is_contiguous(memory_format=torch.channels_last)) if len(args[0]) > 1
        else None)
    for model, tolerance in ((convnet, 1e-6), (viewing, 0.0), (strided, 0.0)):
        curve = region_perturbation(model, x, targets, relevance, **kwargs)
        if model is convnet:
            assert layouts == [True] * 11  # 6 samples × 7 steps (0 .. 6) in batches of 4
        reference = region_perturbation(_Contiguous(model), x, targets, relevance, **kwargs)
        assert curve.shape == (6, 6)
        assert (curve - reference).abs().max().item() <= tolerance


def test_bad_settings_are_refused():
    x, relevance = _patch_image()
    model, target = _sum_model(32), torch.tensor([0])
    with pytest.raises(InputError, match="unknown baseline 'white'"):
        region_perturbation(model, x, target, relevance, baseline="white")
    with pytest.raises(InputError, match="unknown baseline 'blur'"):
        region_perturbation(model, x, target, relevance, baseline="blur", quantus_compat=True)
    with pytest.raises(InputError, match="unknown order 'top'"):
        region_perturbation(model, x, target, relevance, order="top")
    with pytest.raises(InputError, match=r"relevance \(1, 3, 3\) does not match inputs \(1, 2, 4, 4\)"):
        region_perturbation(model, x, target, relevance[:, :3, :3])
