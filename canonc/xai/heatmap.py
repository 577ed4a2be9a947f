"""Heatmaps: relevance maps rendered with a diverging colour map and written as PNG.

Negative relevance is blue, zero white, positive red; the scale is symmetric around
zero (``±max|R|`` of each map), so colours of different maps compare by sign and
relative strength, not by absolute value.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..codegen import atomic_write
from ..errors import InputError

# Diverging stops (ColorBrewer RdBu, reversed): value in [-1, 1] → RGB.
_STOPS = np.array([-1.0, -0.5, 0.0, 0.5, 1.0])
_COLOURS = np.array([
    [5, 48, 97],
    [67, 147, 195],
    [247, 247, 247],
    [214, 96, 77],
    [103, 0, 31],
], dtype=np.float64)


def colorize(relevance: torch.Tensor | np.ndarray) -> np.ndarray:
    """``(H, W)`` relevance → ``(H, W, 3)`` uint8 RGB, scaled symmetrically by ``max|R|``."""
    r = relevance.detach().cpu().double().numpy() if isinstance(relevance, torch.Tensor) else np.asarray(relevance, float)
    if r.ndim != 2:
        raise InputError(f"a heatmap needs a (H, W) relevance map, got shape {r.shape}; sum over channels first")
    r = np.nan_to_num(r)
    scale = np.abs(r).max()
    v = r / scale if scale > 0 else r
    rgb = np.stack([np.interp(v, _STOPS, _COLOURS[:, c]) for c in range(3)], axis=-1)
    return np.round(rgb).astype(np.uint8)


def heatmap_image(relevance: torch.Tensor | np.ndarray) -> Image.Image:
    """The heatmap of ``(H, W)`` relevance as a PIL image of the same size."""
    return Image.fromarray(colorize(relevance))


def side_by_side(images: Sequence[Image.Image], gap: int = 4) -> Image.Image:
    """Images next to each other, left to right, on a white background with ``gap`` pixels between."""
    width = sum(im.width for im in images) + gap * (len(images) - 1)
    height = max(im.height for im in images)
    canvas = Image.new("RGB", (width, height), (255, 255, 255))
    x = 0
    for im in images:
        canvas.paste(im.convert("RGB"), (x, 0))
        x += im.width + gap
    return canvas


def save_png(image: Image.Image, path: str | Path) -> None:
    """Write ``image`` as PNG atomically (nothing is left behind on failure)."""
    atomic_write(Path(path), lambda tmp: image.save(tmp, format="PNG"))


def save_heatmap(relevance: torch.Tensor | np.ndarray, path: str | Path) -> None:
    """Render ``(H, W)`` relevance and write it as PNG to ``path``."""
    save_png(heatmap_image(relevance), path)
