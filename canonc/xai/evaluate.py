"""Methods × canonized {no, yes} × metrics on one model and benchmark: the poster's table.

``evaluate(model, benchmark, methods=[...], metrics=[...])`` explains every image for its
label with each method, once with the model as it is ("canonized no": zennit's rules on
the original layers, BatchNorm gets no rule, as in Pahde et al.) and once with
``canonc.canonize(model, x).module`` ("yes"), scores the explanations with
:func:`canonc.xai.metrics.evaluate_metrics` and keeps every per-sample score.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from torch import nn

from ..core import canonize
from ..errors import InputError
from .data import Benchmark
from .explain import explain
from .methods import get_method
from .metrics import METRICS, POSTER_METRICS, aggregate, evaluate_metrics, get_metric

DEFAULT_METHODS = ("eb", "lrp-alpha2beta1", "lrp-epsilon-plus")
CANONIZED = ("no", "yes")
MASK_KINDS = ("segmentation", "box")
METHOD_LABELS = {"eb": "EB", "lrp-alpha2beta1": "LRP-α2β1", "lrp-epsilon-plus": "LRP-ε+",
                 "lrp-epsilon": "LRP-ε", "lrp-gamma": "LRP-γ"}
METRIC_LABELS = {"sparseness": "Sparseness", "region-perturbation": "Region Perturbation", "rra": "RRA",
                 "rma": "RMA", "avg-sensitivity": "Avg-Sensitivity", "random-logit": "Random Logit"}


def metric_label(name: str) -> str:
    """Column title of a metric: direction arrow and name, e.g. ``"↑ RRA"``."""
    arrow = "↑" if METRICS[name].higher_is_better else "↓"
    return f"{arrow} {METRIC_LABELS.get(name, name)}"


@dataclass
class EvaluationResult:
    """Per-sample scores of every (method, canonized) row and metric, and how they were made.

    Attributes
    ----------
    model, data : str
        Names of the model and the benchmark.
    methods, canonized, metrics : list of str
        The rows' methods, the canonized settings (``"no"``/``"yes"``) and the columns.
    scores : dict
        ``{(method, canonized): {metric: (N,) float64 tensor}}``.
    labels : Tensor
        ``(N,)`` the explained classes.
    info : dict
        Seed, mask kind, metric settings, the canonization report's summary, timings.
    examples : dict
        ``{(method, canonized): (K, H, W) relevance}`` of the images at ``example_index``.
    example_index : list of int
        The benchmark indices of the example heatmaps (one image per class first).
    """

    model: str
    data: str
    methods: list[str]
    canonized: list[str]
    metrics: list[str]
    scores: dict[tuple[str, str], dict[str, torch.Tensor]]
    labels: torch.Tensor
    info: dict = field(default_factory=dict)
    examples: dict[tuple[str, str], torch.Tensor] = field(default_factory=dict)
    example_index: list[int] = field(default_factory=list)

    def rows(self) -> list[tuple[str, str]]:
        """``(method, canonized)`` in table order."""
        return [(m, c) for m in self.methods for c in self.canonized]

    def means(self) -> dict[tuple[str, str], dict[str, float]]:
        """NaN-aware mean score per row and metric."""
        return {row: aggregate(self.scores[row]) for row in self.rows()}

    def best(self) -> dict[str, list[tuple[str, str]]]:
        """Per metric the rows with the best mean in its direction (ties all count)."""
        means = self.means()
        out = {}
        for metric in self.metrics:
            values = {row: means[row][metric] for row in self.rows() if not math.isnan(means[row][metric])}
            if not values:
                out[metric] = []
                continue
            pick = max if METRICS[metric].higher_is_better else min
            top = pick(values.values())
            out[metric] = [row for row, v in values.items() if v == top]
        return out

    def effects(self) -> dict[tuple[str, str], tuple[float, float]]:
        """Per (method, metric) the paired mean of canonized yes − no over images, and its standard error.

        Empty unless both ``"no"`` and ``"yes"`` were evaluated; images where either score is
        NaN are left out.
        """
        if set(self.canonized) != set(CANONIZED):
            return {}
        out = {}
        for method in self.methods:
            for metric in self.metrics:
                diff = self.scores[(method, "yes")][metric] - self.scores[(method, "no")][metric]
                diff = diff[~diff.isnan()]
                se = float(diff.std() / math.sqrt(len(diff))) if len(diff) > 1 else math.nan
                out[(method, metric)] = (float(diff.mean()) if len(diff) else math.nan, se)
        return out

    def _effects_markdown(self, digits: int) -> list[str]:
        effects = self.effects()
        if not effects:
            return []
        head = ["method", *(f"Δ {metric_label(m)}" for m in self.metrics)]
        lines = ["", "Canonization effect, yes − no, paired over images (± 2 standard errors):", "",
                 "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for method in self.methods:
            cells = [f"{effects[(method, m)][0]:+.{digits}f} ± {2 * effects[(method, m)][1]:.{digits}f}"
                     for m in self.metrics]
            lines.append("| " + " | ".join([METHOD_LABELS.get(method, method), *cells]) + " |")
        return lines

    def to_markdown(self, digits: int = 3) -> str:
        """The table: rows method × canonized, columns metrics with ↑/↓, best per column in bold.

        When both canonized settings were evaluated, a second table gives the paired effect
        of canonization per method and metric (see :meth:`effects`).
        """
        means, best = self.means(), self.best()
        head = ["method", "canonized", *(metric_label(m) for m in self.metrics)]
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for row in self.rows():
            cells = []
            for metric in self.metrics:
                text = f"{means[row][metric]:.{digits}f}"
                cells.append(f"**{text}**" if row in best[metric] else text)
            lines.append("| " + " | ".join([METHOD_LABELS.get(row[0], row[0]), row[1], *cells]) + " |")
        n = len(self.labels)
        lines.append(f"\n{self.model} on {self.data} ({n} images); mean over images, best per column in bold.")
        return "\n".join(lines + self._effects_markdown(digits)) + "\n"

    def to_csv(self) -> str:
        """One line per row: method, canonized, then the mean of each metric (full precision)."""
        means = self.means()
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(["method", "canonized", *self.metrics])
        for row in self.rows():
            writer.writerow([*row, *(repr(means[row][m]) for m in self.metrics)])
        return buf.getvalue()

    def to_dict(self) -> dict:
        """JSON-ready: metrics with direction, per-row means and per-sample scores (NaN → ``None``)."""
        means, best = self.means(), self.best()
        return {
            "model": self.model, "data": self.data, "n": len(self.labels), "labels": self.labels.tolist(),
            "metrics": [{"name": m, "family": METRICS[m].family, "higher_is_better": METRICS[m].higher_is_better,
                         "summary": METRICS[m].summary} for m in self.metrics],
            "rows": [{"method": row[0], "canonized": row[1], "means": {m: _json_float(means[row][m]) for m in self.metrics},
                      "scores": {m: [_json_float(v) for v in self.scores[row][m].tolist()] for m in self.metrics}}
                     for row in self.rows()],
            "best": {m: [list(row) for row in rows] for m, rows in best.items()},
            "effects": [{"method": method, "metric": metric, "mean": _json_float(mean), "se": _json_float(se)}
                        for (method, metric), (mean, se) in self.effects().items()],
            **self.info,
        }


def _json_float(value: float) -> float | None:
    return None if math.isnan(value) else value


def check_choices(methods: Sequence[str], canonized: Sequence[str], metrics: Sequence[str], mask: str) -> None:
    for method in methods:
        get_method(method)
    for metric in metrics:
        get_metric(metric)
    bad = [c for c in canonized if c not in CANONIZED]
    if bad or not canonized:
        raise InputError(f"canonized '{','.join(bad)}': choose from no, yes")
    if not methods or not metrics:
        raise InputError("give at least one method and one metric")
    if mask not in MASK_KINDS:
        raise InputError(f"mask '{mask}': choose segmentation or box")


def model_variants(model: nn.Module, example: torch.Tensor, canonized: Sequence[str]) -> tuple[dict, dict]:
    """The model per canonized setting (``"yes"``: verified canonical form) and the canonization summary."""
    variants, summary = {}, {}
    if "no" in canonized:
        variants["no"] = model.eval()
    if "yes" in canonized:
        res = canonize(model, example)
        report = res.report.to_dict()
        summary = {k: report[k] for k in ("verified", "strategy", "bn_before", "bn_after", "max_rel_error_fp64",
                                          "params_before", "params_after")}
        variants["yes"] = res.module
    return variants, summary


def explanations(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, method: str,
                 params: Mapping[str, object] | None = None) -> torch.Tensor:
    """``(N, H, W)`` CPU relevance of ``images`` for ``labels`` (uncanonized models allowed)."""
    return explain(model, images, labels, method, strict=False, **dict(params or {})).detach().cpu()


def example_indices(labels: torch.Tensor, k: int) -> list[int]:
    """Up to ``k`` indices: the first image of each class in class order, then the next images."""
    firsts = [int((labels == c).nonzero()[0]) for c in labels.unique().tolist()]
    rest = [i for i in range(len(labels)) if i not in firsts]
    return (firsts + rest)[:k]


def evaluate(model: nn.Module, benchmark: Benchmark, *, methods: Sequence[str] = DEFAULT_METHODS,
             canonized: Sequence[str] = CANONIZED, metrics: Sequence[str] = POSTER_METRICS,
             method_params: Mapping[str, Mapping[str, object]] | None = None,
             settings: Mapping[str, Mapping[str, object]] | None = None, mask: str = "segmentation",
             seed: int = 0, batch_size: int = 32, device: str | torch.device = "cpu", quantus_compat: bool = False,
             examples: int = 4, progress: bool = False, model_name: str = "model") -> EvaluationResult:
    """Score ``methods`` × ``canonized`` × ``metrics`` on ``benchmark``.

    Parameters
    ----------
    model : nn.Module
        The classifier as trained, in eval mode; canonized on a copy, and moved to ``device``.
    benchmark : Benchmark
        Images, labels (the explained classes) and masks.
    methods, canonized, metrics
        Method names (:data:`canonc.xai.METHODS`), ``"no"``/``"yes"``, metric names (:data:`METRICS`).
    method_params : mapping, optional
        ``{method: {param: value}}``.
    settings : mapping, optional
        ``{metric: {setting: value}}``, passed to :func:`evaluate_metrics`.
    mask : str
        Ground truth of the localisation metrics: ``"segmentation"`` or ``"box"``.
    seed, batch_size, quantus_compat
        As in :func:`evaluate_metrics`.
    device : str or device
        Where explanations and metrics run (canonization itself runs on the CPU).
    examples : int
        How many images get their heatmaps kept in ``result.examples``.
    progress : bool
        Show a progress bar over the rows.
    model_name : str
        Name of the model in the table and JSON.

    Returns
    -------
    EvaluationResult
    """
    methods, canonized, metrics = list(methods), list(canonized), list(metrics)
    check_choices(methods, canonized, metrics, mask)
    variants, summary = model_variants(model.eval(), benchmark.images[:1].to(device), canonized)
    masks = benchmark.masks if mask == "segmentation" else benchmark.boxes
    scores, timings, relevance = {}, {}, {}
    shown = example_indices(benchmark.labels, examples)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, disable=not progress, transient=True) as bar:
        task = bar.add_task("evaluate", total=len(methods) * len(canonized))
        for method in methods:
            for canon in canonized:
                bar.update(task, description=f"{METHOD_LABELS.get(method, method)}, canonized {canon}")
                row_timings: dict[str, float] = {}
                scores[(method, canon)] = evaluate_metrics(
                    variants[canon].to(device), benchmark.images, benchmark.labels, method=method,
                    method_params=(method_params or {}).get(method), metrics=metrics, masks=masks, seed=seed,
                    batch_size=batch_size, settings=settings, quantus_compat=quantus_compat, timings=row_timings)
                timings[f"{method}/{canon}"] = row_timings
                relevance[(method, canon)] = explanations(
                    variants[canon], benchmark.images[shown].to(device), benchmark.labels[shown].to(device), method,
                    (method_params or {}).get(method))
                bar.advance(task)
    info = {"seed": seed, "mask": mask, "settings": {k: dict(v) for k, v in (settings or {}).items()},
            "method_params": {k: dict(v) for k, v in (method_params or {}).items()},
            "quantus_compat": quantus_compat, "canonization": summary, "timings_s": timings}
    return EvaluationResult(model_name, benchmark.name, methods, canonized, metrics, scores,
                            benchmark.labels.clone(), info, relevance, shown)
