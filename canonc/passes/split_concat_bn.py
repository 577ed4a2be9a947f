"""R3: a BatchNorm after a channel concat merges slice by slice into the concat's producers.

``BN(cat(x_1..x_k)) = cat(BN_1(x_1), ..., BN_k(x_k))`` with the matching parameter
slices. A slice merges left (L1) into its producer's Conv / ConvTranspose / Linear,
also through average pooling, when that producer feeds only this concat; with
``strategy="untangle"`` a shared producer is cloned for this BN instead, within the
``max_param_growth`` budget (default 6×). Slices that do not merge stay in an exact
affine BN (``eps = 0``, identity on the merged channels) that goes right (R2 / R1).
"""

from __future__ import annotations

import torch
from torch import fx, nn

from .. import nn as cnn
from ..fold import affine_bn, bn_affine, fold_out, out_channels
from ..graph import (
    BN_TYPES,
    CAT_OPS,
    clone_chain,
    clone_module,
    data_users,
    get_module,
    is_call,
    linear_base,
    replace_module,
    shape_of,
)
from .base import PassContext
from .merge_left import bn_refusal
from .merge_right import commute_step

RULE = "split-concat-bn"
UNTANGLE = "untangle"
DEFAULT_MAX_GROWTH = 6.0


def cat_parts(gm: fx.GraphModule, node: fx.Node) -> list[fx.Node] | None:
    """The tensors ``node`` concatenates along axis 1 (functional cat or Concat), else None."""
    shape = shape_of(node)
    if shape is None or len(shape) < 2:
        return None
    if is_call(node, CAT_OPS):
        parts = node.args[0] if node.args else node.kwargs.get("tensors")
        dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim", 0)
    elif isinstance(get_module(gm, node), cnn.Concat):
        parts, dim = node.args[0], get_module(gm, node).dim
    else:
        return None
    if not isinstance(parts, (list, tuple)) or not isinstance(dim, int) or dim % len(shape) != 1:
        return None
    if not all(isinstance(p, fx.Node) and shape_of(p) is not None for p in parts):
        return None
    return list(parts)


def slice_producer(gm: fx.GraphModule, part: fx.Node, s: torch.Tensor) -> tuple[list[fx.Node], str]:
    """The chain ``[producer, *commuting ops]`` that computes ``part``, or ``([], reason)``."""
    chain = [part]
    while True:
        cur = chain[0]
        module = get_module(gm, cur)
        if module is not None and linear_base(module) is not None and not isinstance(module, nn.Linear):
            if out_channels(module) != s.numel():
                return [], f"{cur.target} has {out_channels(module)} channels, the slice {s.numel()}"
            if len(shape_of(cur) or ()) != len(module.kernel_size) + 2:
                return [], f"{cur.target} runs unbatched, so its channel axis is not the BN's"
            return chain, ""
        if module is None or not commute_step(gm, cur, s)[0] or not isinstance(cur.args[0], fx.Node):
            return [], f"comes from '{cur.name}', not from a Conv/ConvTranspose"
        chain.insert(0, cur.args[0])


def _private(chain: list[fx.Node], cat: fx.Node) -> bool:
    return all(data_users(n) == [nx] for n, nx in zip(chain, chain[1:] + [cat]))


def _clone_size(module: nn.Module) -> int:
    """Parameters a folded clone of ``module`` adds (its weights, and the bias the fold gives it)."""
    return sum(p.numel() for p in module.parameters()) + (out_channels(module) if module.bias is None else 0)


def run(gm: fx.GraphModule, ctx: PassContext) -> None:
    """Split each BN that follows a channel concat onto the concat's producers."""
    strategy = ctx.options.get("strategy", "auto")
    if strategy == "left-only":
        return
    untangle = strategy == "untangle"
    total = sum(p.numel() for p in gm.parameters())
    start = ctx.state.setdefault("params_start", total)
    limit = float(ctx.options.get("max_param_growth", DEFAULT_MAX_GROWTH)) * start
    for node in list(gm.graph.nodes):
        bn = get_module(gm, node)
        if bn is None or not isinstance(bn, BN_TYPES) or bn_refusal(bn) or not isinstance(node.args[0], fx.Node):
            continue
        cat = node.args[0]
        parts = cat_parts(gm, cat)
        if parts is None:
            continue
        s, t = bn_affine(bn)
        shared_cat = data_users(cat) != [node]
        bounds = torch.tensor([0] + [shape_of(p)[1] for p in parts]).cumsum(0).tolist()
        merge, reasons, grow = [], [], 0
        for i, part in enumerate(parts):
            sl = slice(bounds[i], bounds[i + 1])
            if bool((s[sl] == 1).all() and (t[sl] == 0).all()):
                continue
            chain, why = slice_producer(gm, part, s[sl])
            if parts.count(part) > 1:
                why = "the same tensor fills several slices"
            if why:
                reasons.append(f"slice {i} {why}")
                continue
            if shared_cat or not _private(chain, cat):
                if not untangle:
                    reasons.append(f"slice {i} producer {chain[0].target} has other users (strategy untangle would clone it)")
                    continue
                size = _clone_size(gm.get_submodule(chain[0].target))
                if total + grow + size > limit:
                    reasons.append(f"slice {i}: cloning {chain[0].target} would exceed --max-param-growth "
                                   f"{limit / start:g}× ({(total + grow + size) / start:.2f}×)")
                    continue
                grow += size
                merge.append((i, sl, chain, True))
            else:
                merge.append((i, sl, chain, False))
        if not merge:
            ctx.skip(RULE, node.name, "; ".join(reasons))
            continue
        cloned = sum(c for *_, c in merge)
        rule = UNTANGLE if cloned else RULE
        if not ctx.apply(rule, node.name):
            continue
        total += grow
        if shared_cat:
            with gm.graph.inserting_before(node):
                own = gm.graph.node_copy(cat)
            own.meta = dict(cat.meta)
            if own.op == "call_module":
                clone_module(gm, own)
            node.replace_input_with(cat, own)
            cat = own
        s_rest, t_rest = s.clone(), t.clone()
        for _, sl, chain, clone in merge:
            layer = fold_out(gm.get_submodule(chain[0].target), s[sl], t[sl])
            if clone:
                clone_chain(gm, chain, cat, layer)
            else:
                replace_module(gm, chain[0], layer)
            s_rest[sl], t_rest[sl] = 1.0, 0.0
        done = f"{len(merge)} of {len(parts)} slices folded into their producers ({cloned} cloned)"
        if not reasons:
            node.replace_all_uses_with(cat)
            gm.graph.erase_node(node)
        else:
            replace_module(gm, node, affine_bn(bn, s_rest, t_rest))
            done += "; the rest stays as an affine BN to merge right: " + "; ".join(reasons)
        ctx.rewrites[-1].detail = done
