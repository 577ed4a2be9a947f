"""Which intermediate tensors of the canonized graph equal which of the original graph.

The passes keep fx node names of untouched nodes and give a fused module the name of the
module it replaced, but a fused conv computes what the *BN after it* computed, and new
modules (``Sum``, ``Concat``, lifted activations) get new names. The matching therefore
never trusts a name alone:

1. **Same op.** A canonical node and the original node of the same name are paired when
   they do the same operation: the same module (type, settings up to ``inplace``, equal
   weights), or the same function / method / placeholder with equal constant arguments.
   A fused conv is *not* the same op as the original conv (its weights differ).
2. **Consumers name their inputs.** Going backwards (outputs first), the *i*-th data input
   of a paired same-op node (and of the output node) is paired with the *i*-th data input
   of its original. This is what pairs a fused ``conv1`` with the original ``bn1`` (the
   ReLU after both reads them), ``Sum`` with ``add`` and ``Concat`` with ``cat``.
3. **Lifted ops pass it on.** When a canonical module call is paired with an original
   *function* call (``add`` → ``Sum``, ``cat`` → ``Concat``, ``F.relu`` → ``ReLU``), the
   rewrite kept the operands in order, so their data inputs are paired position by position
   too; helper nodes without an original (``torch.stack`` feeding ``Sum``) are looked through.
4. **Consistency.** A same-op pair whose inputs were paired with *other* original nodes is
   dropped (a new node that happens to reuse a name of an unrelated original node).
5. **Moved values are not compared.** Rules that push an affine map *downstream* (merge
   right, ThreshReLU, BN split over a concat, and any rule not known to keep values in
   place) change every tensor from the node they logged down to the Conv / Linear that
   absorbs the map. Those original tensors are *tainted*: never paired, never used to pair
   others. Rules in :data:`IN_PLACE_RULES` keep the logged node's value (merge-left: the BN's
   value lives on in the fused conv; modularize: ``add``'s value in ``Sum``).

A pair is made only between tensors of the same shape, and each node is used once.
Tensors that no longer exist (a conv's output before its BN was folded in) have no pair.
"""

from __future__ import annotations

import re

import torch
from torch import fx, nn

from . import nn as cnn
from .graph import linear_base

IN_PLACE_RULES = frozenset({"merge-left", "modularize", "unshare", "no-inplace", "lift-functional", "drop-identity",
                            "split-norm-act", "inference-in-place"})
_INPLACE = re.compile(r",?\s*inplace=(True|False)")
_HELPERS = {torch.stack, cnn.stack_summands, torch.broadcast_tensors}


def data_inputs(node: fx.Node) -> list[fx.Node]:
    """Input nodes of ``node`` in argument order (nested lists flattened, constants skipped)."""
    found: list[fx.Node] = []
    fx.node.map_arg((node.args, node.kwargs), lambda n: found.append(n) if n.op != "get_attr" else None)
    return found


def _kind(module: nn.Module) -> type:
    """The module's class, with canonc's inference ReLU counted as the ``nn.ReLU`` it stands for."""
    return nn.ReLU if isinstance(module, cnn.ReLU) else type(module)


def _same_module(a: nn.Module, b: nn.Module) -> bool:
    if a is b:
        return True
    if _kind(a) is not _kind(b) or _INPLACE.sub("", a.extra_repr()) != _INPLACE.sub("", b.extra_repr()):
        return False
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(
        sa[k].shape == sb[k].shape and torch.equal(sa[k], sb[k].to(sa[k].dtype)) for k in sa
    )


def _constants(node: fx.Node) -> object:
    return fx.node.map_arg((node.args, node.kwargs), lambda _: None)


def same_op(gm_a: fx.GraphModule, a: fx.Node, gm_b: fx.GraphModule, b: fx.Node) -> bool:
    """True when nodes ``a`` (of ``gm_a``) and ``b`` (of ``gm_b``) apply the same operation."""
    if a.op != b.op:
        return False
    if a.op == "call_module":
        return _same_module(gm_a.get_submodule(a.target), gm_b.get_submodule(b.target))
    if a.op == "get_attr":
        return a.target == b.target
    if a.op == "placeholder":
        return a.target == b.target
    if a.op in ("call_function", "call_method"):
        if a.target != b.target or len(a.args) != len(b.args):
            return False
        try:
            return bool(_constants(a) == _constants(b))
        except RuntimeError:  # tensor constants: compare by identity only
            return False
    return a.op == "output"


def _shape(node: fx.Node) -> tuple[int, ...] | None:
    val = node.meta.get("val")
    return tuple(val.shape) if isinstance(val, torch.Tensor) else None


def _sources(node: fx.Node, known: set[fx.Node]) -> list[fx.Node]:
    """Data inputs of ``node``, looking through unpaired helper nodes (``stack``)."""
    out: list[fx.Node] = []
    for arg in data_inputs(node):
        if arg not in known and arg.op == "call_function" and arg.target in _HELPERS:
            out.extend(_sources(arg, known))
        else:
            out.append(arg)
    return out


def tainted(orig: fx.GraphModule, rewrites: list[dict[str, str]]) -> set[fx.Node]:
    """Original nodes whose values a value-moving rewrite changed (see rule 5 above)."""
    by_name = {n.name: n for n in orig.graph.nodes}
    logged = {by_name[e["node"]] for e in rewrites if e["node"] in by_name}
    todo = [by_name[e["node"]] for e in rewrites if e["rule"] not in IN_PLACE_RULES and e["node"] in by_name]
    seen: set[fx.Node] = set()
    while todo:
        node = todo.pop()
        if node in seen or node.op == "output":
            continue
        if node.op == "call_module" and node not in logged and linear_base(orig.get_submodule(node.target)) is not None:
            continue  # the layer that absorbs the moved map computes its original value again
        seen.add(node)
        todo.extend(node.users)
    return seen


def match(orig: fx.GraphModule, canon: fx.GraphModule,
          rewrites: list[dict[str, str]] = ()) -> dict[fx.Node, fx.Node]:
    """Pair canonical nodes with the original nodes that compute the same tensor.

    Parameters
    ----------
    orig, canon : fx.GraphModule
        The traced original and the canonized graph, both with shapes propagated
        (``node.meta['val']``).
    rewrites : list of dict
        The rewrite log (``rule``, ``node``); value-moving rules taint original nodes.

    Returns
    -------
    dict
        Canonical node → original node, for every pair found (the output nodes included).
    """
    bad = tainted(orig, list(rewrites))
    by_name = {n.name: n for n in orig.graph.nodes if n not in bad}
    same: dict[fx.Node, fx.Node] = {}
    for c in canon.graph.nodes:
        o = by_name.get(c.name)
        if o is not None and c.op != "output" and same_op(canon, c, orig, o):
            same[c] = o
    c_out = next(n for n in canon.graph.nodes if n.op == "output")
    o_out = next(n for n in orig.graph.nodes if n.op == "output")
    pairs = {**same, c_out: o_out}
    used = set(pairs.values()) | bad

    for c in reversed(list(canon.graph.nodes)):
        o = pairs.get(c)
        if o is None:
            continue
        if c in same or c is c_out:
            cs, os_ = data_inputs(c), data_inputs(o)
        elif c.op == "call_module" and o.op in ("call_function", "call_method"):
            cs, os_ = _sources(c, set(pairs)), data_inputs(o)
        else:
            continue
        if len(cs) != len(os_):
            continue
        for ci, oi in zip(cs, os_):
            if ci not in pairs and oi not in used and _shape(ci) == _shape(oi):
                pairs[ci] = oi
                used.add(oi)

    for c, o in list(same.items()):
        if any(ci in pairs and pairs[ci] is not oi for ci, oi in zip(data_inputs(c), data_inputs(o))):
            del pairs[c]
    return pairs
