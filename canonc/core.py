"""``canonize()``: trace → passes → gate → artifact, on a private float64 copy."""

from __future__ import annotations

import copy
import time
from collections.abc import Iterable
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import fx, nn

from .errors import InputError, RefusedError, VerificationError
from .flops import count_flops
from .graph import BN_TYPES, get_module, propagate_shapes
from .lint import count_bn, lint
from .passes import PassContext, run_pipeline
from .passes.merge_left import bn_refusal
from .report import Report
from .report_data import annotate
from .trace import resolve_inplace, trace
from .verify import artifact_error, check_inputs, gate, outputs

STRATEGIES = ("auto", "left-only", "untangle")


@dataclass
class CanonResult:
    """A canonized module (eval mode, the input's dtype) and its report."""

    module: fx.GraphModule
    report: Report


def _as_tuple(example: torch.Tensor | tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    if isinstance(example, torch.Tensor):
        return (example,)
    if isinstance(example, (tuple, list)) and example and all(isinstance(t, torch.Tensor) for t in example):
        return tuple(example)
    raise InputError("example_input must be a tensor or a tuple of tensors; pass --input-shape N,C,H,W")


def model_dtype(model: nn.Module) -> torch.dtype:
    """Floating dtype of the model's parameters (float32 when it has none)."""
    for p in list(model.parameters()) + list(model.buffers()):
        if p.is_floating_point():
            return p.dtype
    return torch.float32


def check_weights(model: nn.Module) -> None:
    """Refuse models whose parameters or buffers hold NaN or Inf."""
    for name, t in list(model.named_parameters()) + list(model.named_buffers()):
        if t.is_floating_point() and not torch.isfinite(t).all():
            raise InputError(f"weight '{name}' contains NaN or Inf; repair or retrain the model before canonizing")


def count_params(model: nn.Module) -> int:
    """Number of parameters (shared ones counted once)."""
    return sum(p.numel() for p in model.parameters())


@contextmanager
def _timer(timings: dict[str, float], stage: str):
    start = time.perf_counter()
    yield
    timings[stage] = timings.get(stage, 0.0) + time.perf_counter() - start


def cast_copy(module: nn.Module, dtype: torch.dtype) -> nn.Module:
    """Deep copy of ``module`` with its floating parameters and buffers in ``dtype``.

    Each tensor is cast on its own, so a large model never has a second float64 copy
    alive (``deepcopy(m).to(dtype)`` holds one: 8 bytes per parameter more at peak).
    """
    memo: dict[int, torch.Tensor] = {}
    for t in [*module.parameters(), *module.buffers()]:
        if t.is_floating_point() and id(t) not in memo:
            new = t.detach().to(dtype, copy=True)
            memo[id(t)] = nn.Parameter(new, requires_grad=t.requires_grad) if isinstance(t, nn.Parameter) else new
    return copy.deepcopy(module, memo)


def _to64(example: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    # copies: the caller's tensors must survive a model that writes into its input
    return tuple(t.detach().to("cpu", torch.float64 if t.is_floating_point() else t.dtype, copy=True) for t in example)


def build(model64: nn.Module, example64: tuple[torch.Tensor, ...], options: dict, leaves: Iterable[str] = (),
          budget: int | None = None, timings: dict[str, float] | None = None) -> tuple[fx.GraphModule, PassContext]:
    """Trace ``model64`` and run the pipeline; return the canonical graph and the pass log.

    Submodules are re-registered in execution order; ``model64`` itself is not modified.
    """
    timings = {} if timings is None else timings
    with _timer(timings, "trace"):
        gm = trace(model64, leaves, n_inputs=len(example64), example=example64)
        try:
            propagate_shapes(gm, example64)
        except Exception as exc:  # noqa: BLE001 - the model rejects this input
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            shape = ",".join(str(d) for d in example64[0].shape)
            raise InputError(f"model does not accept input of shape {shape} ({first}); pass the right --input-shape") from exc
        resolve_inplace(gm)
    ctx = PassContext(options=options, budget=budget)
    ctx.state["flops_start"] = count_flops(gm)
    ctx.state["bn_nodes"] = [n.name for n in gm.graph.nodes if isinstance(get_module(gm, n), BN_TYPES)]
    with _timer(timings, "passes"):
        run_pipeline(gm, ctx)
        gm = fx.GraphModule(gm, gm.graph, type(model64).__name__ + "Canonical")
        gm.eval()
    return gm, ctx


def _locate_failure(model64: nn.Module, example64, options, leaves, n_rewrites: int, x, tol: float) -> str:
    """Bisect over the rewrite budget to find the first rewrite that breaks equivalence."""
    ref = outputs(model64, x)

    def bad(k: int) -> bool:
        gm, _ = build(model64, example64, options, leaves, budget=k)
        try:
            ys = outputs(gm, x)
        except Exception:  # noqa: BLE001 - a rewrite that breaks the forward is a bad one
            return True
        return len(ys) != len(ref) or any(
            a.shape != b.shape or (a - b).abs().max().item() > tol or not torch.isfinite(a).all() for a, b in zip(ys, ref))

    if bad(0):
        return "the traced graph alone differs from the model (non-deterministic or untraceable control flow)"
    lo, hi = 0, n_rewrites  # bad(lo) is False, bad(hi) is True
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if not bad(mid) else (lo, mid)
    _, ctx = build(model64, example64, options, leaves, budget=hi)
    entry = ctx.rewrites[hi - 1]
    return f"pass '{ctx.rewrite_pass[hi - 1]}' broke equivalence at node '{entry.node}' ({entry.rule}: {entry.detail})"


def canonize(
    model: nn.Module,
    example_input: torch.Tensor | tuple[torch.Tensor, ...],
    *,
    strategy: str = "auto",
    verify: bool = True,
    leaves: Iterable[str] = (),
    name: str | None = None,
    options: dict | None = None,
    profile: bool = False,
) -> CanonResult:
    """Rewrite ``model`` into canonical form and prove it computes the same function.

    Parameters
    ----------
    model : nn.Module
        The user's model; never modified.
    example_input : Tensor or tuple of Tensor
        An input of the shape the model is used with (batch size is varied by the gate).
    strategy : {"auto", "left-only", "untangle"}
        What to do with BN that cannot merge into a preceding layer.
    verify : bool
        Run the float64 equivalence gate (default). Without it nothing is proven.
    leaves : iterable of str
        Qualified module names to keep opaque while tracing.
    name : str, optional
        Model name for the report.
    options : dict, optional
        Pass options (e.g. ``{"bias_map": False}``), visible to every pass as ``ctx.options``.
    profile : bool
        Also fill the report's per-layer error profile, FLOPs and graphs (for the HTML /
        Markdown report; a few extra forward passes). A failed gate always fills them.

    Returns
    -------
    CanonResult
        ``.module`` in eval mode and the model's dtype, ``.report`` with the log.

    Raises
    ------
    InputError, RefusedError, VerificationError
    """
    if not isinstance(model, nn.Module):
        raise InputError(f"expected a torch.nn.Module, got {type(model).__name__}")
    if strategy not in STRATEGIES:
        raise InputError(f"unknown strategy '{strategy}'; choose one of {', '.join(STRATEGIES)}")
    example = _as_tuple(example_input)
    check_weights(model)
    leaves = tuple(leaves)
    options = {**(options or {}), "strategy": strategy}
    timings: dict[str, float] = {}
    report = Report(model=name or type(model).__name__, input_shape=[list(t.shape) for t in example], strategy=strategy)
    dtype = model_dtype(model)

    with _timer(timings, "copy"):
        model64 = copy.deepcopy(model)
        if any(m.training for m in model64.modules()):
            report.warnings.append("model was in train mode; canonized (and verified) in eval mode")
        model64.eval().to(torch.float64)
    example64 = _to64(example)
    gm, ctx = build(model64, example64, options, leaves, timings=timings)

    fatal = [e for e in ctx.skipped if e.reason and e.reason == bn_refusal_reason(gm, e.node)]
    report.rewrites = [e.to_dict() for e in ctx.rewrites]
    report.skipped = [e.to_dict() for e in ctx.skipped]
    report.lint = lint(gm, ctx)
    report.bn_before, report.bn_after = count_bn(model), count_bn(gm)
    report.params_before = count_params(model)
    report.params_after = count_params(gm)  # the float64 graph has the artifact's parameters
    report.param_growth = report.params_after / report.params_before if report.params_before else None
    report.bn_actions = bn_actions(ctx, gm)
    report.flops_before, report.flops_after = ctx.state["flops_start"], count_flops(gm)
    if fatal:
        module = next((n.target for n in gm.graph.nodes if n.name == fatal[0].node), fatal[0].node)
        report.failure = f"BN '{module}': {fatal[0].reason}"
        raise RefusedError(f"{report.failure}; give it running statistics (track_running_stats=True) and re-train")

    if verify:
        with _timer(timings, "verify"):
            ref32 = model if not any(m.training for m in model.modules()) else copy.deepcopy(model).eval()
            inputs = check_inputs(example64, model64)
            result = gate(model64, gm, ref32, inputs, dtype)
        report.max_abs_error_fp64 = result.max_abs_error_fp64
        report.max_rel_error_fp64 = result.max_rel_error_fp64
        report.tolerance_fp64 = result.tolerance
        report.reference_fp32_error = result.reference_fp32_error
        report.check_inputs = result.input_shapes
        report.warnings.extend(result.notes)
        inputs = [x for x in inputs if [list(t.shape) for t in x] in result.input_shapes]
        if not result.passed:
            with _timer(timings, "locate"):
                where = _locate_failure(model64, example64, options, leaves, len(ctx.rewrites), inputs[0], result.tolerance)
            report.failure = where
            with _timer(timings, "profile"):
                _annotate_failure(report, model64, gm, inputs, dtype, leaves)
            report.timings_s = timings
            raise VerificationError(
                f"verification failed (max abs error {result.max_abs_error_fp64:.3g} > {result.tolerance:.3g}): "
                f"{where}; nothing was written",
                report,
            )
    with _timer(timings, "artifact"):
        artifact = cast_copy(gm, dtype).eval()
        if verify:
            report.max_abs_error_fp32 = artifact_error(artifact, model64, inputs, dtype)
            report.verified = True
    if verify and profile:
        with _timer(timings, "profile"):
            annotate(report, model64, gm, inputs, dtype, leaves)
    report.timings_s = {k: round(v, 4) for k, v in timings.items()}
    return CanonResult(artifact, report)


def bn_actions(ctx: PassContext, gm: fx.GraphModule) -> dict[str, str]:
    """Per BN node of the traced model: the rewrites that removed it, or ``kept: <reasons>``."""
    kept = {n.name for n in gm.graph.nodes if isinstance(get_module(gm, n), BN_TYPES)}
    done: dict[str, list[str]] = {}
    for entry in ctx.rewrites:
        done.setdefault(entry.node, []).append(f"{entry.rule}: {entry.detail}")
    return {name: "kept: " + (ctx.reason_for(name) or "not merged") if name in kept else "; ".join(done.get(name, []))
            for name in ctx.state.get("bn_nodes", [])}


def _annotate_failure(report: Report, model64: nn.Module, gm: fx.GraphModule, inputs: list[tuple[torch.Tensor, ...]],
                      dtype: torch.dtype, leaves: Iterable[str]) -> None:
    """Fill the per-layer profile of a failed gate; a failure here must not hide the gate's."""
    try:
        annotate(report, model64, gm, inputs, dtype, leaves)
    except Exception as exc:  # noqa: BLE001 - the VerificationError is what the user needs
        report.warnings.append(f"per-layer error profile unavailable: {type(exc).__name__}: {exc}")


def bn_refusal_reason(gm: fx.GraphModule, node_name: str) -> str:
    """The no-running-statistics reason if ``node_name`` is such a BN in ``gm``, else ``''``."""
    for node in gm.graph.nodes:
        if node.name == node_name and node.op == "call_module":
            module = gm.get_submodule(node.target)
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                return bn_refusal(module)
    return ""
