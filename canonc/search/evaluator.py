"""One trial's measurement: explain the benchmark under a configuration and compute its metrics.

The canonized model is made once (``canonc.canonize``, verified); the original is
explained as is (``evaluate_metrics`` registers rules with ``strict=False``, so its
BatchNorms are passed through as zennit does). Per-sample metric values are cached
(:mod:`canonc.search.cache`); a configuration whose values are all cached costs no
explanation at all.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from torch import nn

from ..core import canonize
from ..xai.metrics import evaluate_metrics
from .cache import MetricCache, context_fingerprint, entry_key
from .objectives import Objective
from .space import Config

XAI_SOURCES = Path(__file__).resolve().parent.parent / "xai"


def code_fingerprint() -> str:
    """Hash of canonc's explanation and metric sources: a code change invalidates cached values."""
    h = hashlib.sha256()
    for path in sorted(XAI_SOURCES.rglob("*.py")):
        h.update(path.relative_to(XAI_SOURCES).as_posix().encode())
        h.update(path.read_bytes())
    return h.hexdigest()


class TrialEvaluator:
    """``config -> {metric: mean over samples}`` on one model and benchmark.

    Parameters
    ----------
    model : nn.Module
        The original model (eval mode); not modified.
    inputs, targets : Tensor
        ``(N, C, H, W)`` benchmark images and ``(N,)`` target classes.
    objectives : sequence of Objective
        What to measure.
    masks : Tensor, optional
        ``(N, 1, H, W)`` ground truth (needed by localisation objectives).
    groups : str
        Layer-group spec of the γ configurations (``auto:4``).
    settings : mapping, optional
        ``{metric: {setting: value}}`` for :func:`canonc.xai.metrics.evaluate_metrics`.
    seed, batch_size : int
        Metric seed and batch size.
    cache : MetricCache, optional
        Where per-sample values are stored and looked up.
    device : str or torch.device
        Where explanations are computed (the models are canonized on the CPU, then moved).
    """

    def __init__(self, model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor,
                 objectives: Sequence[Objective], *, masks: torch.Tensor | None = None, groups: str = "auto:4",
                 settings: Mapping[str, Mapping[str, object]] | None = None, seed: int = 0, batch_size: int = 32,
                 cache: MetricCache | None = None, device: str | torch.device = "cpu") -> None:
        model = model.eval().cpu()
        canonical = canonize(model, inputs[:1].cpu()).module
        self.models = {False: model.to(device), True: canonical.to(device)}
        self.inputs, self.targets, self.masks = inputs, targets, masks
        self.metrics = [o.metric for o in objectives]
        self.groups = groups
        self.settings = {k: dict(v) for k, v in (settings or {}).items()}
        self.seed, self.batch_size = seed, batch_size
        self.cache = cache
        tensors = [inputs, targets] + ([masks] if masks is not None else [])
        self.fingerprint = context_fingerprint(model, tensors, {"settings": self.settings, "seed": seed, "groups": groups})
        """Hash of model weights, data, metric settings and seed (what a study's values depend on)."""
        self.context = hashlib.sha256(f"{self.fingerprint}|{code_fingerprint()}".encode()).hexdigest()
        """:attr:`fingerprint` and the explanation/metric code: the cache's key prefix."""
        self.evaluated = 0
        """Configurations measured by this evaluator."""
        self.computed = 0
        """Of those, the ones that needed computing (not fully cached)."""

    def _keys(self, config: Config) -> dict[str, list[str]]:
        return {m: [entry_key(self.context, config, m, i) for i in range(len(self.inputs))] for m in self.metrics}

    def per_sample(self, config: Config) -> dict[str, list[float]]:
        """Per-sample values of every metric under ``config`` (from the cache where stored)."""
        keys = self._keys(config)
        cached = self.cache.get([k for ks in keys.values() for k in ks]) if self.cache is not None else {}
        missing = [m for m in self.metrics if any(k not in cached for k in keys[m])]
        if missing:
            self.computed += 1
            scores = evaluate_metrics(self.models[config.canonized], self.inputs, self.targets, method=config.method,
                                      method_params=config.method_params(self.groups), metrics=missing,
                                      masks=self.masks, seed=self.seed, batch_size=self.batch_size,
                                      settings={m: self.settings[m] for m in missing if m in self.settings})
            fresh = {k: float(v) for m in missing for k, v in zip(keys[m], scores[m].tolist())}
            if self.cache is not None:
                self.cache.put(fresh)
            cached = {**cached, **fresh}
        return {m: [cached[k] for k in keys[m]] for m in self.metrics}

    def __call__(self, config: Config) -> dict[str, float]:
        """Mean of every metric over the samples, ignoring NaN (NaN when every sample is NaN)."""
        self.evaluated += 1
        out = {}
        for metric, values in self.per_sample(config).items():
            finite = [v for v in values if not math.isnan(v)]
            out[metric] = sum(finite) / len(finite) if finite else math.nan
        return out
