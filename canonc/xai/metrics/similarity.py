"""Row-wise similarity of two batches: Pearson, Spearman (average ranks for ties), SSIM (1-D, 2-D)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ...errors import InputError

_K1, _K2 = 0.01, 0.03


def pearson(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pearson correlation of each row of ``a`` with the same row of ``b`` (NaN for a constant row)."""
    a = a - a.mean(1, keepdim=True)
    b = b - b.mean(1, keepdim=True)
    denom = a.norm(dim=1) * b.norm(dim=1)
    corr = (a * b).sum(1) / denom
    return torch.where(denom == 0, torch.full_like(corr, float("nan")), corr.clamp(-1, 1))


def average_ranks(values: torch.Tensor) -> torch.Tensor:
    """Ranks ``1 .. M`` of each row, tied values sharing their average rank (as ``scipy.stats.rankdata``)."""
    n, m = values.shape
    ordered, order = values.sort(dim=1, stable=True)
    starts = torch.ones_like(ordered, dtype=torch.bool)
    starts[:, 1:] = ordered[:, 1:] != ordered[:, :-1]
    group = (starts.cumsum(1) - 1) + torch.arange(n, device=values.device)[:, None] * m
    position = torch.arange(1, m + 1, device=values.device, dtype=torch.float64).expand(n, m)
    total = torch.zeros(n * m, dtype=torch.float64, device=values.device).index_add_(0, group.flatten(),
                                                                                       position.flatten())
    count = torch.zeros_like(total).index_add_(0, group.flatten(), torch.ones_like(position).flatten())
    mean_rank = (total / count.clamp(min=1))[group]
    return torch.empty_like(mean_rank).scatter_(1, order, mean_rank)


def spearman(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Spearman rank correlation of each row pair (``scipy.stats.spearmanr`` per row)."""
    return pearson(average_ranks(a), average_ranks(b))


def ssim(a: torch.Tensor, b: torch.Tensor, *, window: int = 7) -> torch.Tensor:
    """Mean structural similarity per sample, as ``skimage.metrics.structural_similarity``.

    ``a`` and ``b`` are ``(N, L)`` (1-D signals, quantus's flattened maps) or ``(N, H, W)``
    (2-D maps). Uniform ``window`` (per axis) with sample covariance, ``K1 = 0.01``,
    ``K2 = 0.03``, ``data_range = max − min`` of both maps of a sample (quantus's choice), the
    mean taken over window positions inside the map (skimage crops the filter border). Two
    constant, equal maps have ``data_range = 0`` and score NaN.
    """
    dims = a.dim() - 1
    if any(size < window for size in a.shape[1:]):
        raise InputError(f"SSIM needs maps of at least {window} values per axis, got {tuple(a.shape[1:])}")
    a, b = a.double()[:, None], b.double()[:, None]
    pool = F.avg_pool1d if dims == 1 else F.avg_pool2d

    def mean(t: torch.Tensor) -> torch.Tensor:
        return pool(t, window, stride=1)

    data_range = torch.maximum(a.flatten(1).amax(1), b.flatten(1).amax(1)) - torch.minimum(
        a.flatten(1).amin(1), b.flatten(1).amin(1))
    c1 = ((_K1 * data_range) ** 2).reshape(-1, *([1] * (dims + 1)))
    c2 = ((_K2 * data_range) ** 2).reshape(-1, *([1] * (dims + 1)))
    cov_norm = window**dims / (window**dims - 1)
    ua, ub = mean(a), mean(b)
    va = cov_norm * (mean(a * a) - ua * ua)
    vb = cov_norm * (mean(b * b) - ub * ub)
    vab = cov_norm * (mean(a * b) - ua * ub)
    s = (2 * ua * ub + c1) * (2 * vab + c2) / ((ua**2 + ub**2 + c1) * (va + vb + c2))
    return s.flatten(1).mean(1)
