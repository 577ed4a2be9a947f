"""Let ReLUs and residual sums work in place in plain inference (``canonc.nn.ReLU``, ``Sum``).

A canonical model never runs in place under autograd or hooks (XAI rules need both
tensors), but in ``torch.no_grad`` inference an out-of-place ReLU after every conv and
a fresh output per residual cost an allocation and a memory pass each. Where a ReLU is
the only reader of a fresh tensor (the output of a conv, linear, sum, concat, ...) it
becomes ``canonc.nn.ReLU`` linked to that producer; where a ``Sum`` is the only reader
of its ``torch.stack`` it may add into the stack. Both decide at run time whether
anyone could tell (``canonc.nn._plain_inference``).
"""

from __future__ import annotations

import torch
from torch import fx, nn

from .. import nn as cnn
from ..graph import get_module, set_module
from .base import PassContext

RULE = "inference-in-place"
# Modules whose output is a new tensor, or a view of a buffer that only they read.
_FRESH_OUTPUT = (nn.modules.conv._ConvNd, nn.Linear, nn.modules.batchnorm._BatchNorm, nn.modules.pooling._MaxPoolNd,
                 nn.modules.pooling._AvgPoolNd, nn.modules.pooling._AdaptiveAvgPoolNd,
                 cnn.Sum, cnn.Concat, cnn.Gate, cnn.Mul, cnn.BiasMap, cnn.ThreshReLU)


def _sole_reader_of(gm: fx.GraphModule, node: fx.Node) -> fx.Node | None:
    """``node``'s single tensor input when ``node`` is its only reader, else ``None``."""
    if len(node.args) != 1 or node.kwargs or not isinstance(node.args[0], fx.Node):
        return None
    source = node.args[0]
    return source if len(source.users) == 1 else None


def _fresh_producer(gm: fx.GraphModule, node: fx.Node) -> nn.Module | None:
    """The producer module when ``node``'s input is a fresh tensor that only ``node`` reads."""
    source = _sole_reader_of(gm, node)
    producer = get_module(gm, source) if source is not None else None
    return producer if isinstance(producer, _FRESH_OUTPUT) else None


def _link_relu(gm: fx.GraphModule, node: fx.Node, module: nn.Module, ctx: PassContext) -> None:
    producer = _fresh_producer(gm, node)
    if type(module) is cnn.ReLU:  # from an earlier round or the input model: relink on a new object if stale
        if module._producer == ((producer,) if producer is not None else ()):
            return
    elif producer is None or not ctx.apply(RULE, node.name, f"{node.target} may overwrite {node.args[0].name}"):
        return
    relu = cnn.ReLU()
    relu.overwrite_output_of(producer)
    set_module(gm, node.target, relu)


def _link_sum(gm: fx.GraphModule, node: fx.Node, module: cnn.Sum) -> None:
    source = _sole_reader_of(gm, node)
    overwrite = source is not None and source.op == "call_function" and source.target is torch.stack
    if module.overwrite_input != overwrite:  # not logged: only the inference path changes
        linked = cnn.Sum(module.dim)
        linked.overwrite_input = overwrite
        set_module(gm, node.target, linked)


def run(gm: fx.GraphModule, ctx: PassContext) -> None:
    """Link every ReLU that solely reads a fresh tensor to its producer, every Sum that solely reads its stack."""
    for node in gm.graph.nodes:
        module = get_module(gm, node)
        if type(module) in (nn.ReLU, cnn.ReLU) and not module.inplace:
            _link_relu(gm, node, module, ctx)
        elif isinstance(module, cnn.Sum):
            _link_sum(gm, node, module)
