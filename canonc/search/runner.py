"""``search()``: the whole hyperparameter search of one model on one benchmark, as one call."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from ..xai.groups import DEFAULT_GROUPS, layer_groups
from .cache import MetricCache
from .evaluator import TrialEvaluator
from .objectives import Objective, metric_settings, resolve_objectives
from .progress import SearchProgress
from .space import GAMMA_METHOD, POSTER_GAMMAS, SearchSpace
from .study import SearchStudy, open_study, run_trials


@dataclass
class SearchRun:
    """The outcome of :func:`search`.

    Attributes
    ----------
    study : SearchStudy
        The study (every worker's trials, not only this process's).
    slots : dict
        Budget slots by state at the end (:func:`canonc.search.study.slot_summary`).
    evaluated : int
        Configurations this process measured.
    computed : int
        Of those, the ones whose metric values were not all cached.
    """

    study: SearchStudy
    slots: dict[str, list[int]]
    evaluated: int
    computed: int


def search(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, objectives: str | Sequence[str] | Sequence[Objective],
           *, storage: str, masks: torch.Tensor | None = None, study: str = "canonc-search", sampler: str = "grid",
           trials: int | None = None, timeout_s: float | None = None, gammas: Sequence[float] = POSTER_GAMMAS,
           groups: str = DEFAULT_GROUPS, canonized: Sequence[bool] = (False, True),
           methods: Sequence[str] = (GAMMA_METHOD,), epsilons: Sequence[float] = (),
           settings: Mapping[str, Mapping[str, object]] | None = None, seed: int = 0, sampler_seed: int = 0,
           mode: str = "new",
           heartbeat_s: int = 10, batch_size: int = 32, device: str = "cpu", progress: bool = False,
           names: Mapping[str, str] | None = None) -> SearchRun:
    """Search XAI hyperparameters of ``model`` on a benchmark for several objectives at once.

    Parameters
    ----------
    model : nn.Module
        The original model (canonized once here for the ``canonized=True`` configurations).
    inputs, targets, masks : Tensor
        Benchmark images ``(N, C, H, W)``, target classes ``(N,)``, ground truth ``(N, 1, H, W)``.
    objectives : str or sequence
        ``"faithfulness,localization-rma,..."``, names, or :class:`Objective` objects.
    storage : str
        SQLAlchemy URL of the study (``sqlite:///study.db``, ``postgresql://...``).
    study, sampler, mode, heartbeat_s
        See :func:`canonc.search.study.open_study` (``sampler``: grid, nsga2, tpe, random).
    trials, timeout_s
        Budget: trials of the whole study (grid default: every point), and/or seconds for this process.
    gammas, groups, canonized, methods, epsilons
        The search space (:class:`SearchSpace`; ``groups`` is a layer-group spec like ``auto:4``).
    settings, seed, batch_size, device
        Metric settings ``{metric: {name: value}}``, metric seed, batch size and compute device.
    sampler_seed : int
        Seed of the Optuna sampler (independent of the metric seed, so the cache serves any sampler seed).
    progress : bool
        Show a progress bar with the Pareto front size.
    names : mapping, optional
        Descriptions stored with the study (e.g. ``{"model": "models:vgg13_bn-shapes", "data": "shapes:64"}``).
    """
    chosen = tuple(objectives) if objectives and isinstance(objectives[0], Objective) else resolve_objectives(objectives)
    space = SearchSpace(tuple(layer_groups(model, groups)), tuple(gammas), tuple(canonized), tuple(methods),
                        tuple(epsilons))
    evaluator = TrialEvaluator(model, inputs, targets, chosen, masks=masks, groups=groups,
                               settings=metric_settings(settings, chosen), seed=seed, batch_size=batch_size,
                               device=device)
    context = {**dict(names or {}), "fingerprint": evaluator.fingerprint}
    opened = open_study(storage, study, space, chosen, sampler, context=context, mode=mode, seed=sampler_seed,
                        budget=trials or space.size(), heartbeat_s=heartbeat_s)
    evaluator.cache = MetricCache(opened.claims.engine)
    with SearchProgress(progress) as bar:
        slots = run_trials(opened, evaluator, trials=trials, timeout_s=timeout_s, on_trial=bar.update)
    return SearchRun(opened, slots, evaluator.evaluated, evaluator.computed)
