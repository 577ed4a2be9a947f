"""Robustness: how much the explanation changes under small input noise. Avg-Sensitivity and
Max-Sensitivity (Yeh et al. 2019); lower is better.

For each of ``n_samples`` draws, ``x' = x + U(−lower_bound, lower_bound)`` per value (or
``U(lower_bound, upper_bound)``), ``a' = explain(x', y)`` and the sensitivity is
``‖a − a'‖₂ / ‖a‖₂`` over the flattened maps; the score is the mean (max) over draws. The
noisy inputs of several samples and draws share one explanation call (``batch_size`` inputs).

Deviations from quantus 0.6.0 (``quantus_compat=False``), and why:

- Maps are normalised per sample by default (``a / max|a|`` and ``a' / max|a'|``), so the
  score measures a change of the map's shape, not of its scale (LRP relevance scales with
  the logit, which the noise also moves). quantus does not normalise by default
  (``normalise=False``); with ``normalise=True`` it divides the given maps by one maximum
  over the whole batch and the noisy maps by one maximum per chunk, so a sample's score
  depends on the batch (we measured 0.35 vs 1.25 for one sample at batch sizes 8 and 1).
- Noise comes from a generator per sample, drawn in float32 on the CPU (the same draws on
  every device and batch size; float64 draws and arithmetic cost a third of the metric's time
  on a small model); quantus draws from numpy's global state, chunk by chunk.
  Compat mode draws exactly as quantus, from ``noise_source`` when given, else from numpy's
  global state (seed it with ``np.random.seed`` for repeatable scores).
- An all-zero map has no relative change: NaN (quantus divides by zero: inf).
- ``return_nan_when_prediction_changes`` is not offered (quantus's default is off).
"""

from __future__ import annotations

import numpy as np
import torch

from ...errors import InputError
from .common import (
    ExplainFn,
    check_batch,
    check_maps,
    check_noise_source,
    chunks,
    explain_in_chunks,
    numpy_rng,
    pick,
    prepare,
    sample_generator,
    stream_of,
    to_cpu,
)


def _relative_change(base: torch.Tensor, noisy: torch.Tensor, quantus_compat: bool) -> torch.Tensor:
    """``‖a − a'‖₂ / ‖a‖₂`` per row; NaN for an all-zero ``a`` (compat: inf, as numpy's division)."""
    norm = base.flatten(1).norm(dim=1)
    change = (base - noisy).flatten(1).norm(dim=1) / norm
    return change if quantus_compat else torch.where(norm == 0, torch.full_like(change, float("nan")), change)


def sensitivities(explain_fn: ExplainFn, inputs: torch.Tensor, targets: torch.Tensor,
                  relevance: torch.Tensor | None = None, *, n_samples: int = 10, lower_bound: float = 0.2,
                  upper_bound: float | None = None, normalise: bool | None = None, absolute: bool = False,
                  seed: int = 0, batch_size: int = 32, quantus_compat: bool = False,
                  noise_source: np.random.RandomState | None = None, stream: str = "avg-sensitivity") -> torch.Tensor:
    """``(N, n_samples)`` relative explanation changes, one per noise draw (see the module docstring).

    Parameters
    ----------
    explain_fn : callable
        ``(inputs, targets) -> (M, H, W)`` relevance, e.g. a :class:`canonc.xai.Explainer`.
    inputs, targets : Tensor
        ``(N, C, H, W)`` and ``(N,)``, on the explainer's device.
    relevance : Tensor, optional
        The maps of ``inputs`` (computed with ``explain_fn`` when omitted).
    n_samples : int
        Noise draws per sample.
    lower_bound, upper_bound : float
        Noise ``U(−lower_bound, lower_bound)``, or ``U(lower_bound, upper_bound)``.
    normalise : bool, optional
        Divide maps by their largest ``|value|``; default True (compat: False, quantus's default).
    absolute : bool
        Compare ``|a|``.
    seed : int
        Seed of the per-sample noise.
    batch_size : int
        Inputs per explanation call (compat: quantus's chunk size).
    quantus_compat : bool
        Reproduce quantus 0.6.0 (its normalisation and numpy draws).
    noise_source : numpy RandomState, optional
        Compat mode's random source (default: numpy's global state).
    stream : str
        Name of the random stream (each metric draws its own noise).
    """
    check_batch(inputs, targets)
    if n_samples < 1:
        raise InputError(f"n_samples must be at least 1, got {n_samples}")
    if upper_bound is not None and upper_bound <= lower_bound:
        raise InputError(f"upper_bound ({upper_bound}) must be larger than lower_bound ({lower_bound})")
    check_noise_source(noise_source, quantus_compat)
    low, high = (-lower_bound, lower_bound) if upper_bound is None else (lower_bound, upper_bound)
    normalise = pick(normalise, True, False, quantus_compat)
    if relevance is None:
        relevance = explain_in_chunks(explain_fn, inputs, targets, batch_size)
    check_maps(relevance, inputs)

    def prepared(maps: torch.Tensor) -> torch.Tensor:
        return prepare(maps, normalise=normalise, absolute=absolute, quantus_compat=quantus_compat)

    base = prepared(relevance)
    n = len(inputs)
    out = torch.empty(n, n_samples, dtype=torch.float64, device=base.device)
    if quantus_compat:
        rng = numpy_rng(noise_source)
        for part in chunks(n, batch_size):
            x = inputs[part]
            for step in range(n_samples):
                noise = torch.from_numpy(rng.uniform(low=low, high=high, size=(len(x), x[0].numel())))
                noisy = (x.double() + noise.to(x.device).reshape(x.shape)).to(x.dtype)
                out[part, step] = _relative_change(base[part], prepared(explain_fn(noisy, targets[part])), True)
        return out
    group = max(1, batch_size // n_samples)
    for part in chunks(n, group):
        x = inputs[part]
        noise = torch.stack([torch.rand(n_samples, *x.shape[1:], generator=sample_generator(seed, stream_of(stream), i))
                             for i in range(part.start, part.stop)])
        noisy = x[:, None] + noise.to(x.device, x.dtype).mul_(high - low).add_(low)  # bounds exact in x's dtype
        repeated_targets = targets[part].repeat_interleave(n_samples)
        maps = explain_in_chunks(explain_fn, noisy.flatten(0, 1), repeated_targets, batch_size)
        change = _relative_change(base[part].repeat_interleave(n_samples, 0), prepared(maps), False)
        out[part] = change.reshape(-1, n_samples)
    return out


def avg_sensitivity(explain_fn: ExplainFn, inputs: torch.Tensor, targets: torch.Tensor,
                    relevance: torch.Tensor | None = None, **settings: object) -> torch.Tensor:
    """Mean relative explanation change over noise draws (NaNs skipped); lower is better.

    Parameters are those of :func:`sensitivities`. Returns ``(N,)`` float64 on the CPU.
    """
    return to_cpu(sensitivities(explain_fn, inputs, targets, relevance, stream="avg-sensitivity",
                                **settings).nanmean(1))


def max_sensitivity(explain_fn: ExplainFn, inputs: torch.Tensor, targets: torch.Tensor,
                    relevance: torch.Tensor | None = None, **settings: object) -> torch.Tensor:
    """Largest relative explanation change over noise draws (NaNs skipped); lower is better.

    Parameters are those of :func:`sensitivities`. Returns ``(N,)`` float64 on the CPU.
    """
    changes = sensitivities(explain_fn, inputs, targets, relevance, stream="max-sensitivity", **settings)
    finite = torch.where(changes.isnan(), torch.full_like(changes, -torch.inf), changes).amax(1)
    return to_cpu(torch.where(finite == -torch.inf, torch.full_like(finite, float("nan")), finite))
