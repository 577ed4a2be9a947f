"""The synthetic localisation benchmark: one class-defining shape among distractors on texture.

Every image has a striped, noisy background in muted colours, one to three distractors
(elongated ellipses and thick line segments, shapes of no class) and, drawn on top,
one object whose shape is the class: circle, square, triangle, star, cross or ring, at a
random size, position, rotation and saturated colour. The object's pixels are the
segmentation mask, their bounding box the box mask.

Parameters are drawn per block of :data:`BLOCK` samples from a generator seeded by
``(seed, block)``, so sample ``i`` is the same whatever ``n`` is (prefix-stable), and
each block is rendered at once with tensor ops.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ..errors import InputError
from .data_benchmark import Benchmark, box_mask, normalise

SHAPE_CLASSES = ("circle", "square", "triangle", "star", "cross", "ring")
TEST_SEED = 1_000_003
"""Seed of the held-out split used by evaluation and the hyperparameter search (training uses others)."""
BLOCK = 256
MAX_DISTRACTORS = 3
_STAR_INNER = 0.45


def _hsv_to_rgb(h: np.ndarray, s: np.ndarray, v: np.ndarray) -> np.ndarray:
    """``(B,)`` hue, saturation, value in ``[0, 1]`` → ``(B, 3)`` RGB."""
    k = (np.array([5.0, 3.0, 1.0])[None, :] + h[:, None] * 6.0) % 6.0
    return v[:, None] - v[:, None] * s[:, None] * np.clip(np.minimum(k, 4.0 - k), 0.0, 1.0)


def _block_params(seed: int, block: int, size: int) -> dict[str, np.ndarray]:
    """Every random choice of the samples of one block (a fixed sequence of draws; sample axis first)."""
    rng = np.random.default_rng([seed, block])
    b = BLOCK
    radius = rng.uniform(0.15, 0.28, b) * size
    p = {
        "label": rng.integers(0, len(SHAPE_CLASSES), b),
        "radius": radius,
        "cx": radius + 1 + rng.uniform(0, 1, b) * (size - 2 * radius - 2),
        "cy": radius + 1 + rng.uniform(0, 1, b) * (size - 2 * radius - 2),
        "angle": rng.uniform(0, 2 * math.pi, b),
        "colour": _hsv_to_rgb(rng.uniform(0, 1, b), rng.uniform(0.55, 1, b), rng.uniform(0.55, 1, b)),
        "bg_a": _hsv_to_rgb(rng.uniform(0, 1, b), rng.uniform(0, 0.3, b), rng.uniform(0.25, 0.75, b)),
        "bg_b": _hsv_to_rgb(rng.uniform(0, 1, b), rng.uniform(0, 0.3, b), rng.uniform(0.25, 0.75, b)),
        "stripe_freq": rng.uniform(1.5, 6.0, b),
        "stripe_angle": rng.uniform(0, math.pi, b),
        "stripe_phase": rng.uniform(0, 2 * math.pi, b),
        "n_distractors": rng.integers(1, MAX_DISTRACTORS + 1, b),
        "d_kind": rng.integers(0, 2, (b, MAX_DISTRACTORS)),
        "d_cx": rng.uniform(0, size, (b, MAX_DISTRACTORS)),
        "d_cy": rng.uniform(0, size, (b, MAX_DISTRACTORS)),
        "d_angle": rng.uniform(0, math.pi, (b, MAX_DISTRACTORS)),
        "d_length": rng.uniform(0.1, 0.25, (b, MAX_DISTRACTORS)) * size,
        "d_aspect": rng.uniform(2.5, 4.0, (b, MAX_DISTRACTORS)),
        "d_thickness": rng.uniform(0.8, 1.6, (b, MAX_DISTRACTORS)),
        "d_colour": np.stack([_hsv_to_rgb(rng.uniform(0, 1, b), rng.uniform(0.55, 1, b), rng.uniform(0.55, 1, b))
                              for _ in range(MAX_DISTRACTORS)], axis=1),
        "noise": rng.standard_normal((b, 3, size, size), dtype=np.float32) * np.float32(0.05),
    }
    return p


def _local(size: int, cx: torch.Tensor, cy: torch.Tensor, angle: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixel-centre coordinates ``(B, H, W)`` in each sample's frame (centred, rotated by ``angle``)."""
    grid = torch.arange(size, dtype=torch.float32) + 0.5
    dx = grid.view(1, 1, -1) - cx.view(-1, 1, 1)
    dy = grid.view(1, -1, 1) - cy.view(-1, 1, 1)
    cos, sin = angle.cos().view(-1, 1, 1), angle.sin().view(-1, 1, 1)
    return dx * cos + dy * sin, -dx * sin + dy * cos


def _regular_polygon(u: torch.Tensor, v: torch.Tensor, r: torch.Tensor, sides: int) -> torch.Tensor:
    """Inside a regular polygon with circumradius ``r`` and a vertex on the +u axis."""
    inside = torch.ones_like(u, dtype=torch.bool)
    for k in range(sides):
        normal = math.pi / sides + 2 * math.pi * k / sides
        inside &= u * math.cos(normal) + v * math.sin(normal) <= r * math.cos(math.pi / sides)
    return inside


def _star(u: torch.Tensor, v: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """Inside a five-pointed star with outer radius ``r`` and inner radius ``0.45 r``."""
    sector = 2 * math.pi / 5
    phi = torch.atan2(v, u) % sector
    b = (phi - sector / 2).abs()  # 0 at an inner vertex, sector/2 at an outer one
    rho = torch.hypot(u, v)
    px, py = rho * b.cos(), rho * b.sin()
    ix = _STAR_INNER * r
    ox, oy = r * math.cos(sector / 2), r * math.sin(sector / 2)
    return (ox - ix) * py - oy * (px - ix) >= 0  # on the centre's side of the inner→outer edge


def _object(label: int, u: torch.Tensor, v: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """Inside the class-``label`` shape of size ``r`` (``(B, 1, 1)``) in local coordinates."""
    name = SHAPE_CLASSES[label]
    if name == "circle":
        return torch.hypot(u, v) <= 0.85 * r
    if name == "square":
        return torch.maximum(u.abs(), v.abs()) <= 0.75 * r
    if name == "triangle":
        return _regular_polygon(u, v, r, 3)
    if name == "star":
        return _star(u, v, r)
    if name == "cross":
        arm, width = 0.9 * r, 0.28 * r
        return ((u.abs() <= width) & (v.abs() <= arm)) | ((v.abs() <= width) & (u.abs() <= arm))
    rho = torch.hypot(u, v)
    return (rho >= 0.5 * r) & (rho <= 0.9 * r)  # ring


def _distractor(kind: torch.Tensor, u: torch.Tensor, v: torch.Tensor, length: torch.Tensor,
                aspect: torch.Tensor, thickness: torch.Tensor) -> torch.Tensor:
    """Inside an elongated ellipse (kind 0) or a thick line segment (kind 1)."""
    length, aspect, thickness = (t.view(-1, 1, 1) for t in (length, aspect, thickness))
    ellipse = (u / length).square_().add_((v * (aspect / length)).square_()) <= 1
    line = (u.abs() <= 1.6 * length).logical_and_(v.abs() <= thickness)
    return torch.where(kind.view(-1, 1, 1) == 0, ellipse, line)


def _paint(canvas: torch.Tensor, where: torch.Tensor, colour: torch.Tensor) -> torch.Tensor:
    """``canvas`` (``(B, 3, H, W)``) with the ``where`` pixels set to ``colour`` (``(B, 3)``)."""
    return torch.where(where[:, None], colour[:, :, None, None], canvas)


def _render(p: dict[str, np.ndarray], size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Pixels ``(B, 3, H, W)`` in ``[0, 1]``, object mask ``(B, 1, H, W)`` and labels of one block.

    Painter's order: striped background plus noise, the distractors, the object on top.
    """
    t = {k: torch.from_numpy(val.astype(np.float32) if val.dtype.kind == "f" else val) for k, val in p.items()}
    b = t["label"].shape[0]
    u, _ = _local(size, torch.zeros(b), torch.zeros(b), t["stripe_angle"])
    phase = u.mul_(2 * math.pi * t["stripe_freq"].view(-1, 1, 1) / size).add_(t["stripe_phase"].view(-1, 1, 1))
    wave = torch.sin(phase).mul_(0.5).add_(0.5)[:, None]
    full = (-1, -1, size, size)
    canvas = torch.lerp(t["bg_a"][:, :, None, None].expand(full), t["bg_b"][:, :, None, None].expand(full), wave)
    canvas += t["noise"]
    for j in range(MAX_DISTRACTORS):
        du, dv = _local(size, t["d_cx"][:, j], t["d_cy"][:, j], t["d_angle"][:, j])
        shape = _distractor(t["d_kind"][:, j], du, dv, t["d_length"][:, j], t["d_aspect"][:, j],
                            t["d_thickness"][:, j])
        canvas = _paint(canvas, shape & (t["n_distractors"] > j).view(-1, 1, 1), t["d_colour"][:, j])
    ou, ov = _local(size, t["cx"], t["cy"], t["angle"])
    mask = torch.zeros(b, size, size, dtype=torch.bool)
    for label in range(len(SHAPE_CLASSES)):
        idx = (t["label"] == label).nonzero().flatten()
        mask[idx] = _object(label, ou[idx], ov[idx], t["radius"][idx].view(-1, 1, 1))
    return _paint(canvas, mask, t["colour"]).clamp_(0, 1), mask[:, None], t["label"].long()


def shapes_benchmark(n: int, *, size: int = 64, seed: int = 0, start: int = 0) -> Benchmark:
    """Images ``start`` to ``start + n`` of the synthetic shapes benchmark, deterministic by ``seed``.

    Parameters
    ----------
    n : int
        Number of images (sample ``i`` does not depend on ``n``).
    size : int
        Image side in pixels (at least 16).
    seed : int
        Seed of the split; :data:`TEST_SEED` is the held-out evaluation split.
    start : int
        Index of the first image: a slice of a split renders only its own blocks (each
        data-parallel training process draws its shard this way).

    Returns
    -------
    Benchmark
        Normalised images, labels into :data:`SHAPE_CLASSES`, object and box masks.
    """
    if n < 1:
        raise InputError(f"shapes benchmark: n must be at least 1, got {n}")
    if size < 16:
        raise InputError(f"shapes benchmark: size must be at least 16 pixels, got {size}")
    if start < 0:
        raise InputError(f"shapes benchmark: start must be at least 0, got {start}")
    stop = start + n
    pixels, masks, labels = [], [], []
    for block in range(start // BLOCK, (stop - 1) // BLOCK + 1):
        lo, hi = max(start - block * BLOCK, 0), min(stop - block * BLOCK, BLOCK)
        rendered = _render({k: v[lo:hi] for k, v in _block_params(seed, block, size).items()}, size)
        pixels.append(rendered[0])
        masks.append(rendered[1])
        labels.append(rendered[2])
    mask = torch.cat(masks)
    return Benchmark(normalise(torch.cat(pixels)), torch.cat(labels), mask, box_mask(mask),
                     list(SHAPE_CLASSES), f"shapes:{n}:{seed}" if start == 0 else f"shapes:{n}:{seed}@{start}")
