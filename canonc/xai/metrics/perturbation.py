"""Removing parts of an input step by step, many steps per forward pass (faithfulness metrics).

A perturbation schedule is a map ``when`` (an int per pixel, or per channel value) saying in
which step that value is replaced, and a ``fill`` (broadcastable to the input) with the value
it is replaced by. Input ``k`` of the curve (``k = 0 .. steps``) is
``where(when < k, fill, x)``: replacements accumulate, input 0 is the original. Rows (sample,
step) are packed ``batch_size`` at a time into one forward pass; on a canonized model, where
one step changes a small part of each input (a patch), ``batch_size`` samples go through
their steps together instead and each step recomputes only what it changed
(:mod:`.incremental`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ...errors import InputError
from ..explain import model_device_dtype
from .common import check_batch, scores_of_output, scores_of_variants
from .incremental import incremental_curve, pays_off

BASELINES = ("black", "mean", "uniform", "blur")


def on_model(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs and targets checked and moved to the model's device (inputs in its dtype)."""
    check_batch(inputs, targets)
    device, dtype = model_device_dtype(model)
    return inputs.detach().to(device=device, dtype=dtype), targets.to(device=device).long()


def check_baseline(baseline: str | float, *, allowed: Sequence[str]) -> None:
    """Refuse a baseline name that is not in ``allowed`` (numbers are always allowed)."""
    if not isinstance(baseline, int | float) and baseline not in allowed:
        raise InputError(f"unknown baseline {baseline!r}; choose one of {', '.join(allowed)} or a number")


def constant_fill(inputs: torch.Tensor, baseline: str | float, *, quantus_compat: bool,
                  blur_kernel_size: int = 15) -> torch.Tensor:
    """Replacement values that do not change between steps, broadcastable to ``inputs``.

    ``"black"``: the sample's minimum per channel (compat: over all channels, quantus's
    "black"); ``"mean"``: the sample's mean per channel; ``"blur"``: the image blurred with a
    ``blur_kernel_size`` box filter (edges replicated); a number: that value.
    """
    if isinstance(baseline, int | float):
        return torch.full_like(inputs[:, :, :1, :1], float(baseline))
    if baseline == "black":
        dims = (1, 2, 3) if quantus_compat else (2, 3)
        return inputs.amin(dims, keepdim=True)
    if baseline == "mean":
        return inputs.mean((2, 3), keepdim=True)
    if baseline == "blur":
        if blur_kernel_size < 1 or blur_kernel_size % 2 == 0:
            raise InputError(f"blur_kernel_size must be odd and positive, got {blur_kernel_size}")
        r = blur_kernel_size // 2
        return F.avg_pool2d(F.pad(inputs, (r, r, r, r), mode="replicate"), blur_kernel_size, stride=1)
    raise InputError(f"baseline {baseline!r} changes per step; it has no constant fill")


def fill_by_step(table: torch.Tensor, when: torch.Tensor) -> torch.Tensor:
    """Per-value fill from a per-step table ``(N, steps)``: value replaced in step ``j`` gets ``table[:, j]``."""
    index = when.clamp(max=table.shape[1] - 1).flatten(1)
    return table.to(when.device).gather(1, index).reshape(when.shape).to(torch.float64)


def perturbation_curve(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, when: torch.Tensor,
                       fill: torch.Tensor, steps: int, *, softmax: bool, batch_size: int) -> torch.Tensor:
    """Target scores of the inputs after ``0 .. steps`` cumulative replacements: ``(N, steps + 1)`` float64."""
    n = len(inputs)
    fill = fill.to(inputs.dtype)

    def build(rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # Rows are consecutive: write each sample's run of steps by broadcasting its image, its
        # schedule and its fill (no gathered copies of them per row).
        start, stop = int(rows[0]), int(rows[0]) + len(rows)
        out = torch.empty((len(rows), *inputs.shape[1:]), dtype=inputs.dtype, device=inputs.device)
        row = start
        while row < stop:
            sample, first = divmod(row, steps + 1)
            last = min(steps + 1, first + stop - row)
            k = torch.arange(first, last, device=inputs.device).reshape(-1, 1, 1, 1)
            torch.where(when[sample] >= k, inputs[sample], fill[sample], out=out[row - start:row - start + last - first])
            row += last - first
        return out, targets[rows // (steps + 1)]

    def full_curve(part: slice) -> torch.Tensor:
        rows = torch.arange(part.start * (steps + 1), part.stop * (steps + 1), device=inputs.device)
        return scores_of_variants(model, len(rows), lambda r: build(r + rows[0]), batch_size=batch_size,
                                  softmax=softmax, device=inputs.device).reshape(-1, steps + 1)

    def step_input(part: slice, k: int) -> torch.Tensor:
        return torch.where(when[part] >= k, inputs[part], fill[part])

    if steps and pays_off(model, step_input(slice(0, 1), 0), step_input(slice(0, 1), 1)):
        return incremental_curve(model, n, step_input, steps,
                                 lambda out, part: scores_of_output(out, targets[part], softmax=softmax),
                                 batch_size=batch_size, full_curve=full_curve)
    return full_curve(slice(0, n))


def grid_padding(size: int, patch_size: int) -> tuple[int, int]:
    """Padding (before, after) that makes ``size`` a multiple of ``patch_size``, split as quantus does."""
    rest = size % patch_size
    if rest == 0:
        return 0, 0
    total = patch_size - rest
    return total // 2, math.ceil(total / 2)


def patch_sums(values: torch.Tensor, patch_size: int, *, mode: str) -> torch.Tensor:
    """Sums over each patch of the padded grid (all channels), row-major: ``(N, n_patches)``.

    ``values`` is ``(N, C, H, W)``; ``mode`` is the padding, ``"constant"`` (zeros) or
    ``"replicate"`` (quantus pads images with their edge values).
    """
    n, c, h, w = values.shape
    (top, bottom), (left, right) = grid_padding(h, patch_size), grid_padding(w, patch_size)
    padded = F.pad(values, (left, right, top, bottom), mode=mode)
    gh, gw = padded.shape[2] // patch_size, padded.shape[3] // patch_size
    return padded.reshape(n, c, gh, patch_size, gw, patch_size).sum((1, 3, 5)).reshape(n, gh * gw)


def patch_steps(patch_order: torch.Tensor, height: int, width: int, patch_size: int) -> torch.Tensor:
    """Step in which each pixel's patch is replaced, ``(N, 1, H, W)``, given the order of patch indices."""
    n, n_patches = patch_order.shape
    rank = torch.empty_like(patch_order)
    rank.scatter_(1, patch_order, torch.arange(n_patches, device=rank.device).expand(n, n_patches))
    (top, _), (left, _) = grid_padding(height, patch_size), grid_padding(width, patch_size)
    gh = (height + sum(grid_padding(height, patch_size))) // patch_size
    grid = rank.reshape(n, gh, -1).repeat_interleave(patch_size, 1).repeat_interleave(patch_size, 2)
    return grid[:, None, top:top + height, left:left + width]
