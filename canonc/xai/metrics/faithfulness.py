"""Faithfulness: does removing what the explanation calls relevant change the prediction?
Region Perturbation (Samek et al. 2016; AOPC, higher is better), Pixel-Flipping (Bach et al.
2015; area under the prediction curve, lower is better) and Faithfulness Correlation (Bhatt et
al. 2020; higher is better).

Several perturbation steps of several samples share one forward pass (``batch_size`` inputs
per pass); the unperturbed input is step 0 of the same batches.

Deviations from quantus 0.6.0 (``quantus_compat=False``), and why:

- Region Perturbation returns the AOPC, ``Σ_{k=0..R} (f(x) − f(x_k)) / (R + 1)``, a number in
  the units of the prediction that does not grow with ``regions``, with higher is better (a
  steep drop under MoRF is a faithful explanation). quantus labels the metric "lower is
  better" while returning these same drops, and its own score is ``np.trapz`` of the curve
  (``np.trapz`` is gone in numpy 2.4); compat mode returns that trapezoid.
- ``baseline="black"`` is the sample's minimum per channel, the value a black pixel has
  after per-channel input normalisation; quantus takes one minimum over all channels, a
  colour that is not black. ``"mean"`` is the sample's mean per channel, fixed; quantus
  recomputes the mean of the partly perturbed, edge-padded image before every step (compat
  mode reproduces that recurrence). ``"blur"`` (the paper's choice; a box blur of
  ``blur_kernel_size``) is not available in compat mode: quantus 0.6.0 fails on it.
- Random orders and ``"uniform"`` values come from a generator per sample, so a sample's
  draws do not depend on the batch size; quantus draws from numpy's global state per chunk
  (compat mode does the same, from ``noise_source`` when given).
- Ties between patch (pixel) scores keep index order; compat mode uses numpy's ``argsort``.
- Pixel-Flipping flips pixels (all channels at once), ``features_in_step`` of them per step
  (default: ``H·W / 100``, i.e. 100 steps); quantus flips single channel values, one per
  step by default (``3·224²`` forward passes per image). Its score is the area under the
  probability curve from 0 to all pixels flipped, scaled to [0, 1] on the x axis.
- Faithfulness Correlation removes random subsets of pixels; quantus removes channel values.
- Patch grid: both modes use quantus 0.6.0's grid: the image is padded to a multiple of
  ``patch_size`` (padding split floor/ceil around it) and tiled without overlap.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from ...errors import InputError
from .common import (
    check_maps,
    check_noise_source,
    chunks,
    descending_order,
    numpy_rng,
    prepare,
    sample_generator,
    scores_of_variants,
    stream_of,
    to_cpu,
    trapezoid,
)
from .perturbation import (
    BASELINES,
    check_baseline,
    constant_fill,
    fill_by_step,
    grid_padding,
    on_model,
    patch_steps,
    patch_sums,
    perturbation_curve,
)
from .similarity import pearson

ORDERS = ("morf", "lerf", "random")


def _compat_region_draws(n: int, n_patches: int, steps: int, batch_size: int, random_order: bool,
                         noise_source: np.random.RandomState | None) -> tuple[torch.Tensor | None, torch.Tensor]:
    """quantus's draws, chunk by chunk: a permutation per sample (random order), then a uniform per sample and step.

    quantus draws the uniform values at every step whatever the baseline (its baseline table
    holds all baselines), so they are drawn here too, keeping the global state in step.
    """
    rng = numpy_rng(noise_source)
    perms, uniforms = [], []
    for part in chunks(n, batch_size):
        size = part.stop - part.start
        if random_order:
            perms += [rng.permutation(n_patches) for _ in range(size)]
        uniforms.append(np.stack([rng.uniform(0.0, 1.0, size=size) for _ in range(steps)], 1))
    return torch.from_numpy(np.stack(perms)) if perms else None, torch.from_numpy(np.concatenate(uniforms))


def _region_draws(n: int, n_patches: int, steps: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A random patch order and ``steps`` uniform values per sample, from the sample's own generator."""
    perms, uniforms = [], []
    for i in range(n):
        gen = sample_generator(seed, stream_of("region-perturbation"), i)
        perms.append(torch.randperm(n_patches, generator=gen))
        uniforms.append(torch.rand(steps, generator=gen, dtype=torch.float64))
    return torch.stack(perms), torch.stack(uniforms)


def _compat_means(inputs: torch.Tensor, patch_order: torch.Tensor, steps: int, patch_size: int) -> torch.Tensor:
    """quantus's "mean" baseline: the mean of the edge-padded image as perturbed so far, per step ``(N, steps)``."""
    n, c, h, w = inputs.shape
    sums = patch_sums(inputs.double(), patch_size, mode="replicate")
    padded_h, padded_w = h + sum(grid_padding(h, patch_size)), w + sum(grid_padding(w, patch_size))
    n_values, patch_values = c * padded_h * padded_w, c * patch_size**2
    total = sums.sum(1)
    means = []
    for j in range(steps):
        mean = total / n_values
        means.append(mean)
        total = total - sums.gather(1, patch_order[:, j:j + 1])[:, 0] + patch_values * mean
    return torch.stack(means, 1)


def region_perturbation(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, relevance: torch.Tensor, *,
                        patch_size: int = 8, regions: int = 100, order: str = "morf", baseline: str | float = "black",
                        softmax: bool = True, normalise: bool = True, absolute: bool = False,
                        blur_kernel_size: int = 15, seed: int = 0, batch_size: int = 32, return_curve: bool = False,
                        quantus_compat: bool = False,
                        noise_source: np.random.RandomState | None = None) -> torch.Tensor:
    """Replace patches in order of their relevance sum and record the drop of the target score.

    Parameters
    ----------
    model : nn.Module
        The classifier, in eval mode.
    inputs, targets : Tensor
        ``(N, C, H, W)`` images and ``(N,)`` class indices.
    relevance : Tensor
        ``(N, H, W)`` maps.
    patch_size : int
        Side of the square patches of the grid.
    regions : int
        Patches replaced, one per step (at most the number of patches).
    order : str
        ``"morf"`` (most relevant first), ``"lerf"`` (least relevant first) or ``"random"``.
    baseline : str or float
        ``"black"``, ``"mean"``, ``"uniform"`` (one ``U(0, 1)`` value per sample and step),
        ``"blur"`` or a number (see the module docstring).
    softmax : bool
        Score probabilities (True, quantus's default here) or logits.
    normalise, absolute : bool
        Map preparation (neither changes the patch order unless ``absolute``).
    blur_kernel_size : int
        Box filter size of the ``"blur"`` baseline.
    seed : int
        Seed of the random order and uniform values.
    batch_size : int
        Perturbed inputs per forward pass (compat mode: also quantus's chunk size).
    return_curve : bool
        Return the drops ``f(x) − f(x_k)``, ``k = 1..R``, as ``(N, R)`` instead of the score.
    quantus_compat : bool
        Reproduce quantus 0.6.0 (its black and mean baselines, ties, draws and trapezoid score).
    noise_source : numpy RandomState, optional
        Compat mode's random source (default: numpy's global state, as quantus).

    Returns
    -------
    Tensor
        ``(N,)`` float64 on the CPU: AOPC (compat: the trapezoid of the curve); higher is better.
    """
    x, t = on_model(model, inputs, targets)
    check_maps(relevance, x)
    check_baseline(baseline, allowed=BASELINES[:3] if quantus_compat else BASELINES)
    if order not in ORDERS:
        raise InputError(f"unknown order {order!r}; choose one of {', '.join(ORDERS)}")
    if patch_size < 1 or regions < 1:
        raise InputError(f"patch_size and regions must be at least 1, got {patch_size} and {regions}")
    check_noise_source(noise_source, quantus_compat)
    maps = prepare(relevance.to(x.device), normalise=normalise, absolute=absolute, quantus_compat=quantus_compat)
    n, _, h, w = x.shape
    sums = patch_sums(maps[:, None], patch_size, mode="constant")
    n_patches = sums.shape[1]
    steps = min(regions, n_patches)
    if quantus_compat:
        perms, uniforms = _compat_region_draws(n, n_patches, steps, batch_size, order == "random", noise_source)
    else:
        perms, uniforms = _region_draws(n, n_patches, steps, seed)
    patch_order = {"morf": lambda: descending_order(sums, quantus_compat=quantus_compat),
                   "lerf": lambda: descending_order(-sums, quantus_compat=quantus_compat),
                   "random": lambda: perms.to(x.device)}[order]()
    when = patch_steps(patch_order, h, w, patch_size)
    if baseline == "uniform":
        fill = fill_by_step(uniforms, when)
    elif baseline == "mean" and quantus_compat:
        fill = fill_by_step(_compat_means(x, patch_order, steps, patch_size), when)
    else:
        fill = constant_fill(x, baseline, quantus_compat=quantus_compat, blur_kernel_size=blur_kernel_size)
    scores = perturbation_curve(model, x, t, when, fill, steps, softmax=softmax, batch_size=batch_size)
    drops = scores[:, :1] - scores[:, 1:]
    if return_curve:
        return to_cpu(drops)
    return to_cpu(trapezoid(drops) if quantus_compat else drops.sum(1) / (steps + 1))


def _removable_values(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, relevance: torch.Tensor,
                      baseline: str | float, normalise: bool, absolute: bool,
                      quantus_compat: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Checked inputs and targets, and the relevance of each removable value, ``(N, H·W)``.

    Compat mode removes single channel values as quantus does: ``(N, C·H·W)``, each pixel's
    relevance repeated per channel. Only ``"black"`` and numbers are quantus baselines here.
    """
    x, t = on_model(model, inputs, targets)
    check_maps(relevance, x)
    check_baseline(baseline, allowed=BASELINES[:1] if quantus_compat else BASELINES)
    maps = prepare(relevance.to(x.device), normalise=normalise, absolute=absolute, quantus_compat=quantus_compat)
    n, c, h, w = x.shape
    return x, t, maps[:, None].expand(n, c if quantus_compat else 1, h, w).reshape(n, -1)


def pixel_flipping(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, relevance: torch.Tensor, *,
                   features_in_step: int | None = None, baseline: str | float = "black", softmax: bool = True,
                   normalise: bool = True, absolute: bool = False, seed: int = 0, batch_size: int = 32,
                   return_curve: bool = False, quantus_compat: bool = False) -> torch.Tensor:
    """Flip the most relevant pixels first, cumulatively, and record the target probability.

    Parameters
    ----------
    model, inputs, targets, relevance, softmax, normalise, absolute, batch_size
        As for :func:`region_perturbation`.
    features_in_step : int, optional
        Pixels flipped per step (compat: channel values); default ``ceil(H·W / 100)``
        (compat: 1, quantus's default).
    baseline : str or float
        ``"black"``, ``"mean"``, ``"uniform"``, ``"blur"`` or a number (compat: ``"black"`` or a number).
    seed : int
        Seed of the ``"uniform"`` values.
    return_curve : bool
        Return the target scores after each step, ``(N, steps)``.
    quantus_compat : bool
        Reproduce quantus 0.6.0 (channel values, its ties, trapezoid of the curve).

    Returns
    -------
    Tensor
        ``(N,)`` float64 on the CPU: the mean probability over the flipping curve from 0 to
        100 % flipped (compat: ``np.trapz`` of quantus's curve); lower is better.
    """
    x, t, values = _removable_values(model, inputs, targets, relevance, baseline, normalise, absolute, quantus_compat)
    n, c, h, w = x.shape
    channels = c if quantus_compat else 1
    per_step = features_in_step or (1 if quantus_compat else math.ceil(values.shape[1] / 100))
    if per_step < 1:
        raise InputError(f"features_in_step must be at least 1, got {per_step}")
    order = descending_order(values, quantus_compat=quantus_compat)
    rank = torch.empty_like(order).scatter_(1, order, torch.arange(values.shape[1], device=x.device).expand_as(order))
    when = (rank // per_step).reshape(n, channels, h, w)
    steps = math.ceil(values.shape[1] / per_step)
    if baseline == "uniform":
        table = torch.stack([torch.rand(steps, generator=sample_generator(seed, stream_of("pixel-flipping"), i),
                                        dtype=torch.float64) for i in range(n)])
        fill = fill_by_step(table, when)
    else:
        fill = constant_fill(x, baseline, quantus_compat=quantus_compat)
    scores = perturbation_curve(model, x, t, when, fill, steps, softmax=softmax, batch_size=batch_size)
    if return_curve:
        return to_cpu(scores[:, 1:])
    return to_cpu(trapezoid(scores[:, 1:]) if quantus_compat else trapezoid(scores) / steps)


def _subset_draws(n: int, n_features: int, runs: int, subset_size: int, seed: int, batch_size: int,
                  quantus_compat: bool, noise_source: np.random.RandomState | None) -> torch.Tensor:
    """``(N, runs, subset_size)`` feature indices removed in each run.

    Compat mode draws as quantus: per chunk, per run, ``choice`` for each sample and then one
    unused uniform value per sample (quantus's baseline table draws it).
    """
    if not quantus_compat:
        return torch.stack([torch.stack([torch.randperm(n_features, generator=gen)[:subset_size] for _ in range(runs)])
                            for gen in (sample_generator(seed, stream_of("faithfulness-correlation"), i)
                                        for i in range(n))])
    rng = numpy_rng(noise_source)
    parts = []
    for part in chunks(n, batch_size):
        size = part.stop - part.start
        per_run = []
        for _ in range(runs):
            per_run.append(np.stack([rng.choice(n_features, subset_size, replace=False) for _ in range(size)]))
            rng.uniform(0.0, 1.0, size=size)
        parts.append(np.stack(per_run, 1))
    return torch.from_numpy(np.concatenate(parts))


def faithfulness_correlation(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor,
                             relevance: torch.Tensor, *, runs: int = 100, subset_size: int = 224,
                             baseline: str | float = "black", softmax: bool = False, normalise: bool = True,
                             absolute: bool = False, seed: int = 0, batch_size: int = 32,
                             quantus_compat: bool = False,
                             noise_source: np.random.RandomState | None = None) -> torch.Tensor:
    """Pearson correlation, over random subsets, between their relevance sum and the score drop on removing them.

    Parameters
    ----------
    model, inputs, targets, relevance, normalise, absolute, batch_size, noise_source
        As for :func:`region_perturbation`.
    runs : int
        Random subsets per sample.
    subset_size : int
        Pixels per subset (compat: channel values).
    baseline : str or float
        Replacement, as for :func:`pixel_flipping`.
    softmax : bool
        Score probabilities or logits (False, quantus's default here).
    seed : int
        Seed of the subsets.
    quantus_compat : bool
        Reproduce quantus 0.6.0 (channel values, its draws).

    Returns
    -------
    Tensor
        ``(N,)`` float64 on the CPU in [−1, 1]; higher is better.
    """
    x, t, values = _removable_values(model, inputs, targets, relevance, baseline, normalise, absolute, quantus_compat)
    n, c, h, w = x.shape
    channels = c if quantus_compat else 1
    if not 1 <= subset_size < values.shape[1] or runs < 2:
        raise InputError(f"faithfulness-correlation needs 1 <= subset_size < {values.shape[1]} and runs >= 2, "
                         f"got subset_size={subset_size}, runs={runs}")
    check_noise_source(noise_source, quantus_compat)
    subsets = _subset_draws(n, values.shape[1], runs, subset_size, seed, batch_size, quantus_compat,
                            noise_source).to(x.device)
    relevance_sums = values.gather(1, subsets.flatten(1)).reshape(n, runs, subset_size).sum(2)
    fill = constant_fill(x, baseline, quantus_compat=quantus_compat)

    def build(rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        sample, run = rows // (runs + 1), rows % (runs + 1)
        removed = torch.zeros(len(rows), values.shape[1], dtype=torch.bool, device=x.device)
        removed.scatter_(1, subsets[sample, (run - 1).clamp(min=0)], True)
        removed &= (run > 0)[:, None]
        return torch.where(removed.reshape(-1, channels, h, w), fill[sample], x[sample]), t[sample]

    scores = scores_of_variants(model, n * (runs + 1), build, batch_size=batch_size, softmax=softmax,
                                device=x.device).reshape(n, runs + 1)
    return to_cpu(pearson(relevance_sums, scores[:, :1] - scores[:, 1:]))
