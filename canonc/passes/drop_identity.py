"""Drop ops that are the identity in eval mode: Identity, Dropout, ``F.dropout(training=False)``."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import fx, nn

from ..graph import get_module
from .base import PassContext

RULE = "drop-identity"
_IDENTITY_MODULES = (nn.Identity, nn.modules.dropout._DropoutNd)
_DROPOUT_FUNCTIONS = {F.dropout, F.dropout1d, F.dropout2d, F.dropout3d, F.alpha_dropout, torch.dropout}


def _is_identity(gm: fx.GraphModule, node: fx.Node) -> bool:
    module = get_module(gm, node)
    if module is not None:
        return isinstance(module, _IDENTITY_MODULES)
    if node.op == "call_function" and node.target in _DROPOUT_FUNCTIONS:
        training = node.kwargs.get("training", node.args[2] if len(node.args) > 2 else True)
        return training is False
    return False


def run(gm: fx.GraphModule, ctx: PassContext) -> None:
    """Replace every eval-mode identity op by its input."""
    for node in list(gm.graph.nodes):
        if _is_identity(gm, node) and node.args and isinstance(node.args[0], fx.Node):
            if ctx.apply(RULE, node.name, f"{node.target} is the identity in eval mode"):
                node.replace_all_uses_with(node.args[0])
                gm.graph.erase_node(node)
