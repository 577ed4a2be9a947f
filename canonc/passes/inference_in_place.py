"""Let a ReLU overwrite its producer's output in plain inference (``canonc.nn.ReLU``).

A canonical model never runs in place under autograd or hooks (XAI rules need both
tensors), but in ``torch.no_grad`` inference an out-of-place ReLU after every conv
costs an allocation and a memory pass. Where a ReLU is the only reader of a fresh
tensor (the output of a conv, linear, sum, concat, ...), it becomes ``canonc.nn.ReLU``
linked to that producer; it then decides at run time (see its docstring).
"""

from __future__ import annotations

from torch import fx, nn

from .. import nn as cnn
from ..graph import get_module, set_module
from .base import PassContext

RULE = "inference-relu"
# Modules whose output is a new tensor (never a view of their input or of a buffer).
_FRESH_OUTPUT = (nn.modules.conv._ConvNd, nn.Linear, nn.modules.batchnorm._BatchNorm, nn.modules.pooling._MaxPoolNd,
                 nn.modules.pooling._AvgPoolNd, nn.modules.pooling._AdaptiveAvgPoolNd,
                 cnn.Sum, cnn.Concat, cnn.Gate, cnn.Mul, cnn.BiasMap, cnn.ThreshReLU)


def _sole_fresh_producer(gm: fx.GraphModule, node: fx.Node) -> nn.Module | None:
    """The producer module when ``node``'s input is a fresh tensor that only ``node`` reads."""
    if len(node.args) != 1 or node.kwargs or not isinstance(node.args[0], fx.Node):
        return None
    source = node.args[0]
    producer = get_module(gm, source)
    if producer is None or not isinstance(producer, _FRESH_OUTPUT) or len(source.users) != 1:
        return None
    return producer


def run(gm: fx.GraphModule, ctx: PassContext) -> None:
    """Link every ReLU that solely reads a fresh tensor to its producer; unlink the others."""
    for node in gm.graph.nodes:
        module = get_module(gm, node)
        if type(module) not in (nn.ReLU, cnn.ReLU) or module.inplace:
            continue
        producer = _sole_fresh_producer(gm, node)
        if type(module) is cnn.ReLU:  # from an earlier round: re-check, the graph may have changed
            module.overwrite_output_of(producer)
        elif producer is not None and ctx.apply(RULE, node.name, f"{node.target} may overwrite {node.args[0].name}"):
            relu = cnn.ReLU()
            relu.overwrite_output_of(producer)
            set_module(gm, node.target, relu)
