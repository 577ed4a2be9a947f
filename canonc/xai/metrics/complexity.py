"""Complexity: how concise an explanation is. Sparseness (Gini index, higher is better) and
Complexity (entropy of the relevance distribution, lower is better).

Deviations from quantus 0.6.0 (``quantus_compat=False``), and why:

- Maps are normalised per sample, not by one maximum over the whole batch (both scores are
  scale-invariant, so this changes nothing but rounding).
- Sparseness is the exact Gini index of ``|a|``; quantus adds ``1e-7`` to every value first
  (which shifts the score by about ``1e-7 · n / Σ|a|``). An all-zero map scores NaN (no
  relevance to be sparse about); quantus gives 0.
- Complexity is the exact Shannon entropy ``−Σ p log p`` with ``0 log 0 = 0``; quantus uses
  ``log(p + 1e-12)``. An all-zero map scores NaN; quantus gives NaN too (0/0).
"""

from __future__ import annotations

import torch

from .common import check_maps, prepare, to_cpu


def sparseness(relevance: torch.Tensor, *, normalise: bool = True, absolute: bool = True,
               quantus_compat: bool = False) -> torch.Tensor:
    """Gini index of each map (Chalasani et al. 2020): 0 for a uniform map, → 1 for a single pixel.

    ``G = Σᵢ (2i − n − 1) vᵢ / (n Σ v)`` over the ``n = H·W`` values ``v`` sorted ascending.

    Parameters
    ----------
    relevance : Tensor
        ``(N, H, W)`` maps.
    normalise, absolute : bool
        Divide each map by its largest ``|value|``; take ``|a|`` (as quantus, on by default).
    quantus_compat : bool
        Reproduce quantus 0.6.0 (``v = |a| + 1e-7``, whole-array normalisation).

    Returns
    -------
    Tensor
        ``(N,)`` float64 on the CPU; higher is sparser.
    """
    check_maps(relevance)
    values = prepare(relevance, normalise=normalise, absolute=absolute, quantus_compat=quantus_compat).flatten(1)
    if quantus_compat:
        values = values + 1e-7
    values = values.sort(dim=1).values
    n = values.shape[1]
    weights = 2 * torch.arange(1, n + 1, device=values.device, dtype=values.dtype) - n - 1
    total = values.sum(1)
    return to_cpu((weights * values).sum(1) / (n * total))


def complexity(relevance: torch.Tensor, *, normalise: bool = True, absolute: bool = True,
               quantus_compat: bool = False) -> torch.Tensor:
    """Shannon entropy (nats) of ``p = |a| / Σ|a|`` per map (Bhatt et al. 2020); lower is more concise.

    Parameters
    ----------
    relevance : Tensor
        ``(N, H, W)`` maps.
    normalise, absolute : bool
        As for :func:`sparseness`.
    quantus_compat : bool
        Reproduce quantus 0.6.0 (``−Σ p log(p + 1e-12)``, whole-array normalisation).

    Returns
    -------
    Tensor
        ``(N,)`` float64 on the CPU; ``log(H·W)`` for a uniform map, 0 for a single pixel.
    """
    check_maps(relevance)
    values = prepare(relevance, normalise=normalise, absolute=absolute, quantus_compat=quantus_compat).flatten(1)
    p = values / values.abs().sum(1, keepdim=True)
    if quantus_compat:
        return to_cpu(-(p * torch.log(p + 1e-12)).sum(1))
    return to_cpu(-torch.special.xlogy(p, p).sum(1))

