"""Turn off ``inplace`` on every module: a canonical model never mutates its activations."""

from __future__ import annotations

import copy

from torch import fx

from ..graph import get_module, replace_module
from .base import PassContext

RULE = "no-inplace"


def run(gm: fx.GraphModule, ctx: PassContext) -> None:
    """Replace modules with ``inplace=True`` by copies with ``inplace=False``."""
    for node in list(gm.graph.nodes):
        module = get_module(gm, node)
        if module is not None and getattr(module, "inplace", False) is True:
            if ctx.apply(RULE, node.name, f"{node.target}: inplace=False"):
                new = copy.deepcopy(module)
                new.inplace = False
                replace_module(gm, node, new)
