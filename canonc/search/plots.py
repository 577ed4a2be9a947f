"""PNG figures of a search: metric against γ per layer group (the poster's figure) and hypervolume.

The γ figure follows the poster: for every layer group and γ value, the mean of the
metric over all configurations that give the group that γ, with a 95 % confidence
interval (1.96 standard errors), one line for the original and one for the canonized
model. Only ``lrp-gamma`` configurations enter it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402 - after choosing the non-interactive backend
import numpy as np  # noqa: E402

from ..codegen import atomic_write  # noqa: E402
from .objectives import Objective  # noqa: E402
from .results import SearchResults  # noqa: E402
from .space import GAMMA_METHOD  # noqa: E402

COLOURS = {False: "#1f77b4", True: "#d62728"}
LABELS = {False: "not canonized", True: "canonized"}


def gamma_means(results: SearchResults, objective: int, group: str, canonized: bool,
                gammas: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """Mean and 95 % half-width of objective ``objective`` per γ of ``group`` (NaN where no trial has it)."""
    means, half = np.full(len(gammas), np.nan), np.full(len(gammas), np.nan)
    for k, gamma in enumerate(gammas):
        vals = np.array([t.values[objective] for t in results.trials
                         if t.config.method == GAMMA_METHOD and t.config.canonized == canonized
                         and dict(t.config.gammas).get(group) == gamma], dtype=float)
        vals = vals[~np.isnan(vals)]
        if len(vals):
            means[k] = vals.mean()
            half[k] = 1.96 * vals.std(ddof=1) / np.sqrt(len(vals)) if len(vals) > 1 else 0.0
    return means, half


def _draw_gamma_panel(ax, results: SearchResults, objective: int, group: str, gammas: Sequence[float]) -> None:
    x = np.arange(len(gammas))
    for canonized in (False, True):
        means, half = gamma_means(results, objective, group, canonized, gammas)
        if np.all(np.isnan(means)):
            continue
        ax.plot(x, means, marker="o", color=COLOURS[canonized], label=LABELS[canonized])
        ax.fill_between(x, means - half, means + half, color=COLOURS[canonized], alpha=0.2, linewidth=0)
    ax.set_xticks(x, [f"{g:g}" for g in gammas])
    ax.grid(alpha=0.3)


def _save(fig, path: Path) -> None:
    atomic_write(Path(path), lambda tmp: fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight"))
    plt.close(fig)


def _title(objective: Objective) -> str:
    return f"{objective.name} {objective.arrow}" + ("" if objective.metric == objective.name else f" ({objective.metric})")


def plot_gamma(results: SearchResults, objective: int, groups: Sequence[str], gammas: Sequence[float],
               path: Path) -> None:
    """One metric against γ, a panel per layer group, original vs canonized; written to ``path`` (PNG)."""
    fig, axes = plt.subplots(1, len(groups), figsize=(3.2 * len(groups), 3.0), sharey=True, squeeze=False)
    for ax, group in zip(axes[0], groups):
        _draw_gamma_panel(ax, results, objective, group, gammas)
        ax.set_title(group)
        ax.set_xlabel("γ")
    axes[0][0].set_ylabel(_title(results.objectives[objective]))
    axes[0][-1].legend(fontsize=8)
    _save(fig, path)


def plot_gamma_overview(results: SearchResults, groups: Sequence[str], gammas: Sequence[float], path: Path) -> None:
    """The poster's figure: a row per metric, a column per layer group; written to ``path`` (PNG)."""
    n = len(results.objectives)
    fig, axes = plt.subplots(n, len(groups), figsize=(2.9 * len(groups), 2.3 * n), sharey="row", squeeze=False)
    for i, objective in enumerate(results.objectives):
        for j, group in enumerate(groups):
            _draw_gamma_panel(axes[i][j], results, i, group, gammas)
            if i == 0:
                axes[i][j].set_title(group)
            if i == n - 1:
                axes[i][j].set_xlabel("γ")
        axes[i][0].set_ylabel(_title(objective), fontsize=9)
    axes[0][-1].legend(fontsize=8)
    fig.tight_layout()
    _save(fig, path)


def plot_hypervolume(histories: Mapping[str, np.ndarray], path: Path, *, title: str = "") -> None:
    """Hypervolume against evaluations, one line per history (label → values); written to ``path`` (PNG)."""
    fig, ax = plt.subplots(figsize=(5.5, 3.5))
    for label, history in histories.items():
        ax.plot(np.arange(1, len(history) + 1), history, label=label)
    ax.set_xlabel("evaluations")
    ax.set_ylabel("hypervolume (normalised, ref. 1.1)")
    if title:
        ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    _save(fig, path)
