"""Pareto front and hypervolume of a multi-objective search.

Values are turned into *losses* in ``[0, 1]`` per objective: 0 is the best value of a
reference set (by the objective's direction), 1 its worst (:func:`normalised_losses`).
The hypervolume is measured against the reference point ``REFERENCE`` = 1.1 in
every objective, so points on the worst edge still add volume, and is at most
``1.1 ** d``. Ranges come from the reference set (the benchmark uses the full grid's
ranges for both the grid and the sampler, so their hypervolumes compare).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from optuna._hypervolume import compute_hypervolume

REFERENCE = 1.1
"""Reference point coordinate of the normalised losses."""


def value_ranges(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-objective ``(min, max)`` of ``values`` (``(n, d)``), ignoring NaN."""
    values = np.asarray(values, dtype=float)
    return np.nanmin(values, axis=0), np.nanmax(values, axis=0)


def normalised_losses(values: np.ndarray, higher_is_better: Sequence[bool],
                      ranges: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    """Losses in ``[0, 1]`` (0 best, 1 worst of ``ranges``, default the values' own); NaN becomes the worst.

    Values outside ``ranges`` map outside ``[0, 1]`` and are clipped to ``[0, REFERENCE]``.
    """
    values = np.asarray(values, dtype=float).reshape(len(values), len(higher_is_better))
    lo, hi = ranges if ranges is not None else value_ranges(values)
    span = np.where(hi > lo, hi - lo, 1.0)
    losses = (values - lo) / span
    losses = np.where(np.asarray(higher_is_better), 1.0 - losses, losses)
    return np.clip(np.nan_to_num(losses, nan=1.0), 0.0, REFERENCE)


def pareto_mask(losses: np.ndarray) -> np.ndarray:
    """Boolean mask of the non-dominated rows of ``losses`` (``(n, d)``, lower is better).

    A row is dominated when another is no worse in every objective and better in one;
    duplicates of a non-dominated row are all kept.
    """
    losses = np.asarray(losses, dtype=float)
    n = len(losses)
    keep = np.ones(n, dtype=bool)
    for i in range(n):
        no_worse = np.all(losses <= losses[i], axis=1)
        better = np.any(losses < losses[i], axis=1)
        keep[i] = not np.any(no_worse & better)
    return keep


def hypervolume(losses: np.ndarray) -> float:
    """Volume dominated by ``losses`` (normalised, lower is better) up to ``REFERENCE`` in every objective."""
    losses = np.asarray(losses, dtype=float)
    if losses.size == 0:
        return 0.0
    front = np.unique(losses[pareto_mask(losses)], axis=0)
    return float(compute_hypervolume(front, np.full(losses.shape[1], REFERENCE), assume_pareto=True))


def hypervolume_history(losses: np.ndarray) -> np.ndarray:
    """Hypervolume of the first ``k`` rows for ``k = 1..n`` (rows in evaluation order)."""
    losses = np.asarray(losses, dtype=float)
    out = np.zeros(len(losses))
    front = np.empty((0, losses.shape[1] if losses.ndim == 2 else 0))
    current = 0.0
    for k, row in enumerate(losses):
        if not np.any(np.all(front <= row, axis=1)):  # the new point adds volume: recompute
            front = np.vstack([front, row])
            front = front[pareto_mask(front)]
            current = hypervolume(front)
        out[k] = current
    return out
