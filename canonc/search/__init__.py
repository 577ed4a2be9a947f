"""Multi-objective XAI hyperparameter search: LRP-γ per layer group × canonization, scored by metrics.

``search(model, inputs, targets, "faithfulness,localization-rma", storage="sqlite:///study.db")``
runs an Optuna study (grid, NSGA-II or TPE) whose trials explain the benchmark under one
configuration and measure the objectives; ``write_report(summarise(run.study), ...)``
writes the Pareto front, the best configuration per objective and the figures.
"""

from .objectives import OBJECTIVE_METRICS, Objective, resolve_objectives
from .pareto import hypervolume, hypervolume_history, normalised_losses, pareto_mask
from .report import write_report
from .results import SearchResults, summarise
from .runner import SearchRun, search
from .space import POSTER_GAMMAS, Config, SearchSpace
from .study import SAMPLERS, SearchStudy, open_study, run_trials

__all__ = [
    "OBJECTIVE_METRICS", "POSTER_GAMMAS", "SAMPLERS", "Config", "Objective", "SearchResults", "SearchRun",
    "SearchSpace", "SearchStudy", "hypervolume", "hypervolume_history", "normalised_losses", "open_study",
    "pareto_mask", "resolve_objectives", "run_trials", "search", "summarise", "write_report",
]
