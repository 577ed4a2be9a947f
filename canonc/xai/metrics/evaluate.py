"""Several metrics of one explanation method on one batch, sharing the base explanation."""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, MutableMapping

import torch
from rich.progress import Progress
from torch import nn

from ...errors import InputError
from ..explain import Explainer, as_targets, model_device_dtype
from .common import check_batch, explain_in_chunks
from .registry import POSTER_METRICS, Metric, get_metric

_CONTEXT_SETTINGS = ("seed", "batch_size", "num_classes")


def _checked_settings(chosen: list[Metric], settings: Mapping[str, Mapping[str, object]] | None) -> dict[str, dict]:
    """Settings per metric name; unknown metric names or setting names raise :class:`InputError`."""
    settings = dict(settings or {})
    for name, values in settings.items():
        metric = get_metric(name)
        unknown = sorted(set(values) - set(metric.settings))
        if unknown:
            raise InputError(f"metric '{name}' has no setting '{unknown[0]}'; its settings: {', '.join(metric.settings)}")
    return {m.name: dict(settings.get(m.name, {})) for m in chosen}


def _num_classes(model: nn.Module, inputs: torch.Tensor) -> int:
    """Number of model outputs, from one forward pass of one input."""
    with torch.no_grad():
        return int(model(inputs[:1]).shape[1])


def evaluate_metrics(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, *,
                     method: str = "lrp-epsilon-plus", method_params: Mapping[str, object] | None = None,
                     metrics: Iterable[str] = POSTER_METRICS, masks: torch.Tensor | None = None, seed: int = 0,
                     batch_size: int = 32, settings: Mapping[str, Mapping[str, object]] | None = None,
                     quantus_compat: bool = False, progress: bool = False,
                     timings: MutableMapping[str, float] | None = None) -> dict[str, torch.Tensor]:
    """Per-sample scores of ``metrics`` for the explanations of ``method``.

    The base explanation of every sample is computed once (``batch_size`` samples per call)
    and shared by all metrics; metrics that explain other inputs (noise, other classes) reuse
    the same registered composite; those that only need forward passes run after the rule
    hooks are removed again. The model is not modified.

    Parameters
    ----------
    model : nn.Module
        A classifier in eval mode (canonized or not), on the device to compute on.
    inputs : Tensor
        ``(N, C, H, W)`` images, as the model expects them.
    targets : Tensor
        ``(N,)`` class indices to explain.
    method, method_params
        A key of :data:`canonc.xai.METHODS` and its parameters (e.g. ``{"gamma": {...}}``).
    metrics : iterable of str
        Keys of :data:`METRICS`; default the poster's six.
    masks : Tensor, optional
        ``(N, 1, H, W)`` or ``(N, H, W)`` bool ground truth (localisation metrics).
    seed : int
        Seed of every random draw (per sample, so scores do not depend on ``batch_size``).
    batch_size : int
        Inputs per forward pass or explanation call (in compat mode also quantus's chunk size).
    settings : mapping, optional
        ``{metric name: {setting: value}}``, e.g. ``{"region-perturbation": {"patch_size": 14}}``.
    quantus_compat : bool
        Reproduce quantus 0.6.0's numbers (see each family's module docstring).
    progress : bool
        Show a progress bar over the metrics.
    timings : dict, optional
        Filled with seconds per metric and ``"explanation"`` for the shared base explanation.

    Returns
    -------
    dict of str to Tensor
        ``(N,)`` float64 CPU scores per metric name, in the order asked for.
    """
    names = list(dict.fromkeys(metrics))
    chosen = [get_metric(name) for name in names]
    per_metric = _checked_settings(chosen, settings)
    if masks is None and any(m.needs_masks for m in chosen):
        needing = ", ".join(m.name for m in chosen if m.needs_masks)
        raise InputError(f"{needing} need ground-truth masks; pass masks (N, 1, H, W)")
    device, dtype = model_device_dtype(model)
    x = inputs.detach().to(device=device, dtype=dtype)
    t = as_targets(targets, len(x), device)
    check_batch(x, t)
    timings = {} if timings is None else timings
    context: dict[str, object] = {
        "model": model, "inputs": x, "targets": t, "masks": None if masks is None else masks.to(device),
        "method": method, "method_params": dict(method_params or {}), "seed": seed, "batch_size": batch_size,
    }
    if "random-logit" in names and "num_classes" not in per_metric["random-logit"]:
        context["num_classes"] = _num_classes(model, x)
    scores: dict[str, torch.Tensor] = {}

    def run(metric: Metric) -> None:
        kwargs = {k: context[k] for k in metric.uses}
        kwargs.update({k: context[k] for k in _CONTEXT_SETTINGS if k in metric.settings and k in context})
        kwargs.update(per_metric[metric.name])
        start = time.perf_counter()
        scores[metric.name] = metric.compute(**kwargs, quantus_compat=quantus_compat)
        timings[metric.name] = time.perf_counter() - start
        bar.advance(task)

    with Progress(disable=not progress, transient=True) as bar:
        task = bar.add_task("metrics", total=len(chosen))
        with Explainer(model, method, strict=False, **context["method_params"]) as explainer:
            start = time.perf_counter()
            context["relevance"] = explain_in_chunks(explainer, x, t, batch_size)
            context["explain_fn"] = explainer
            timings["explanation"] = time.perf_counter() - start
            for metric in chosen:
                if "explain_fn" in metric.uses:
                    run(metric)
        for metric in chosen:
            if "explain_fn" not in metric.uses:
                run(metric)
    return {name: scores[name] for name in names}


def aggregate(scores: Mapping[str, torch.Tensor]) -> dict[str, float]:
    """Mean score per metric, ignoring NaN (e.g. samples with an empty mask)."""
    return {name: float(values.double().nanmean()) for name, values in scores.items()}

