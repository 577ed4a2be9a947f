"""Avg- and Max-Sensitivity with explanation functions whose change under noise is known."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from canonc.errors import InputError
from canonc.xai.metrics import avg_sensitivity, max_sensitivity
from canonc.xai.metrics.robustness import sensitivities

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: one thread is fastest on shared cores


def _channel_sum(x: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """A map that is the input's channel sum: noise ε per value moves each pixel by C·ε."""
    return x.sum(1)


def _inputs(n: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    return torch.rand(n, 3, 5, 5, generator=gen, dtype=torch.float64) + 0.5, torch.zeros(n, dtype=torch.long)


def test_constant_noise_gives_closed_form_sensitivity():
    # U(0.1, 0.1 + 1e-12) is the constant 0.1: a' − a = 0.3 everywhere, ‖a − a'‖ = 0.3 · 5.
    x, t = _inputs()
    settings = {"n_samples": 3, "lower_bound": 0.1, "upper_bound": 0.1 + 1e-12, "normalise": False}
    expected = (0.3 * 5 / x.sum(1).flatten(1).norm(dim=1)).tolist()
    assert avg_sensitivity(_channel_sum, x, t, **settings).tolist() == pytest.approx(expected, abs=1e-9)
    assert max_sensitivity(_channel_sum, x, t, **settings).tolist() == pytest.approx(expected, abs=1e-9)


def test_noise_free_explanation_has_zero_sensitivity():
    x, t = _inputs()
    fixed = torch.rand(5, 5, dtype=torch.float64)
    scores = avg_sensitivity(lambda inputs, targets: fixed.expand(len(inputs), 5, 5), x, t, n_samples=4)
    assert scores.tolist() == [0.0] * 4


def test_mean_and_max_over_draws():
    x, t = _inputs()
    changes = sensitivities(_channel_sum, x, t, n_samples=5, stream="avg-sensitivity")
    assert changes.shape == (4, 5)
    assert avg_sensitivity(_channel_sum, x, t, n_samples=5).tolist() == pytest.approx(changes.mean(1).tolist())
    maximum = sensitivities(_channel_sum, x, t, n_samples=5, stream="max-sensitivity").amax(1)
    assert max_sensitivity(_channel_sum, x, t, n_samples=5).tolist() == pytest.approx(maximum.tolist())


def test_noise_does_not_depend_on_batch_size():
    x, t = _inputs(5)
    whole = avg_sensitivity(_channel_sum, x, t, n_samples=3, batch_size=64, seed=2)
    for batch_size in (1, 4):
        chunked = avg_sensitivity(_channel_sum, x, t, n_samples=3, batch_size=batch_size, seed=2)
        assert chunked.tolist() == pytest.approx(whole.tolist(), abs=1e-15)
    assert not torch.allclose(avg_sensitivity(_channel_sum, x, t, n_samples=3, seed=3), whole)


def test_compat_normalises_over_the_whole_batch():
    # quantus divides the given maps by one maximum over all samples, so with normalise=True
    # sample 0's score depends on its neighbours; canonc's per-sample default does not.
    x, t = _inputs(3)
    x[1] *= 10
    settings = {"n_samples": 2, "normalise": True}
    alone = avg_sensitivity(_channel_sum, x[:1], t[:1], quantus_compat=True,
                            noise_source=np.random.RandomState(0), **settings)
    together = avg_sensitivity(_channel_sum, x, t, batch_size=1, quantus_compat=True,
                               noise_source=np.random.RandomState(0), **settings)
    assert alone[0].item() < 0.2 and together[0].item() > 1.0  # a / max over 3 samples vs a' / its own max
    own = avg_sensitivity(_channel_sum, x, t, **settings)
    assert own[0].item() == pytest.approx(avg_sensitivity(_channel_sum, x[:1], t[:1], **settings).item(), abs=1e-15)


def test_bad_settings_are_refused():
    x, t = _inputs()
    with pytest.raises(InputError, match="n_samples must be at least 1"):
        avg_sensitivity(_channel_sum, x, t, n_samples=0)
    with pytest.raises(InputError, match=r"upper_bound \(0.1\) must be larger than lower_bound \(0.2\)"):
        max_sensitivity(_channel_sum, x, t, upper_bound=0.1)
    with pytest.raises(InputError, match="noise_source is used only with quantus_compat=True"):
        avg_sensitivity(_channel_sum, x, t, noise_source=np.random.RandomState(0))
    assert math.isnan(avg_sensitivity(_channel_sum, x * 0, t, n_samples=1)[0].item())
    assert avg_sensitivity(_channel_sum, x * 0, t, n_samples=1, quantus_compat=True)[0].item() == math.inf
