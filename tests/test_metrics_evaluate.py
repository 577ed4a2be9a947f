"""evaluate_metrics: the registry, one shared base explanation, batch-size independence, bad input."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from canonc.errors import InputError
from canonc.xai import Explainer
from canonc.xai.metrics import FAMILIES, METRICS, POSTER_METRICS, aggregate, evaluate_metrics

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: one thread is fastest on shared cores

SETTINGS = {"region-perturbation": {"patch_size": 4, "regions": 6}, "pixel-flipping": {"features_in_step": 64},
            "faithfulness-correlation": {"runs": 4, "subset_size": 16}, "top-k-intersection": {"k": 20},
            "avg-sensitivity": {"n_samples": 2}, "max-sensitivity": {"n_samples": 2}}


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AvgPool2d(2), nn.Flatten(),
                         nn.Linear(4 * 8 * 8, 4)).double().eval()


def _batch(n: int = 6) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(n, 3, 16, 16, generator=gen, dtype=torch.float64)
    masks = torch.zeros(n, 1, 16, 16, dtype=torch.bool)
    masks[:, :, 3:11, 4:12] = True
    return x, torch.arange(n) % 4, masks


def test_registry_names_families_and_directions():
    assert set(METRICS) == {"sparseness", "region-perturbation", "rra", "rma", "avg-sensitivity", "random-logit",
                            "pixel-flipping", "faithfulness-correlation", "complexity", "pointing-game",
                            "top-k-intersection", "max-sensitivity", "mprt"}
    assert POSTER_METRICS == ("sparseness", "region-perturbation", "rra", "rma", "avg-sensitivity", "random-logit")
    assert {m.family for m in METRICS.values()} == set(FAMILIES)
    # the poster's arrows: ↑ complexity, faithfulness, RRA, RMA; ↓ robustness, randomisation
    assert [METRICS[n].higher_is_better for n in POSTER_METRICS] == [True, True, True, True, False, False]
    assert sorted(n for n, m in METRICS.items() if m.needs_masks) == ["pointing-game", "rma", "rra",
                                                                     "top-k-intersection"]


def test_all_metrics_are_independent_of_batch_size():
    model, (x, t, masks) = _model(), _batch()
    whole = evaluate_metrics(model, x, t, metrics=list(METRICS), masks=masks, batch_size=64, settings=SETTINGS)
    assert list(whole) == list(METRICS)
    for name, scores in whole.items():
        assert scores.shape == (6,) and scores.dtype == torch.float64 and scores.device.type == "cpu", name
        assert not scores.isnan().any(), name
    for batch_size in (1, 4):
        chunked = evaluate_metrics(model, x, t, metrics=list(METRICS), masks=masks, batch_size=batch_size,
                                   settings=SETTINGS)
        for name in METRICS:
            assert chunked[name].tolist() == pytest.approx(whole[name].tolist(), abs=1e-9), (name, batch_size)


def test_base_explanation_is_computed_once_and_shared(monkeypatch):
    explained: list[int] = []
    original = Explainer.__call__

    def counting(self, inputs, targets, **kwargs):
        explained.append(len(inputs))
        return original(self, inputs, targets, **kwargs)

    monkeypatch.setattr(Explainer, "__call__", counting)
    model, (x, t, masks) = _model(), _batch()
    timings: dict[str, float] = {}
    evaluate_metrics(model, x, t, masks=masks, batch_size=6, settings={"avg-sensitivity": {"n_samples": 3}},
                     timings=timings)
    # 6 base maps + 6 · 3 noisy maps + 6 other-class maps, 6 inputs per call (quantus with
    # a_batch=None would explain the 6 base maps again in each of its six metrics)
    assert sum(explained) == 6 * (1 + 3 + 1) and max(explained) == 6
    assert set(timings) == {"explanation", *POSTER_METRICS}


def test_settings_and_seed_reach_the_metrics():
    model, (x, t, masks) = _model(), _batch(3)
    a = evaluate_metrics(model, x, t, metrics=["avg-sensitivity"], settings={"avg-sensitivity": {"n_samples": 2}})
    b = evaluate_metrics(model, x, t, metrics=["avg-sensitivity"], seed=1,
                         settings={"avg-sensitivity": {"n_samples": 2}})
    assert not torch.equal(a["avg-sensitivity"], b["avg-sensitivity"])
    rra = evaluate_metrics(model, x, t, metrics=["rra"], masks=masks, settings={"rra": {"absolute": False}})
    assert rra["rra"].shape == (3,)


def test_aggregate_ignores_nan():
    assert aggregate({"rra": torch.tensor([0.5, float("nan"), 1.0], dtype=torch.float64)}) == {"rra": 0.75}
    assert math.isnan(aggregate({"rma": torch.tensor([float("nan")])})["rma"])


def test_bad_input_is_refused_with_one_line():
    model, (x, t, masks) = _model(), _batch(2)
    cases = [
        ({"metrics": ["gini"]}, "unknown metric 'gini'; choose one of sparseness"),
        ({"metrics": ["rra"], "masks": None}, "rra need ground-truth masks"),
        ({"settings": {"region-perturbation": {"patch": 4}}}, "metric 'region-perturbation' has no setting 'patch'"),
        ({"settings": {"random-logit": {"stream": "x"}}}, "has no setting 'stream'"),
        ({"method": "lrp-zero"}, "unknown method 'lrp-zero'"),
    ]
    for kwargs, message in cases:
        with pytest.raises(InputError, match=message):
            evaluate_metrics(model, x, t, **{"masks": masks, **kwargs})
    with pytest.raises(InputError, match="got 3 targets for 2 inputs"):
        evaluate_metrics(model, x, torch.tensor([0, 1, 2]), masks=masks)
    with pytest.raises(InputError, match="train mode"):
        evaluate_metrics(model.train(), x, t, masks=masks)
