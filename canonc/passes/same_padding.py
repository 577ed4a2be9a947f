"""TF "SAME" padding computed from the input size (timm ``pad_same``) → a ``PadSame`` module.

timm's ``Conv2dSame`` / ``MaxPool2dSame`` / ``AvgPool2dSame`` pad by an amount that depends
on the input size, then run the plain op with padding 0. The tracer keeps ``pad_same`` as
one call; this pass makes it a :class:`~canonc.nn.PadSame` module (exact at every input
size), so the conv after it is a plain conv that BatchNorm can merge into.
"""

from __future__ import annotations

from torch import fx

from .. import nn as cnn
from ..graph import free_name, is_data, set_module
from .base import PassContext
from .constants import Constants
from .lift_layers import scope_of
from .modularize import _call_new_module

RULE = "same-padding"
_PARAMS = ("kernel_size", "stride", "dilation", "value")
_DEFAULTS = {"dilation": (1, 1), "value": 0.0}


def _is_pad_same(node: fx.Node) -> bool:
    return node.op == "call_function" and getattr(node.target, "__name__", "") == "pad_same" \
        and getattr(node.target, "__module__", "").startswith("timm.")


def _pair(value: object, n: int) -> tuple[int, ...]:
    return tuple(int(v) for v in value) if isinstance(value, (tuple, list)) or hasattr(value, "__len__") else (int(value),) * n


def _to_sibling(gm: fx.GraphModule, node: fx.Node, scope: str) -> None:
    """Move ``node``'s module from inside ``scope`` (the layer it pads for, which a lifted layer
    may replace) to ``<scope>_pad`` next to it."""
    if not scope:
        return
    module = gm.get_submodule(node.target)
    parent, _, leaf = node.target.rpartition(".")
    delattr(gm.get_submodule(parent), leaf)
    name = f"{scope}_pad"
    name = name if not hasattr(gm.get_submodule(scope.rpartition(".")[0]), name.rpartition(".")[2]) else free_name(gm, name)
    set_module(gm, name, module)
    node.target = name


def run(gm: fx.GraphModule, ctx: PassContext) -> None:
    """Replace each ``pad_same`` call by a ``PadSame`` module call."""
    consts = Constants(gm)
    for node in list(gm.graph.nodes):
        if not _is_pad_same(node) or not node.args or not is_data(node.args[0]):
            continue
        raw = {**dict(zip(_PARAMS, node.args[1:])), **node.kwargs}
        if any(not consts.known(v) for v in raw.values()):
            ctx.skip(RULE, node.name, "the padding settings depend on the input; left as a function call")
            continue
        args = {**_DEFAULTS, **{k: consts.value(v) for k, v in raw.items()}}
        n = len(_pair(args["kernel_size"], 2))
        module = cnn.PadSame(_pair(args["kernel_size"], n), _pair(args["stride"], n), _pair(args["dilation"], n),
                             float(args["value"]))
        if not ctx.apply(RULE, node.name, "pad_same → PadSame"):
            continue
        new = _call_new_module(gm, node, "pad_same", module, (node.args[0],))
        _to_sibling(gm, new, scope_of(node))
        ctx.rewrites[-1].detail = f"pad_same → PadSame {new.target}"
