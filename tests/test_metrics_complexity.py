"""Sparseness (Gini) and Complexity (entropy) against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

from canonc.errors import InputError
from canonc.xai.metrics import complexity, sparseness

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: one thread is fastest on shared cores


def _maps(*rows: list[float]) -> torch.Tensor:
    """One 2×2 map per row of four values."""
    return torch.tensor(rows, dtype=torch.float64).reshape(len(rows), 2, 2)


def test_gini_of_known_vectors():
    # sorted v: G = Σ (2i − n − 1) v_i / (n Σv); [1,2,3,4]: (−3 − 2 + 3 + 12) / (4 · 10) = 0.25
    scores = sparseness(_maps([0, 0, 0, 1], [1, 1, 1, 1], [4, 3, 2, 1], [-4, 3, -2, 1]))
    assert scores.dtype == torch.float64 and scores.shape == (4,)
    assert scores.tolist() == pytest.approx([0.75, 0.0, 0.25, 0.25], abs=1e-15)


def test_gini_is_scale_invariant_and_nan_for_an_empty_map():
    base = _maps([0, 5, 1, 2])
    assert sparseness(base * 1e-9).item() == pytest.approx(sparseness(base).item(), abs=1e-15)
    assert math.isnan(sparseness(_maps([0, 0, 0, 0])).item())


def test_gini_compat_adds_quantus_epsilon():
    # quantus: v = |a| / max|a| + 1e-7 over the whole array; for [0,0,0,1]: 3 / (4 (1 + 4e-7))
    assert sparseness(_maps([0, 0, 0, 1]), quantus_compat=True).item() == pytest.approx(
        3 / (4 * (1 + 4e-7)), abs=1e-15)
    assert sparseness(_maps([0, 0, 0, 0]), quantus_compat=True).item() == pytest.approx(0.0, abs=1e-12)


def test_entropy_of_known_maps():
    scores = complexity(_maps([1, 1, 1, 1], [0, 0, 0, 7], [1, 1, 2, 0], [-1, 1, -2, 0]))
    expected = [math.log(4), 0.0, 1.5 * math.log(2), 1.5 * math.log(2)]
    assert scores.tolist() == pytest.approx(expected, abs=1e-15)
    assert math.isnan(complexity(_maps([0, 0, 0, 0])).item())


def test_entropy_compat_uses_quantus_log_offset():
    # −Σ p log(p + 1e-12) for p = [.25, .25, .5, 0]
    expected = -(0.5 * math.log(0.25 + 1e-12) + 0.5 * math.log(0.5 + 1e-12))
    assert complexity(_maps([1, 1, 2, 0]), quantus_compat=True).item() == pytest.approx(expected, abs=1e-15)


def test_maps_must_be_three_dimensional():
    with pytest.raises(InputError, match=r"relevance has shape \(2, 1, 2, 2\)"):
        sparseness(torch.ones(2, 1, 2, 2))
