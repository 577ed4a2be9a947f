"""Drop ops that are the identity in eval mode: Identity, Dropout, ``F.dropout(training=False)``,
stochastic depth (``torchvision.ops.stochastic_depth(training=False)``, kept as one node by
torchvision's ``torch.fx.wrap``)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import fx, nn

from ..graph import get_module
from .base import PassContext

RULE = "drop-identity"
_IDENTITY_MODULES = (nn.Identity, nn.modules.dropout._DropoutNd)
_DROPOUT_FUNCTIONS = {F.dropout, F.dropout1d, F.dropout2d, F.dropout3d, F.alpha_dropout, torch.dropout}
# Wrapped functions named by (module, name), so torchvision is not imported here: → position of `training`.
_STOCHASTIC_DEPTH = {("torchvision.ops.stochastic_depth", "stochastic_depth"): 3}


def _training_position(node: fx.Node) -> int | None:
    """Position of the ``training`` argument when ``node`` calls a dropout-like function."""
    if node.op != "call_function":
        return None
    if node.target in _DROPOUT_FUNCTIONS:
        return 2
    return _STOCHASTIC_DEPTH.get((getattr(node.target, "__module__", ""), getattr(node.target, "__name__", "")))


def _is_identity(gm: fx.GraphModule, node: fx.Node) -> bool:
    module = get_module(gm, node)
    if module is not None:
        return isinstance(module, _IDENTITY_MODULES)
    position = _training_position(node)
    if position is None:
        return False
    training = node.kwargs.get("training", node.args[position] if len(node.args) > position else True)
    return training is False


def run(gm: fx.GraphModule, ctx: PassContext) -> None:
    """Replace every eval-mode identity op by its input."""
    for node in list(gm.graph.nodes):
        if _is_identity(gm, node) and node.args and isinstance(node.args[0], fx.Node):
            what = getattr(node.target, "__name__", node.target)
            if ctx.apply(RULE, node.name, f"{what} is the identity in eval mode"):
                node.replace_all_uses_with(node.args[0])
                gm.graph.erase_node(node)
