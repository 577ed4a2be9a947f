"""The metric registry: name, family, direction and how :func:`evaluate_metrics` calls each metric."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from ...errors import InputError
from .complexity import complexity, sparseness
from .faithfulness import faithfulness_correlation, pixel_flipping, region_perturbation
from .localisation import pointing_game, relevance_mass_accuracy, relevance_rank_accuracy, top_k_intersection
from .randomisation import model_parameter_randomisation, random_logit
from .robustness import avg_sensitivity, max_sensitivity, sensitivities

FAMILIES = ("complexity", "faithfulness", "localisation", "robustness", "randomisation")

DATA = ("model", "inputs", "targets", "relevance", "masks", "explain_fn", "method", "method_params")
"""What :func:`evaluate_metrics` supplies itself; everything else a metric takes is a setting."""

_NOT_SETTINGS = {*DATA, "quantus_compat", "return_curve", "stream"}


def keyword_settings(fn: Callable[..., object]) -> tuple[str, ...]:
    """The keyword parameters of ``fn`` a user may set (not the data, not the mode)."""
    params = inspect.signature(fn).parameters.values()
    return tuple(p.name for p in params if p.kind is p.KEYWORD_ONLY and p.name not in _NOT_SETTINGS)


@dataclass(frozen=True)
class Metric:
    """One metric of the registry.

    Attributes
    ----------
    name : str
        Registry key, e.g. ``"region-perturbation"``.
    family : str
        One of :data:`FAMILIES`.
    higher_is_better : bool
        The direction of the score.
    needs_masks : bool
        Whether it needs ground-truth masks.
    summary : str
        One line on what it measures.
    compute : callable
        The metric function; returns ``(N,)`` float64 scores on the CPU.
    uses : tuple of str
        The items of :data:`DATA` (positional or keyword) that ``compute`` takes.
    settings : tuple of str
        The keyword settings it accepts (``settings={name: {...}}`` in :func:`evaluate_metrics`).
    """

    name: str
    family: str
    higher_is_better: bool
    needs_masks: bool
    summary: str
    compute: Callable[..., torch.Tensor] = field(repr=False)
    uses: tuple[str, ...]
    settings: tuple[str, ...]


def _metric(name: str, family: str, higher_is_better: bool, summary: str, compute: Callable[..., torch.Tensor],
            uses: tuple[str, ...], *, settings_of: Callable[..., object] | None = None) -> Metric:
    return Metric(name, family, higher_is_better, "masks" in uses, summary, compute, uses,
                  keyword_settings(settings_of or compute))


_MAPS = ("relevance",)
_MASKED = ("relevance", "masks")
_FORWARD = ("model", "inputs", "targets", "relevance")
_EXPLAIN = ("explain_fn", "inputs", "targets", "relevance")

METRICS: dict[str, Metric] = {m.name: m for m in (
    _metric("sparseness", "complexity", True, "Gini index of |relevance|: concentrated on few pixels",
            sparseness, _MAPS),
    _metric("complexity", "complexity", False, "entropy of the |relevance| distribution", complexity, _MAPS),
    _metric("region-perturbation", "faithfulness", True,
            "AOPC: mean drop of the target probability as the most relevant patches are replaced",
            region_perturbation, _FORWARD),
    _metric("pixel-flipping", "faithfulness", False,
            "area under the target probability as the most relevant pixels are flipped", pixel_flipping, _FORWARD),
    _metric("faithfulness-correlation", "faithfulness", True,
            "correlation of a random subset's relevance with the logit drop on removing it",
            faithfulness_correlation, _FORWARD),
    _metric("rra", "localisation", True, "Relevance Rank Accuracy: share of the |mask| top pixels in the mask",
            relevance_rank_accuracy, _MASKED),
    _metric("rma", "localisation", True, "Relevance Mass Accuracy: share of the relevance inside the mask",
            relevance_mass_accuracy, _MASKED),
    _metric("pointing-game", "localisation", True, "the most relevant pixel lies in the mask",
            pointing_game, _MASKED),
    _metric("top-k-intersection", "localisation", True, "share of the k most relevant pixels in the mask",
            top_k_intersection, _MASKED),
    _metric("avg-sensitivity", "robustness", False, "mean relative change of the map under input noise",
            avg_sensitivity, _EXPLAIN, settings_of=sensitivities),
    _metric("max-sensitivity", "robustness", False, "largest relative change of the map under input noise",
            max_sensitivity, _EXPLAIN, settings_of=sensitivities),
    _metric("random-logit", "randomisation", False, "SSIM of the map with the map of a random other class",
            random_logit, _EXPLAIN),
    _metric("mprt", "randomisation", False,
            "Spearman correlation of the map with maps of a progressively randomised model",
            model_parameter_randomisation, ("model", "inputs", "targets", "relevance", "method", "method_params")),
)}

POSTER_METRICS = ("sparseness", "region-perturbation", "rra", "rma", "avg-sensitivity", "random-logit")
"""The six metrics of Pahde et al.'s table, in its column order."""


def get_metric(name: str) -> Metric:
    """The registered metric ``name``; unknown names raise :class:`InputError`."""
    try:
        return METRICS[name]
    except KeyError:
        raise InputError(f"unknown metric '{name}'; choose one of {', '.join(METRICS)}") from None
