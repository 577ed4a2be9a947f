"""Localisation: does the relevance lie on the ground-truth object? Relevance Rank Accuracy,
Relevance Mass Accuracy (Arras et al. 2022), Pointing Game and Top-K Intersection; all higher
is better, NaN for an empty mask.

Deviations from quantus 0.6.0 (``quantus_compat=False``), and why:

- RRA and RMA take ``|a|`` by default, as Pahde et al. did (quantus: signed, so RMA can leave
  [0, 1]; we measured −0.18). Pass ``absolute=False`` for the signed version.
- Ties in the ranking (RRA, Top-K) are broken by pixel index (stable sort); quantus uses
  numpy's unstable ``argsort``, so tied pixels at the cut may land on either side. Compat
  mode calls that same ``argsort``.
- Pointing Game gives NaN for an empty mask; quantus writes NaN into a boolean array, which
  turns into a hit (1.0). Compat mode reproduces the hit.
- Maps are normalised per sample (quantus: one maximum over the whole batch); none of these
  scores depends on the scale, so only rounding differs.
"""

from __future__ import annotations

import torch

from ...errors import InputError
from .common import as_masks, check_maps, descending_order, pick, prepare, to_cpu


def _ranked_hits(maps: torch.Tensor, masks: torch.Tensor, quantus_compat: bool) -> torch.Tensor:
    """``(N, H·W)`` bool: is the pixel at each rank (most relevant first) inside the mask?"""
    order = descending_order(maps.flatten(1), quantus_compat=quantus_compat)
    return masks.flatten(1).gather(1, order)


def _nan_where_empty(scores: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    empty = masks.flatten(1).sum(1) == 0
    return torch.where(empty, torch.full_like(scores, float("nan")), scores)


def relevance_rank_accuracy(relevance: torch.Tensor, masks: torch.Tensor, *, normalise: bool = True,
                            absolute: bool | None = None, quantus_compat: bool = False) -> torch.Tensor:
    """Share of the ``K = |mask|`` most relevant pixels that lie inside the mask.

    Parameters
    ----------
    relevance : Tensor
        ``(N, H, W)`` maps.
    masks : Tensor
        ``(N, H, W)`` or ``(N, 1, H, W)`` bool ground truth.
    normalise : bool
        Divide each map by its largest ``|value|`` (no effect on the ranking).
    absolute : bool, optional
        Rank ``|a|``; default True (quantus_compat: False, quantus's default).
    quantus_compat : bool
        Reproduce quantus 0.6.0 (signed maps by default, numpy's tie-breaking).

    Returns
    -------
    Tensor
        ``(N,)`` float64 on the CPU in [0, 1]; NaN where the mask is empty.
    """
    check_maps(relevance)
    masks = as_masks(masks, relevance)
    absolute = pick(absolute, True, False, quantus_compat)
    maps = prepare(relevance, normalise=normalise, absolute=absolute, quantus_compat=quantus_compat)
    hits = _ranked_hits(maps, masks, quantus_compat)
    k = masks.flatten(1).sum(1, keepdim=True)
    in_top_k = torch.arange(hits.shape[1], device=hits.device)[None] < k
    return to_cpu(_nan_where_empty((hits & in_top_k).sum(1).double() / k[:, 0], masks))


def relevance_mass_accuracy(relevance: torch.Tensor, masks: torch.Tensor, *, normalise: bool = True,
                            absolute: bool | None = None, quantus_compat: bool = False) -> torch.Tensor:
    """Share of the relevance mass inside the mask, ``Σ(a·s) / Σa``.

    Parameters
    ----------
    relevance, masks, normalise, absolute, quantus_compat
        As for :func:`relevance_rank_accuracy`.

    Returns
    -------
    Tensor
        ``(N,)`` float64 on the CPU; in [0, 1] with ``absolute=True``; NaN where the mask is empty.
    """
    check_maps(relevance)
    masks = as_masks(masks, relevance)
    absolute = pick(absolute, True, False, quantus_compat)
    maps = prepare(relevance, normalise=normalise, absolute=absolute, quantus_compat=quantus_compat).flatten(1)
    inside = (maps * masks.flatten(1)).sum(1)
    return to_cpu(_nan_where_empty(inside / maps.sum(1), masks))


def pointing_game(relevance: torch.Tensor, masks: torch.Tensor, *, normalise: bool = True, absolute: bool = False,
                  quantus_compat: bool = False) -> torch.Tensor:
    """1.0 if a pixel of maximal relevance lies inside the mask, else 0.0 (Zhang et al. 2018).

    Every pixel that ties for the maximum counts, as in quantus.

    Parameters
    ----------
    relevance, masks, normalise, quantus_compat
        As for :func:`relevance_rank_accuracy`.
    absolute : bool
        Use ``|a|``.

    Returns
    -------
    Tensor
        ``(N,)`` float64 on the CPU; NaN where the mask is empty (compat: 1.0, quantus's result).
    """
    check_maps(relevance)
    masks = as_masks(masks, relevance)
    maps = prepare(relevance, normalise=normalise, absolute=absolute, quantus_compat=quantus_compat).flatten(1)
    at_max = maps == maps.amax(1, keepdim=True)
    hit = (at_max & masks.flatten(1)).any(1).double()
    if quantus_compat:
        return to_cpu(torch.where(masks.flatten(1).any(1), hit, torch.ones_like(hit)))
    return to_cpu(_nan_where_empty(hit, masks))


def top_k_intersection(relevance: torch.Tensor, masks: torch.Tensor, *, k: int = 1000, normalise: bool = True,
                       absolute: bool = False, quantus_compat: bool = False) -> torch.Tensor:
    """Share of the ``k`` most relevant pixels that lie inside the mask (Theiner et al. 2021).

    Parameters
    ----------
    relevance, masks, normalise, quantus_compat
        As for :func:`relevance_rank_accuracy`, which also describes the result.
    k : int
        Number of top pixels, at most ``H·W``.
    absolute : bool
        Rank ``|a|``.
    """
    check_maps(relevance)
    masks = as_masks(masks, relevance)
    n_pixels = relevance.shape[1] * relevance.shape[2]
    if not 1 <= k <= n_pixels:
        raise InputError(f"top-k-intersection needs 1 <= k <= H*W = {n_pixels}, got k={k}")
    maps = prepare(relevance, normalise=normalise, absolute=absolute, quantus_compat=quantus_compat)
    hits = _ranked_hits(maps, masks, quantus_compat)[:, :k]
    return to_cpu(_nan_where_empty(hits.double().mean(1), masks))
