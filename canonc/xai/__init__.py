"""Explanations of canonized models: methods, composites, layer groups, heatmaps.

``explain(model, x, targets, method="lrp-epsilon-plus")`` returns ``(N, H, W)`` relevance;
``Explainer`` registers a method's rules once for many batches.
"""

from .composites import canon_layer_map, uncovered
from .conservation import Conservation, conservation
from .explain import Explainer, explain
from .groups import layer_groups, linear_layers
from .heatmap import colorize, heatmap_image, save_heatmap, side_by_side
from .methods import METHODS, Method, get_method

__all__ = [
    "METHODS", "Conservation", "Explainer", "Method", "canon_layer_map", "colorize", "conservation", "explain",
    "get_method", "heatmap_image", "layer_groups", "linear_layers", "save_heatmap", "side_by_side", "uncovered",
]
