"""What the human-readable reports show beyond the gate's numbers: per-layer error,
FLOPs before and after, and both dataflow graphs (filled into a :class:`Report`)."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import fx, nn

from .flops import count_flops
from .graph import propagate_shapes
from .graphview import graph_data
from .match import match
from .profile import as_rows, error_profile, first_divergence
from .report import Report
from .trace import trace


def annotate(
    report: Report,
    model64: nn.Module,
    canon64: fx.GraphModule,
    inputs: list[tuple[torch.Tensor, ...]],
    dtype: torch.dtype,
    leaves: Iterable[str] = (),
) -> None:
    """Add FLOPs, the per-layer error profile, node matching and graphs to ``report``.

    Parameters
    ----------
    report : Report
        Filled in place (``flops_*``, ``error_profile``, ``first_divergence``,
        ``matched_nodes``, ``graph_before``, ``graph_after``).
    model64 : nn.Module
        The float64 original (traced again here; not modified).
    canon64 : fx.GraphModule
        The canonized graph in float64 (verified or not).
    inputs : list of tuple of Tensor
        The gate's float64 inputs; the first gives the shapes for FLOPs.
    dtype : torch.dtype
        The written artifact's dtype.
    leaves : iterable of str
        The leaves the model was traced with.
    """
    orig = trace(model64, leaves)
    for gm in (orig, canon64):
        propagate_shapes(gm, inputs[0])
    report.flops_before, report.flops_after = count_flops(orig), count_flops(canon64)
    pairs = match(orig, canon64, report.rewrites)
    points = error_profile(orig, canon64, inputs, dtype, pairs)
    report.error_profile = as_rows(points)
    first = first_divergence(points)
    if first is not None:
        where = f" ({first.kind} {first.layer})" if first.layer else f" ({first.kind})"
        report.first_divergence = (
            f"{first.node}{where}, which computes the original's {first.original}: "
            f"error {first.err_fp64:.3g} > tolerance {first.tolerance:.3g}"
        )
    report.matched_nodes = {o.name: c.name for c, o in pairs.items() if c.op != "output"}
    refused = {e["node"] for e in report.skipped} - {e["node"] for e in report.rewrites}  # still refused at the end
    report.graph_before = graph_data(orig, canon64, refused, first.original if first else "")
    report.graph_after = graph_data(canon64, orig, refused, first.node if first else "")
