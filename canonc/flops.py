"""FLOPs of one forward pass, counted over a shape-propagated fx graph.

Conv / ConvTranspose / Linear count ``2·MACs`` (plus one per output for the bias);
BatchNorm and other normalizations 2 per element (scale and shift); every other module or
arithmetic call 1 per output element; views, indexing and placeholders nothing. Enough to
compare a model with its canonized form: merging a BN removes its ``2·numel``.
"""

from __future__ import annotations

import math
import operator

import torch
from torch import fx, nn

from . import nn as cnn

_NORMS = (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm, nn.modules.instancenorm._InstanceNorm)
_FREE_METHODS = {"view", "reshape", "flatten", "permute", "transpose", "contiguous", "size", "dim", "unsqueeze",
                 "squeeze", "expand", "chunk", "split", "__getitem__"}
_FREE_FUNCTIONS = {torch.flatten, torch.reshape, torch.permute, torch.transpose, torch.stack, cnn.stack_summands, torch.cat,
                   torch.unsqueeze, torch.squeeze, torch.broadcast_tensors, operator.getitem, getattr}


def _numel(node: fx.Node) -> int:
    val = node.meta.get("val")
    return val.numel() if isinstance(val, torch.Tensor) else 0


def node_flops(gm: fx.GraphModule, node: fx.Node) -> int:
    """FLOPs of one node (0 for data movement)."""
    out = _numel(node)
    if node.op == "call_module":
        m = gm.get_submodule(node.target)
        if isinstance(m, nn.modules.conv._ConvNd):
            inp = node.args[0] if node.args and isinstance(node.args[0], fx.Node) else None
            per = math.prod(m.kernel_size) * m.in_channels // m.groups
            if isinstance(m, nn.modules.conv._ConvTransposeNd) and inp is not None:
                macs = _numel(inp) * math.prod(m.kernel_size) * m.out_channels // m.groups
            else:
                macs = out * per
            return 2 * macs + (out if m.bias is not None else 0)
        if isinstance(m, nn.Linear):
            return 2 * out * m.in_features + (out if m.bias is not None else 0)
        if isinstance(m, _NORMS):
            return 2 * out
        if isinstance(m, (nn.Identity, nn.Flatten, nn.Unflatten, cnn.Concat)):
            return 0
        return out
    if node.op == "call_method":
        return 0 if node.target in _FREE_METHODS else out
    if node.op == "call_function":
        return 0 if node.target in _FREE_FUNCTIONS else out
    return 0


def count_flops(gm: fx.GraphModule) -> int:
    """FLOPs of ``gm``'s forward at the shapes recorded on its nodes."""
    return sum(node_flops(gm, n) for n in gm.graph.nodes)
