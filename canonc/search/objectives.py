"""Objective names of the search → metrics of :mod:`canonc.xai.metrics` and their directions.

The names follow the poster's columns (complexity, faithfulness, localization,
robustness, randomisation); a metric name itself is accepted too.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from ..errors import InputError
from ..xai.metrics import METRICS

OBJECTIVE_METRICS: dict[str, str] = {
    "faithfulness": "region-perturbation",
    "localization-rra": "rra",
    "localization-rma": "rma",
    "robustness": "avg-sensitivity",
    "complexity": "sparseness",
    "randomisation": "random-logit",
}
"""The poster's six objectives and the metric that measures each."""


@dataclass(frozen=True)
class Objective:
    """One objective of the search.

    Attributes
    ----------
    name : str
        Objective name as given (``faithfulness``, ``localization-rma``, ...).
    metric : str
        Key of ``canonc.xai.metrics.METRICS``.
    higher_is_better : bool
        The metric's direction.
    needs_masks : bool
        The metric needs ground-truth masks (localisation).
    """

    name: str
    metric: str
    higher_is_better: bool
    needs_masks: bool = False

    @property
    def direction(self) -> str:
        """Optuna's direction: ``"maximize"`` or ``"minimize"``."""
        return "maximize" if self.higher_is_better else "minimize"

    @property
    def arrow(self) -> str:
        """``↑`` (higher is better) or ``↓``."""
        return "↑" if self.higher_is_better else "↓"


def resolve_objectives(names: str | Sequence[str]) -> tuple[Objective, ...]:
    """Objectives for ``"faithfulness,localization-rma,..."`` (or a list); unknown names raise :class:`InputError`."""
    items = [n.strip() for n in (names.split(",") if isinstance(names, str) else names) if n.strip()]
    if not items:
        raise InputError("--objectives is empty; name at least one, e.g. faithfulness,localization-rma")
    if len(set(items)) != len(items):
        raise InputError(f"--objectives names an objective twice: {','.join(items)}")
    objectives = []
    for name in items:
        metric = OBJECTIVE_METRICS.get(name, name)
        if metric not in METRICS:
            known = ", ".join([*OBJECTIVE_METRICS, *sorted(set(METRICS) - set(OBJECTIVE_METRICS.values()))])
            raise InputError(f"unknown objective '{name}'; choose from {known}")
        m = METRICS[metric]
        objectives.append(Objective(name, metric, bool(m.higher_is_better), bool(m.needs_masks)))
    metrics = [o.metric for o in objectives]
    if len(set(metrics)) != len(metrics):
        raise InputError(f"--objectives measures one metric twice: {','.join(items)}")
    return tuple(objectives)


def metric_settings(settings: Mapping[str, Mapping[str, object]] | None,
                    objectives: Sequence[Objective]) -> dict[str, dict[str, object]]:
    """``{metric: {setting: value}}`` with objective names replaced by their metric; unknown names raise.

    Every key must be an objective (or its metric) of this search, and every setting one
    that metric takes (``canonc.xai.metrics.METRICS[name].settings``).
    """
    by_name = {o.name: o.metric for o in objectives} | {o.metric: o.metric for o in objectives}
    out: dict[str, dict[str, object]] = {}
    for key, values in (settings or {}).items():
        if key not in by_name:
            raise InputError(f"metric setting for '{key}', which is not among the objectives "
                             f"({', '.join(o.name for o in objectives)})")
        metric = by_name[key]
        allowed = METRICS[metric].settings
        unknown = sorted(set(values) - set(allowed))
        if unknown:
            raise InputError(f"metric '{metric}' has no setting '{unknown[0]}'; its settings: {', '.join(allowed)}")
        out.setdefault(metric, {}).update(values)
    return out
