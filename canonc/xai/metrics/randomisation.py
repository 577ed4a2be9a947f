"""Randomisation: does the explanation depend on what it should depend on? Random Logit (Sixt
et al. 2020: SSIM between the maps of the true and of a random other class) and Model
Parameter Randomisation (Adebayo et al. 2018: Spearman correlation with the maps of a model
whose layers are re-initialised, top layer first); lower is better for both.

Deviations from quantus 0.6.0 (``quantus_compat=False``), and why:

- Random Logit compares the maps as 2-D images (SSIM with a 7×7 window); quantus flattens
  them and computes a 1-D SSIM over 7 consecutive values, which mixes the ends of image rows.
  Both use ``data_range = max − min`` of the two maps and skimage's constants.
- The other class comes from a generator per sample (the same class whatever the batch
  size); quantus reseeds numpy's global state with ``seed`` at every chunk, so a sample's
  class depends on its position in its chunk (compat mode reproduces that, without touching
  the global state).
- Maps are normalised per sample; quantus divides the given maps by one maximum over the
  whole batch and the other-class maps by one maximum per chunk (SSIM is not scale-invariant).
- MPRT returns the mean correlation over the cascade of randomised layers. quantus returns
  one list per layer by default; its ``return_average_correlation`` mean also counts the
  correlation of the maps with themselves (it skips a key "orig" that is named "original"),
  which compat mode reproduces. Layers are re-initialised on the CPU with the torch seed
  ``seed + 1`` before each layer, as quantus does, but without changing the global torch
  random state, and then moved to the model's device (the same weights on every device).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping

import numpy as np
import torch
from torch import nn

from ...errors import InputError
from ..explain import Explainer
from .common import (
    ExplainFn,
    check_batch,
    check_maps,
    chunks,
    explain_in_chunks,
    prepare,
    sample_generator,
    stream_of,
    to_cpu,
)
from .similarity import spearman, ssim


def _other_classes(targets: torch.Tensor, num_classes: int, seed: int, batch_size: int,
                   quantus_compat: bool) -> torch.Tensor:
    """A class different from the target, uniformly, per sample."""
    y = targets.cpu()
    if quantus_compat:
        draws = np.concatenate([np.random.RandomState(seed).randint(0, num_classes - 1, part.stop - part.start)
                                for part in chunks(len(y), batch_size)])
        offset = torch.from_numpy(draws)
    else:
        offset = torch.stack([torch.randint(0, num_classes - 1, (), generator=sample_generator(
            seed, stream_of("random-logit"), i)) for i in range(len(y))])
    return (offset + (offset >= y).long()).to(targets.device)


def random_logit(explain_fn: ExplainFn, inputs: torch.Tensor, targets: torch.Tensor,
                 relevance: torch.Tensor | None = None, *, num_classes: int, normalise: bool = True,
                 absolute: bool = False, seed: int = 0, batch_size: int = 32,
                 quantus_compat: bool = False) -> torch.Tensor:
    """SSIM between the map of the target class and that of a random other class.

    Parameters
    ----------
    explain_fn, inputs, targets, relevance
        As for :func:`canonc.xai.metrics.robustness.sensitivities`.
    num_classes : int
        Number of classes of the model (at least 2).
    normalise, absolute : bool
        Map preparation.
    seed : int
        Seed of the other classes (compat: quantus's per-chunk numpy seed).
    batch_size : int
        Inputs per explanation call (compat: quantus's chunk size).
    quantus_compat : bool
        Reproduce quantus 0.6.0 (1-D SSIM, its normalisation and class draws).

    Returns
    -------
    Tensor
        ``(N,)`` float64 on the CPU, at most 1; lower is better.
    """
    check_batch(inputs, targets)
    if num_classes < 2:
        raise InputError(f"random-logit needs at least 2 classes, got num_classes={num_classes}")
    if int(targets.max()) >= num_classes:
        raise InputError(f"target {int(targets.max())} is out of range for num_classes={num_classes}")
    if relevance is None:
        relevance = explain_in_chunks(explain_fn, inputs, targets, batch_size)
    check_maps(relevance, inputs)
    base = prepare(relevance, normalise=normalise, absolute=absolute, quantus_compat=quantus_compat)
    others = _other_classes(targets, num_classes, seed, batch_size, quantus_compat)
    other_maps = torch.cat([prepare(explain_fn(inputs[part], others[part]), normalise=normalise, absolute=absolute,
                                    quantus_compat=quantus_compat) for part in chunks(len(inputs), batch_size)])
    if quantus_compat:
        return to_cpu(ssim(base.flatten(1), other_maps.flatten(1)))
    return to_cpu(ssim(base, other_maps))


def randomisable_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Submodules with ``reset_parameters`` in registration order (quantus's choice of layers)."""
    return [(name, m) for name, m in model.named_modules() if hasattr(m, "reset_parameters")]


def _reset_on_cpu(layer: nn.Module, seed: int) -> None:
    """Re-initialise ``layer``'s parameters as ``torch.manual_seed(seed); layer.reset_parameters()`` on the CPU."""
    fresh = copy.deepcopy(layer).cpu()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        fresh.reset_parameters()
    with torch.no_grad():
        for name, value in fresh.named_parameters(recurse=False):
            getattr(layer, name).copy_(value)
        for name, value in fresh.named_buffers(recurse=False):
            getattr(layer, name).copy_(value)


def model_parameter_randomisation(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor,
                                  relevance: torch.Tensor | None = None, *, method: str = "lrp-epsilon-plus",
                                  method_params: Mapping[str, object] | None = None, layer_order: str = "top_down",
                                  normalise: bool = True, absolute: bool = True, seed: int = 0,
                                  batch_size: int = 32, quantus_compat: bool = False) -> torch.Tensor:
    """Mean Spearman correlation between the maps and those of progressively randomised models.

    Layers (modules with ``reset_parameters``) are re-initialised one more at a time, from the
    output (``"top_down"``) or from the input (``"bottom_up"``), on a copy of the model; the
    model itself is not changed. Each step costs one explanation per sample.

    Parameters
    ----------
    model : nn.Module
        The classifier, in eval mode.
    inputs, targets : Tensor
        ``(N, C, H, W)`` and ``(N,)``.
    relevance : Tensor, optional
        The maps of ``inputs`` (computed with ``method`` when omitted).
    method, method_params
        The explanation method, as in :func:`canonc.xai.explain`.
    layer_order : str
        ``"top_down"`` or ``"bottom_up"``.
    normalise, absolute : bool
        Map preparation (quantus's defaults: both on).
    seed : int
        Torch seed of the re-initialisation (``seed + 1``, as quantus).
    batch_size : int
        Inputs per explanation call.
    quantus_compat : bool
        Reproduce quantus 0.6.0's ``return_average_correlation`` (self-correlation included).

    Returns
    -------
    Tensor
        ``(N,)`` float64 on the CPU in [−1, 1]; lower is better.
    """
    check_batch(inputs, targets)
    if layer_order not in ("top_down", "bottom_up"):
        raise InputError(f"unknown layer_order {layer_order!r}; choose top_down or bottom_up")
    params = dict(method_params or {})
    if relevance is None:
        with Explainer(model, method, strict=False, **params) as explainer:
            relevance = explain_in_chunks(explainer, inputs, targets, batch_size)
    check_maps(relevance, inputs)

    def prepared(maps: torch.Tensor) -> torch.Tensor:
        return prepare(maps, normalise=normalise, absolute=absolute, quantus_compat=quantus_compat).flatten(1)

    base = prepared(relevance)
    randomised = copy.deepcopy(model)
    layers = randomisable_layers(randomised)
    if not layers:
        raise InputError("the model has no layer with reset_parameters to randomise")
    if layer_order == "top_down":
        layers = layers[::-1]
    correlations = [spearman(base, base)] if quantus_compat else []
    for _, layer in layers:
        _reset_on_cpu(layer, seed + 1)
        with Explainer(randomised, method, strict=False, **params) as explainer:
            correlations.append(spearman(base, prepared(explain_in_chunks(explainer, inputs, targets, batch_size))))
    return to_cpu(torch.stack(correlations, 1).mean(1))
