"""Canonicality lint: everything in a graph that is not in canonical form, with a reason."""

from __future__ import annotations

import operator
from collections import Counter

import networkx as nx
import torch
import torch.nn.functional as F
from torch import fx, nn

from .graph import BN_TYPES, data_users, get_module, is_call, is_data, linear_base
from .passes.base import PassContext

_COMBINE = {
    operator.add: "add", operator.iadd: "add", torch.add: "add",
    operator.sub: "sub", operator.isub: "sub", torch.sub: "sub",
    operator.mul: "mul", operator.imul: "mul", torch.mul: "mul",
    operator.truediv: "div", torch.div: "div",
    operator.matmul: "matmul", torch.matmul: "matmul", torch.bmm: "bmm", torch.einsum: "einsum",
    torch.cat: "cat", torch.concat: "cat", torch.mean: "mean", torch.sum: "sum",
}
_METHODS = {"add": "add", "add_": "add", "sub": "sub", "mul": "mul", "mul_": "mul", "div": "div",
            "matmul": "matmul", "bmm": "bmm", "mean": "mean", "sum": "sum", "softmax": "softmax"}
_FUNCTIONAL_LAYERS = {F.batch_norm: "batch_norm", F.layer_norm: "layer_norm", F.conv1d: "conv1d",
                      F.conv2d: "conv2d", F.conv3d: "conv3d", F.linear: "linear", F.softmax: "softmax",
                      F.gelu: "gelu", F.silu: "silu", F.relu: "relu", torch.softmax: "softmax",
                      F.scaled_dot_product_attention: "scaled_dot_product_attention", F.group_norm: "group_norm",
                      F.rms_norm: "rms_norm", torch.baddbmm: "baddbmm"}
_VIEWS = ("flatten", "reshape", "view", "permute", "transpose", "contiguous")
_AFFINE_NORMS = (nn.LayerNorm, nn.RMSNorm, nn.GroupNorm, nn.modules.instancenorm._InstanceNorm)
_TRUSTED_ROOTS = {"", "torch", "_operator", "operator", "builtins", "math", "canonc"}


def _combine_items(node: fx.Node) -> list[dict[str, str]]:
    name = None
    if node.op == "call_function":
        try:
            name = _COMBINE.get(node.target) or _FUNCTIONAL_LAYERS.get(node.target)
        except TypeError:
            name = None
    elif node.op == "call_method":
        name = _METHODS.get(node.target)
    if name is None or not is_data(node):
        return []
    flat = [a for a in node.args if isinstance(a, (list, tuple))]
    operands = [a for a in node.args if not isinstance(a, (list, tuple))] + [x for f in flat for x in f]
    n_data = sum(is_data(a) for a in operands)
    if node.target in _FUNCTIONAL_LAYERS or name == "softmax":
        return [{"kind": "functional-layer", "node": node.name, "reason": f"functional {name} is not a module; XAI rules cannot attach"}]
    if n_data >= 2:
        return [{"kind": "functional-combine", "node": node.name, "reason": f"{name} of data tensors is not a module"}]
    if name in ("add", "sub", "mul", "div") and n_data == 1:
        return [{"kind": "constant-affine", "node": node.name, "reason": f"{name} by a constant (per-channel affine not folded)"}]
    if name in ("mean", "sum"):
        return [{"kind": "functional-combine", "node": node.name, "reason": f"{name} reduction is not a module"}]
    return []


def _opaque_items(node: fx.Node, module: nn.Module | None) -> list[dict[str, str]]:
    """Norms whose affine part is left, leaf modules with inner structure, wrapped functions."""
    if module is not None:
        name = type(module).__name__
        if isinstance(module, _AFFINE_NORMS) and (getattr(module, "elementwise_affine", False) or getattr(module, "affine", False)):
            return [{"kind": "norm-affine", "node": node.name,
                     "reason": f"{name}'s affine weight and bias are not folded into a neighbouring linear layer"}]
        if next(module.children(), None) is not None:
            return [{"kind": "opaque-module", "node": node.name,
                     "reason": f"{name} is a leaf with inner ops (e.g. matmul, softmax) that XAI rules cannot reach"}]
        return []
    if node.op == "call_function":
        where = getattr(node.target, "__module__", None) or ""
        if where.split(".")[0] not in _TRUSTED_ROOTS:
            name = getattr(node.target, "__name__", str(node.target))
            return [{"kind": "opaque-function", "node": node.name,
                     "reason": f"{where}.{name} is traced as one call (torch.fx.wrap); its inner ops are not canonized"}]
    return []


def _adjacent_linear(gm: fx.GraphModule) -> list[dict[str, str]]:
    """Linear layers feeding another linear layer with only views between (a linear chain)."""
    g = nx.DiGraph()
    for node in gm.graph.nodes:
        for user in data_users(node):
            g.add_edge(node, user)
    items = []
    for node in g.nodes:
        m = get_module(gm, node)
        if m is None or linear_base(m) is None:
            continue
        cur = node
        while True:
            succ = list(g.successors(cur))
            if len(succ) != 1:
                break
            cur = succ[0]
            if cur.op == "call_method" and cur.target in _VIEWS or is_call(cur, {torch.flatten}):
                continue
            nxt = get_module(gm, cur)
            if nxt is not None and linear_base(nxt) is not None:
                items.append({"kind": "linear-chain", "node": cur.name,
                              "reason": f"{node.target} feeds {cur.target} with nothing nonlinear between"})
            break
    return items


def lint(gm: fx.GraphModule, ctx: PassContext | None = None) -> list[dict[str, str]]:
    """List what is not canonical in ``gm``, each as ``{kind, node, reason}``."""
    items: list[dict[str, str]] = []
    calls = Counter(n.target for n in gm.graph.nodes if n.op == "call_module")
    for node in gm.graph.nodes:
        m = get_module(gm, node)
        if m is not None and isinstance(m, BN_TYPES):
            why = (ctx.reason_for(node.name) if ctx else "") or "not merged"
            items.append({"kind": "batchnorm-left", "node": node.name, "reason": why})
        if m is not None and calls[node.target] > 1:
            items.append({"kind": "shared-module", "node": node.name,
                          "reason": f"{node.target} is called {calls[node.target]} times"})
        items.extend(_combine_items(node))
        items.extend(_opaque_items(node, m))
    items.extend(_adjacent_linear(gm))
    return items


def count_bn(module: torch.nn.Module) -> int:
    """Number of BatchNorm modules in ``module``."""
    return sum(isinstance(m, BN_TYPES) for m in module.modules())
