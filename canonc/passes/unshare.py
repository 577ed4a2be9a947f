"""Give every call site its own module: XAI hook state lives per module instance."""

from __future__ import annotations

from collections import defaultdict

from torch import fx

from ..graph import clone_module
from .base import PassContext

RULE = "unshare"


def run(gm: fx.GraphModule, ctx: PassContext) -> None:
    """Clone each module called at more than one site, once per extra site."""
    sites: dict[str, list[fx.Node]] = defaultdict(list)
    for node in gm.graph.nodes:
        if node.op == "call_module":
            sites[node.target].append(node)
    for target, nodes in sites.items():
        for node in nodes[1:]:
            if ctx.apply(RULE, node.name, f"{target} is called {len(nodes)} times"):
                new = clone_module(gm, node)
                ctx.rewrites[-1].detail += f"; this site now calls {new}"
