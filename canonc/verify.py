"""The equivalence gate: the canonized model must compute the original's function.

Logic is checked in float64 on several inputs; the tolerance is
``max(1e-9·(1 + max|y|), 1e-3·err32)`` where ``err32`` is how far the original's own
float32 evaluation is from its float64 one (DESIGN.md §4).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn
from torch.utils._pytree import tree_flatten

from .errors import InputError

ABS_TOL = 1e-9
REL_TO_FP32 = 1e-3


def outputs(model: nn.Module, inputs: tuple[torch.Tensor, ...]) -> list[torch.Tensor]:
    """Run ``model`` without gradients and return its tensor outputs, flattened."""
    with torch.no_grad():  # clones: a model may write into its input in place (relu_ on x)
        out = model(*[t.clone() if isinstance(t, torch.Tensor) else t for t in inputs])
    leaves, _ = tree_flatten(out)
    return [t for t in leaves if isinstance(t, torch.Tensor)]


def _max_abs(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    if len(a) != len(b):
        return float("inf")
    worst = 0.0
    for x, y in zip(a, b):
        if x.shape != y.shape:
            return float("inf")
        d = (x.double() - y.double()).abs().max().item() if x.numel() else 0.0
        if d != d:  # NaN
            return float("inf")
        worst = max(worst, d)
    return worst


def _max_mag(ys: list[torch.Tensor]) -> float:
    return max((y.double().abs().max().item() for y in ys if y.numel()), default=0.0)


def check_inputs(example: tuple[torch.Tensor, ...], reference: nn.Module, seed: int = 0) -> list[tuple[torch.Tensor, ...]]:
    """Random float64 inputs: batch 1 and 3 at the given shape, and batch 1 at a second size.

    Batch 3 and the second spatial size (trailing dims + 32) are used only where
    ``reference`` accepts them; a model that rejects batch 1 is checked at its own batch.
    """
    gen = torch.Generator().manual_seed(seed)

    def draw(batch: int, grow: int = 0) -> tuple[torch.Tensor, ...]:
        out = []
        for t in example:
            shape = list(t.shape)
            shape[0] = batch
            if grow and len(shape) >= 3:
                shape[2:] = [d + grow for d in shape[2:]]
            if t.is_floating_point():
                out.append(torch.randn(shape, generator=gen, dtype=torch.float64))
            else:
                out.append(t.expand(shape).clone() if t.numel() else t)
        return tuple(out)

    def accepted(x: tuple[torch.Tensor, ...]) -> bool:
        try:
            outputs(reference, x)
            return True
        except Exception:  # noqa: BLE001 - the model takes only its own batch size or spatial size
            return False

    own, first = example[0].shape[0], draw(1)
    inputs = [first] if own == 1 or accepted(first) else [draw(own)]
    batch3 = draw(3)
    if accepted(batch3):
        inputs.append(batch3)
    if any(t.dim() >= 3 and t.is_floating_point() for t in example):
        grown = draw(1, grow=32)
        if accepted(grown):
            inputs.append(grown)
    return inputs


@dataclass
class GateResult:
    """Outcome of the float64 gate and the float32 artifact check."""

    passed: bool
    max_abs_error_fp64: float
    max_rel_error_fp64: float
    tolerance: float
    reference_fp32_error: float
    max_abs_error_fp32: float | None = None
    input_shapes: list[list[list[int]]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _other_size(x: tuple[torch.Tensor, ...], first: tuple[torch.Tensor, ...]) -> bool:
    """True when ``x`` differs from ``first`` beyond the batch axis (the second spatial size)."""
    return any(a.shape[1:] != b.shape[1:] for a, b in zip(x, first))


def _input_blind(x: tuple[torch.Tensor, ...], ys: list[torch.Tensor]) -> bool:
    """True when ``x`` holds several samples and no floating output differs between them."""
    batch = x[0].shape[0] if x and x[0].dim() else 1
    per_sample = [y for y in ys if y.is_floating_point() and y.dim() and y.shape[0] == batch]
    return batch > 1 and bool(per_sample) and all(torch.equal(y, y[:1].expand_as(y)) for y in per_sample)


def gate(
    original64: nn.Module,
    canon64: nn.Module,
    original32: nn.Module,
    inputs: list[tuple[torch.Tensor, ...]],
    dtype: torch.dtype,
) -> GateResult:
    """Compare ``canon64`` with ``original64`` on ``inputs`` (float64) under the tolerance.

    ``original32`` (the model in its own ``dtype``) gives ``err32``, the original's own
    rounding error, which scales the tolerance for ill-conditioned models. An input of
    another spatial size that the canonized graph does not run (a size fixed while
    tracing) is left out with a note; at the given size such a failure fails the gate.
    """
    passed, worst_abs, worst_rel, worst_tol, worst32 = True, 0.0, 0.0, 0.0, 0.0
    used, notes = [], []
    for x in inputs:
        y64 = outputs(original64, x)
        try:
            yc = outputs(canon64, x)
        except Exception as exc:  # noqa: BLE001 - a rewrite that breaks the forward fails the gate like a wrong one
            if _other_size(x, inputs[0]):
                shape = ",".join(str(d) for d in x[0].shape)
                notes.append(f"second input size {shape} skipped: the traced graph is fixed to the example's size "
                             f"({type(exc).__name__})")
                continue
            yc = []
        used.append(x)
        if _input_blind(x, y64):
            notes.append("the model's output is the same for every input it was checked on (a zero-initialised "
                         "head?), so the check cannot see the layers before it; canonize it with its trained "
                         "weights, or with random weights in place of the zeros")
        try:
            y32 = outputs(original32, tuple(t.to(dtype) if t.is_floating_point() else t for t in x))
        except (RuntimeError, NotImplementedError) as exc:  # e.g. an op with no float16 kernel on this CPU
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise InputError(f"the model does not run in {dtype} on this device ({first}); "
                             "convert it to float32 (model.float()) and canonize that") from exc
        err = _max_abs(yc, y64)
        err32 = _max_abs(y32, y64)
        mag = _max_mag(y64)
        tol = max(ABS_TOL * (1.0 + mag), REL_TO_FP32 * (err32 if err32 != float("inf") else 0.0))
        passed = passed and err <= tol
        worst_abs = max(worst_abs, err)
        worst_rel = max(worst_rel, err / mag if mag > 0 else err)
        worst_tol = max(worst_tol, tol)
        worst32 = max(worst32, err32)
    shapes = [[list(t.shape) for t in x] for x in used]
    return GateResult(passed, worst_abs, worst_rel, worst_tol, worst32, input_shapes=shapes, notes=notes)


def artifact_error(artifact: nn.Module, original64: nn.Module, inputs: list[tuple[torch.Tensor, ...]], dtype: torch.dtype) -> float:
    """Max abs error of the written (e.g. float32) model against the float64 original."""
    worst = 0.0
    for x in inputs:
        y = outputs(artifact, tuple(t.to(dtype) if t.is_floating_point() else t for t in x))
        worst = max(worst, _max_abs(y, outputs(original64, x)))
    return worst
