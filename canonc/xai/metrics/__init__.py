"""Explanation quality metrics: exact, batched, device-agnostic, with quantus 0.6.0 parity.

``evaluate_metrics(model, x, targets, metrics=POSTER_METRICS)`` returns per-sample scores of
the named metrics, sharing one base explanation; :data:`METRICS` holds each metric's family and
direction. Every metric function also works on its own (``sparseness(relevance)``, ...) and
takes ``quantus_compat=True`` to reproduce quantus 0.6.0's numbers; each family's module
docstring lists where the default differs from quantus and why.
"""

from .complexity import complexity, sparseness
from .evaluate import aggregate, evaluate_metrics
from .faithfulness import faithfulness_correlation, pixel_flipping, region_perturbation
from .localisation import pointing_game, relevance_mass_accuracy, relevance_rank_accuracy, top_k_intersection
from .randomisation import model_parameter_randomisation, random_logit
from .registry import FAMILIES, METRICS, POSTER_METRICS, Metric, get_metric
from .robustness import avg_sensitivity, max_sensitivity

__all__ = [
    "FAMILIES", "METRICS", "POSTER_METRICS", "Metric", "aggregate", "avg_sensitivity", "complexity",
    "evaluate_metrics", "faithfulness_correlation", "get_metric", "max_sensitivity", "model_parameter_randomisation",
    "pixel_flipping", "pointing_game", "random_logit", "region_perturbation", "relevance_mass_accuracy",
    "relevance_rank_accuracy", "sparseness", "top_k_intersection",
]
