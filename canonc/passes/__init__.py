"""The rewrite passes, run in order to a fixed point.

Each pass is ``run(gm, ctx)``: it rewrites the graph in place (never the modules it
found: changed modules are new objects) and logs every rewrite and refusal in ``ctx``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import fx

from . import (
    attention,
    bn_as_layer,
    constant_offset,
    drop_identity,
    fold_constant_affine,
    fuse_chains,
    inference_in_place,
    layernorm_fold,
    lift_functional,
    lift_layers,
    merge_left,
    merge_left_views,
    merge_right,
    modularize,
    no_inplace,
    same_padding,
    split_concat_bn,
    split_norm_act,
    thresh_relu,
    unpack_mha,
    unshare,
)
from .base import LogEntry, PassContext

Pass = Callable[[fx.GraphModule, PassContext], None]

PIPELINE: list[tuple[str, Pass]] = [
    ("split-norm-act", split_norm_act.run),
    ("drop-identity", drop_identity.run),
    ("lift-functional", lift_functional.run),
    ("same-padding", same_padding.run),
    ("lift-layer", lift_layers.run),
    ("unpack-mha", unpack_mha.run),
    ("unshare", unshare.run),
    ("no-inplace", no_inplace.run),
    ("merge-left", merge_left.run),
    ("merge-left-views", merge_left_views.run),
    ("fold-constant-affine", fold_constant_affine.run),
    ("fuse-chains", fuse_chains.run),
    ("split-concat-bn", split_concat_bn.run),
    ("thresh-relu", thresh_relu.run),
    ("merge-right", merge_right.run),
    ("fold-norm-affine", layernorm_fold.run),
    ("attention", attention.run),
    ("constant-offset", constant_offset.run),
    ("modularize", modularize.run),
    ("inference-in-place", inference_in_place.run),
]

# Run once the pipeline reached its fixed point, then the pipeline again.
LAST_RESORT: list[tuple[str, Pass]] = [("bn-as-layer", bn_as_layer.run)]

MAX_ROUNDS = 8


def _fill_shapes(gm: fx.GraphModule) -> None:
    """Re-record shapes when a pass left a new data node without one (the next pass needs them)."""
    from ..graph import propagate_shapes

    inputs = [n.meta.get("val") for n in gm.graph.nodes if n.op == "placeholder"]
    missing = any("val" not in n.meta for n in gm.graph.nodes if n.op == "call_module")
    if missing and inputs and all(isinstance(t, torch.Tensor) for t in inputs):
        gm.recompile()
        propagate_shapes(gm, tuple(inputs))


def run_pipeline(gm: fx.GraphModule, ctx: PassContext, passes: list[tuple[str, Pass]] | None = None) -> None:
    """Run ``passes`` (default: the whole pipeline) until none rewrites anything."""
    from ..graph import erase_unused

    for stage in ([], LAST_RESORT if passes is None else []):
        before_stage = len(ctx.rewrites)
        for name, fn in stage:
            ctx.current_pass = name
            fn(gm, ctx)
        if stage and len(ctx.rewrites) == before_stage:
            break
        for _ in range(MAX_ROUNDS):
            before = len(ctx.rewrites)
            for name, fn in passes or PIPELINE:
                ctx.current_pass = name
                fn(gm, ctx)
                gm.graph.lint()
                _fill_shapes(gm)
            if len(ctx.rewrites) == before:
                break
    erase_unused(gm)


__all__ = ["PIPELINE", "LogEntry", "PassContext", "run_pipeline"]
