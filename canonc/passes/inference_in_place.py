"""Let ReLUs and residual sums work in place in plain inference (``canonc.nn.ReLU``, ``Sum``).

A canonical model never runs in place under autograd or hooks (XAI rules need both
tensors), but in ``torch.no_grad`` inference an out-of-place ReLU after every conv and
a fresh output per residual cost an allocation and a memory pass each. Where a ReLU is
the only reader of a fresh tensor (the output of a conv, linear, sum, concat, ...) it
becomes ``canonc.nn.ReLU`` linked to that producer. Where a ``Sum`` is the only reader
of its ``torch.stack``, the stack becomes ``canonc.nn.stack_summands``, which skips the
stacked copy in plain inference, and the ``Sum`` is linked to the producer of its first
summand when that summand is fresh and read only there (it then adds into it). Both
decide at run time whether anyone could tell (``canonc.nn._plain_inference``).
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


def _fresh(gm: fx.GraphModule, source: fx.Node | None) -> nn.Module | None:
    """The module that produced ``source`` when that output is a new tensor, else ``None``."""
    producer = get_module(gm, source) if source is not None else None
    return producer if isinstance(producer, _FRESH_OUTPUT) else None


def _link_relu(gm: fx.GraphModule, node: fx.Node, module: nn.Module, ctx: PassContext) -> None:
    producer = _fresh(gm, _sole_reader_of(gm, node))
    if type(module) is cnn.ReLU:  # from an earlier round or the input model: relink on a new object if stale
        if module._producer == ((producer,) if producer is not None else ()):
            return
    elif producer is None or not ctx.apply(RULE, node.name, f"{node.target} may overwrite {node.args[0].name}"):
        return
    relu = cnn.ReLU()
    relu.overwrite_output_of(producer)
    set_module(gm, node.target, relu)


def _link_sum(gm: fx.GraphModule, node: fx.Node, module: cnn.Sum) -> None:
    stack = _sole_reader_of(gm, node)
    if stack is None or stack.op != "call_function" or stack.target not in (torch.stack, cnn.stack_summands):
        return
    parts = stack.args[0]
    if not isinstance(parts, (list, tuple)):  # stack(broadcast_tensors(a, b)): views, keep torch.stack
        return
    stack.target = cnn.stack_summands  # not logged: only the inference path changes
    first = parts[0]
    sole = len(first.users) == 1 and list(parts).count(first) == 1
    producer = _fresh(gm, first) if sole else None
    if module._producer != ((producer,) if producer is not None else ()):
        linked = cnn.Sum(module.dim)
        linked.overwrite_output_of(producer)
        set_module(gm, node.target, linked)


def run(gm: fx.GraphModule, ctx: PassContext) -> None:
    """Link every ReLU that solely reads a fresh tensor to its producer; unstack every Sum's own stack in plain inference."""
    for node in gm.graph.nodes:
        module = get_module(gm, node)
        if type(module) in (nn.ReLU, cnn.ReLU) and not module.inplace:
            _link_relu(gm, node, module, ctx)
        elif isinstance(module, cnn.Sum):
            _link_sum(gm, node, module)
