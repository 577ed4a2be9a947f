"""A dataflow graph as JSON-ready data for the HTML report's drawings.

Each node carries its module scope (``features.denseblock1.denselayer1``) so the viewer
can collapse a scope into one box, and flags: ``changed`` (no node of the other graph does
the same operation under the same name: fused, replaced, new or removed), ``refused``
(a rule refused it and no rule rewrote it) and ``diverges`` (the first diverging point of a failed
verification).
"""

from __future__ import annotations

import torch
from torch import fx

from .graph import is_meta_user
from .match import same_op


def _scope(node: fx.Node) -> str:
    if node.op == "call_module":
        return str(node.target).rpartition(".")[0]
    stack = node.meta.get("nn_module_stack")
    if stack:
        return str(list(stack.values())[-1][0])
    return ""


def _label(gm: fx.GraphModule, node: fx.Node) -> tuple[str, str]:
    if node.op == "call_module":
        return str(node.target), type(gm.get_submodule(node.target)).__name__
    if node.op in ("call_function", "call_method"):
        return node.name, getattr(node.target, "__name__", str(node.target))
    return node.name, node.op


def graph_data(gm: fx.GraphModule, other: fx.GraphModule, refused: set[str] = frozenset(),
               diverges: str = "") -> dict:
    """Nodes and edges of ``gm`` with scopes and highlight flags (``other``: the graph it is compared with).

    Returns
    -------
    dict
        ``{"nodes": [{id, label, kind, scope, shape, changed, refused, diverges}], "edges": [[i, j]]}``
        with nodes in execution order; shape reads and asserts are left out.
    """
    others = {n.name: n for n in other.graph.nodes}
    nodes = [n for n in gm.graph.nodes if n.op != "get_attr" and not is_meta_user(n)]
    index = {n: i for i, n in enumerate(nodes)}
    scopes = {n: _scope(n) for n in nodes}
    for n in reversed(nodes):  # helpers without a scope (torch.stack before Sum) join their user's
        if not scopes[n] and n.op not in ("placeholder", "output"):
            users = [u for u in n.users if u in scopes and scopes[u]]
            scopes[n] = scopes[users[0]] if users else ""
    out = []
    for n in nodes:
        label, kind = _label(gm, n)
        mate = others.get(n.name)
        val = n.meta.get("val")
        out.append({
            "id": n.name, "label": label, "kind": kind, "scope": scopes[n],
            "shape": list(val.shape) if isinstance(val, torch.Tensor) else [],
            "changed": n.op != "output" and (mate is None or not same_op(gm, n, other, mate)),
            "refused": n.name in refused, "diverges": n.name == diverges,
        })
    edges = sorted({(index[a], index[n]) for n in nodes for a in n.all_input_nodes if a in index})
    return {"nodes": out, "edges": [list(e) for e in edges]}
