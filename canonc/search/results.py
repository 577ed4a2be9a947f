"""The completed trials of a study as arrays: values, Pareto front, best per objective, hypervolume."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from optuna.trial import FrozenTrial

from .objectives import Objective
from .pareto import hypervolume_history, normalised_losses, pareto_mask
from .space import Config
from .study import SearchStudy


@dataclass(frozen=True)
class TrialResult:
    """One completed trial: its number, budget slot, configuration and objective values."""

    number: int
    slot: int
    config: Config
    values: tuple[float, ...]


@dataclass
class SearchResults:
    """What a search found.

    Attributes
    ----------
    objectives : tuple of Objective
        The objectives, in value order.
    trials : list of TrialResult
        Completed trials, in completion order.
    losses : ndarray
        ``(n, d)`` normalised losses (0 best, 1 worst of this study; :func:`normalised_losses`).
    front : ndarray
        ``(n,)`` bool: the trial is on the Pareto front.
    hypervolume : ndarray
        ``(n,)`` hypervolume of the first ``k`` trials (normalised losses, reference 1.1).
    """

    objectives: tuple[Objective, ...]
    trials: list[TrialResult]
    losses: np.ndarray
    front: np.ndarray
    hypervolume: np.ndarray

    @property
    def values(self) -> np.ndarray:
        """``(n, d)`` objective values."""
        return values_array(self.trials, len(self.objectives))

    def best(self) -> dict[str, TrialResult]:
        """The best trial per objective name (by its direction; ties: the earliest)."""
        out = {}
        for j, o in enumerate(self.objectives):
            column = self.losses[:, j]
            if len(column):
                out[o.name] = self.trials[int(np.argmin(column))]
        return out


def values_array(trials: list[TrialResult], n_objectives: int) -> np.ndarray:
    """``(n, d)`` float array of the trials' objective values."""
    return np.array([t.values for t in trials], dtype=float).reshape(len(trials), n_objectives)


def trial_result(trial: FrozenTrial) -> TrialResult:
    """The :class:`TrialResult` of a completed trial of a canonc study."""
    return TrialResult(trial.number, int(trial.user_attrs["slot"]), Config.from_dict(trial.user_attrs["config"]),
                       tuple(float(v) for v in trial.values))


def summarise(search: SearchStudy) -> SearchResults:
    """:class:`SearchResults` of every completed trial of ``search``."""
    trials = [trial_result(t) for t in search.completed()]
    values = values_array(trials, len(search.objectives))
    higher = [o.higher_is_better for o in search.objectives]
    losses = normalised_losses(values, higher) if len(trials) else values
    return SearchResults(search.objectives, trials, losses, pareto_mask(losses), hypervolume_history(losses))
