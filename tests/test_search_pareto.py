"""Pareto front and hypervolume against hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest

from canonc.search.pareto import REFERENCE, hypervolume, hypervolume_history, normalised_losses, pareto_mask


def test_pareto_mask_keeps_exactly_the_non_dominated_rows():
    losses = np.array([[0.0, 1.0], [1.0, 0.0], [0.5, 0.5], [0.6, 0.6], [0.5, 0.5], [1.0, 1.0]])
    assert pareto_mask(losses).tolist() == [True, True, True, False, True, False]


def test_normalised_losses_follow_each_direction():
    values = np.array([[2.0, 10.0], [4.0, 30.0], [3.0, np.nan]])
    losses = normalised_losses(values, [True, False])
    # higher is better: 4 → 0, 2 → 1; lower is better: 10 → 0, 30 → 1; NaN → worst
    assert losses.tolist() == [[1.0, 0.0], [0.0, 1.0], [0.5, 1.0]]


def test_normalised_losses_with_foreign_ranges_clip_to_the_reference():
    ranges = (np.array([0.0]), np.array([1.0]))
    assert normalised_losses(np.array([[2.0], [-5.0]]), [False], ranges).tolist() == [[REFERENCE], [0.0]]


def test_hypervolume_of_two_points_in_2d():
    # boxes up to (1.1, 1.1): [0,1.1]x[0.5,1.1] ∪ [0.5,1.1]x[0,1.1] = 0.66 + 0.66 − 0.36
    assert hypervolume(np.array([[0.0, 0.5], [0.5, 0.0], [0.8, 0.8]])) == pytest.approx(0.96)


def test_hypervolume_in_3d_single_point():
    assert hypervolume(np.array([[0.1, 0.6, 1.1]])) == 0.0
    assert hypervolume(np.array([[0.1, 0.6, 0.1]])) == pytest.approx(1.0 * 0.5 * 1.0)


def test_hypervolume_history_is_the_prefix_hypervolume():
    rng = np.random.default_rng(0)
    losses = rng.random((25, 3))
    history = hypervolume_history(losses)
    assert np.all(np.diff(history) >= 0)
    for k in (1, 7, 25):
        assert history[k - 1] == pytest.approx(hypervolume(losses[:k]))
