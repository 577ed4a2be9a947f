"""Random Logit (SSIM) and Model Parameter Randomisation against independent computations."""

from __future__ import annotations

import pytest
import scipy.stats
import skimage.metrics
import torch
from torch import nn

from canonc.errors import InputError
from canonc.xai.metrics import model_parameter_randomisation, random_logit
from canonc.xai.metrics.similarity import average_ranks, ssim

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: one thread is fastest on shared cores

GEN = torch.Generator().manual_seed(0)
MAP_A = torch.rand(3, 9, 11, generator=GEN, dtype=torch.float64)
MAP_B = MAP_A + 0.3 * torch.rand(3, 9, 11, generator=GEN, dtype=torch.float64)


def _skimage(a: torch.Tensor, b: torch.Tensor) -> float:
    joint = torch.cat([a.flatten(), b.flatten()])
    return skimage.metrics.structural_similarity(a.numpy(), b.numpy(), data_range=float(joint.max() - joint.min()))


def test_ssim_equals_skimage_in_1d_and_2d():
    for i in range(3):
        assert ssim(MAP_A, MAP_B)[i].item() == pytest.approx(_skimage(MAP_A[i], MAP_B[i]), abs=1e-12)
        flat = ssim(MAP_A.flatten(1), MAP_B.flatten(1))[i].item()
        assert flat == pytest.approx(_skimage(MAP_A[i].flatten(), MAP_B[i].flatten()), abs=1e-12)
    assert ssim(MAP_A, MAP_A).tolist() == pytest.approx([1.0] * 3, abs=1e-15)
    with pytest.raises(InputError, match="at least 7 values per axis"):
        ssim(MAP_A[:, :5], MAP_B[:, :5])


def test_average_ranks_match_scipy():
    values = torch.tensor([[3.0, 1.0, 3.0, 0.0, 3.0, 1.0], [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]], dtype=torch.float64)
    expected = [scipy.stats.rankdata(row).tolist() for row in values.numpy()]
    assert average_ranks(values).tolist() == expected  # [[5, 2.5, 5, 1, 5, 2.5], [1 .. 6]]


def _class_maps(x: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Map A for class 0, map B for every other class (independent of the input)."""
    n = len(x)
    return torch.where((targets == 0)[:, None, None], MAP_A[0].expand(n, 9, 11), MAP_B[0].expand(n, 9, 11))


def test_random_logit_compares_with_another_class():
    x = torch.zeros(6, 1, 9, 11, dtype=torch.float64)
    scores = random_logit(_class_maps, x, torch.zeros(6, dtype=torch.long), num_classes=4, batch_size=4)
    a, b = MAP_A[0] / MAP_A[0].max(), MAP_B[0] / MAP_B[0].max()  # each map divided by its own max|a|
    assert scores.tolist() == pytest.approx([_skimage(a, b)] * 6, abs=1e-12)
    # a target of class 2: the other class is 0, 1 or 3 (never 2); class 0 gives SSIM(B, A), else 1
    scores = random_logit(_class_maps, x, torch.full((6,), 2), num_classes=4, seed=5, normalise=False)
    assert {round(s, 9) for s in scores.tolist()} == {1.0, round(_skimage(MAP_B[0], MAP_A[0]), 9)}


def test_random_logit_classes_do_not_depend_on_batch_size_unlike_quantus():
    x = torch.zeros(9, 1, 9, 11, dtype=torch.float64)
    targets = torch.tensor([1, 2, 3] * 3)
    def run(batch_size: int, compat: bool) -> list[float]:
        return random_logit(_class_maps, x, targets, num_classes=4, seed=1, batch_size=batch_size,
                            normalise=False, quantus_compat=compat).tolist()
    assert run(1, False) == run(4, False) == run(9, False)
    # quantus reseeds every chunk: with chunks of 1 every sample draws the same offset
    assert len(set(run(1, True))) == 1 and run(1, True) != run(9, True)
    with pytest.raises(InputError, match="at least 2 classes"):
        random_logit(_class_maps, x, targets * 0, num_classes=1)


def test_mprt_of_a_single_linear_layer():
    # The gradient of a linear model is its weight row: after re-initialising the one layer
    # (torch seed 1 + 1, as quantus), the score is the Spearman correlation of the |weights|.
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(2 * 4 * 4, 3)).double().eval()
    x = torch.rand(2, 2, 4, 4, dtype=torch.float64)
    targets = torch.tensor([0, 2])
    before = model[1].weight.detach().clone()
    torch.manual_seed(2)
    fresh = nn.Linear(32, 3, dtype=torch.float64)
    expected = [scipy.stats.spearmanr(before[t].reshape(2, 16).sum(0).abs(), fresh.weight[t].detach().reshape(
        2, 16).sum(0).abs())[0] for t in targets.tolist()]
    scores = model_parameter_randomisation(model, x, targets, method="gradient", seed=1)
    assert scores.tolist() == pytest.approx(expected, abs=1e-12)
    assert torch.equal(model[1].weight, before)  # the model itself is untouched
    compat = model_parameter_randomisation(model, x, targets, method="gradient", seed=1, quantus_compat=True)
    assert compat.tolist() == pytest.approx([(1 + e) / 2 for e in expected], abs=1e-12)
