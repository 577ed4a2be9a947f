"""With ``quantus_compat=True`` canonc's metrics equal quantus 0.6.0 within 1e-5.

Both sides see the same model, inputs, targets, masks, settings and explanations: quantus
gets the canonc/zennit maps as ``a_batch`` and, for the metrics that explain again (noisy
inputs, other classes, randomised models), an ``explain_func`` that calls the same
:func:`canonc.xai.explain` on the model it is given.

Randomness: quantus draws Avg-Sensitivity's noise and the uniform baseline of Region
Perturbation from numpy's global random state. The test seeds that state with ``s`` before
calling quantus and gives canonc ``noise_source=np.random.RandomState(s)``, which yields the
same stream, so both sides see identical draws. Random Logit reseeds numpy itself with its
``seed`` at every chunk; canonc reproduces that from the seed alone.

Region Perturbation is compared curve by curve (quantus's AUC helper calls ``np.trapz``,
which numpy 2.4 removed). quantus runs its models in float32 (``torch.Tensor(x)``), so the
model is float32; the maps are handed over as float64 so that skimage's SSIM runs in float64.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from torch import nn

from canonc.xai import explain
from canonc.xai.metrics import METRICS, evaluate_metrics, region_perturbation

quantus = pytest.importorskip("quantus")

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny model: one thread is fastest on shared cores

N, SIZE, CLASSES, BATCH = 6, 24, 5, 4  # BATCH < N: quantus's chunking is part of what is compared


@pytest.fixture(scope="module")
def case():
    """A small float32 conv net, inputs, targets, masks, its LRP-ε+ maps and quantus's explain_func."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, 6, 3, padding=1), nn.ReLU(),
                          nn.AvgPool2d(2), nn.Flatten(), nn.Linear(6 * 12 * 12, CLASSES)).eval()
    x = torch.randn(N, 3, SIZE, SIZE)
    y = model(x).argmax(1)
    masks = torch.zeros(N, 1, SIZE, SIZE, dtype=torch.bool)
    masks[:, :, 5:17, 3:15] = True
    maps = explain(model, x, y)

    def explain_func(model: nn.Module, inputs: np.ndarray, targets: np.ndarray, **kwargs: object) -> np.ndarray:
        # the model quantus passes: MPRT explains randomised copies
        return explain(model, torch.as_tensor(inputs), torch.as_tensor(targets), strict=False).double().numpy()

    return model, x, y, masks, maps, explain_func


def _quantus(metric, case, **kwargs) -> np.ndarray:
    model, x, y, masks, maps, explain_func = case
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scores = metric(model, x.numpy(), y.numpy(), a_batch=maps.double().numpy()[:, None],
                        s_batch=masks.numpy().astype(np.float64), explain_func=explain_func, device="cpu",
                        batch_size=BATCH, **kwargs)
    return np.asarray(scores, dtype=np.float64)


def _canonc(name: str, case, settings: dict | None = None, *, compat: bool = True) -> np.ndarray:
    model, x, y, masks, *_ = case
    scores = evaluate_metrics(model, x, y, metrics=[name], masks=masks, batch_size=BATCH,
                              settings={name: settings or {}}, quantus_compat=compat)
    return scores[name].numpy()


def test_sparseness(case):
    expected = _quantus(quantus.Sparseness(disable_warnings=True), case)
    np.testing.assert_allclose(_canonc("sparseness", case), expected, rtol=0, atol=1e-5)


def test_relevance_rank_and_mass_accuracy(case):
    rra = _quantus(quantus.RelevanceRankAccuracy(disable_warnings=True), case)
    rma = _quantus(quantus.RelevanceMassAccuracy(disable_warnings=True), case)
    np.testing.assert_allclose(_canonc("rra", case), rra, rtol=0, atol=1e-5)
    np.testing.assert_allclose(_canonc("rma", case), rma, rtol=0, atol=1e-5)
    assert not np.allclose(rma, _canonc("rma", case, {"absolute": True}))  # quantus keeps the sign


@pytest.mark.parametrize(("baseline", "order"), [("black", "morf"), ("mean", "morf"), ("uniform", "random")])
def test_region_perturbation_curves(case, baseline, order):
    model, x, y, _, maps, *_ = case
    np.random.seed(11)
    expected = _quantus(quantus.RegionPerturbation(patch_size=5, regions_evaluation=12, perturb_baseline=baseline,
                                                   order=order, disable_warnings=True), case)
    curves = region_perturbation(model, x, y, maps, patch_size=5, regions=12, baseline=baseline, order=order,
                                 batch_size=BATCH, return_curve=True, quantus_compat=True,
                                 noise_source=np.random.RandomState(11))
    assert curves.shape == expected.shape == (N, 12)
    np.testing.assert_allclose(curves.numpy(), expected, rtol=0, atol=1e-5)


def test_avg_sensitivity(case):
    for normalise in (False, True):  # quantus's default, and its whole-array normalisation
        np.random.seed(5)
        expected = _quantus(quantus.AvgSensitivity(nr_samples=3, normalise=normalise, disable_warnings=True), case)
        actual = _canonc("avg-sensitivity", case, {"n_samples": 3, "normalise": normalise,
                                                   "noise_source": np.random.RandomState(5)})
        np.testing.assert_allclose(actual, expected, rtol=0, atol=1e-5)


def test_random_logit(case):
    expected = _quantus(quantus.RandomLogit(num_classes=CLASSES, seed=42, disable_warnings=True), case)
    np.testing.assert_allclose(_canonc("random-logit", case, {"seed": 42}), expected, rtol=0, atol=1e-5)
    own = _canonc("random-logit", case, {"seed": 42}, compat=False)  # 2-D SSIM, per-sample draws
    assert np.abs(own - expected).max() > 1e-3


@pytest.mark.parametrize(("name", "metric", "settings"), [
    ("complexity", lambda: quantus.Complexity(disable_warnings=True), {}),
    ("pointing-game", lambda: quantus.PointingGame(disable_warnings=True), {}),
    ("top-k-intersection", lambda: quantus.TopKIntersection(k=100, disable_warnings=True), {"k": 100}),
    ("pixel-flipping", lambda: quantus.PixelFlipping(features_in_step=144, disable_warnings=True),
     {"features_in_step": 144}),
    ("faithfulness-correlation", lambda: quantus.FaithfulnessCorrelation(nr_runs=8, subset_size=40,
                                                                         return_aggregate=False,
                                                                         disable_warnings=True),
     {"runs": 8, "subset_size": 40}),
    ("max-sensitivity", lambda: quantus.MaxSensitivity(nr_samples=2, disable_warnings=True), {"n_samples": 2}),
    ("mprt", lambda: quantus.MPRT(return_average_correlation=True, seed=3, disable_warnings=True), {"seed": 3}),
])
def test_further_metrics(case, name, metric, settings):
    np.random.seed(7)
    expected = _quantus(metric(), case)
    if name == "pixel-flipping":  # quantus returns the curve; canonc's compat score is np.trapz of it
        expected = expected.sum(1) - (expected[:, 0] + expected[:, -1]) / 2
    if "noise_source" in METRICS[name].settings:  # the same numpy stream quantus drew from
        settings = {**settings, "noise_source": np.random.RandomState(7)}
    np.testing.assert_allclose(_canonc(name, case, settings), expected, rtol=0, atol=1e-5)
