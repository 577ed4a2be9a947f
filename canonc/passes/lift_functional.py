"""Functional activations and pooling → modules, so XAI rules can attach to them."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import fx, nn

from ..graph import free_name, set_module
from .base import PassContext

RULE = "lift-functional"

# function or tensor-method name → (module class, names of the positional args after the input)
_TABLE: dict[object, tuple[type[nn.Module], tuple[str, ...]]] = {
    F.relu: (nn.ReLU, ()),
    torch.relu: (nn.ReLU, ()),
    F.relu_: (nn.ReLU, ()),
    torch.relu_: (nn.ReLU, ()),
    "relu": (nn.ReLU, ()),
    "relu_": (nn.ReLU, ()),
    F.relu6: (nn.ReLU6, ()),
    F.leaky_relu: (nn.LeakyReLU, ("negative_slope",)),
    F.elu: (nn.ELU, ("alpha",)),
    F.gelu: (nn.GELU, ()),
    F.silu: (nn.SiLU, ()),
    F.mish: (nn.Mish, ()),
    F.hardswish: (nn.Hardswish, ()),
    F.hardsigmoid: (nn.Hardsigmoid, ()),
    F.hardtanh: (nn.Hardtanh, ("min_val", "max_val")),
    torch.sigmoid: (nn.Sigmoid, ()),
    F.sigmoid: (nn.Sigmoid, ()),
    "sigmoid": (nn.Sigmoid, ()),
    torch.tanh: (nn.Tanh, ()),
    F.tanh: (nn.Tanh, ()),
    "tanh": (nn.Tanh, ()),
    F.softmax: (nn.Softmax, ("dim",)),
    torch.softmax: (nn.Softmax, ("dim",)),
    "softmax": (nn.Softmax, ("dim",)),
    F.adaptive_avg_pool1d: (nn.AdaptiveAvgPool1d, ("output_size",)),
    F.adaptive_avg_pool2d: (nn.AdaptiveAvgPool2d, ("output_size",)),
    F.adaptive_avg_pool3d: (nn.AdaptiveAvgPool3d, ("output_size",)),
    F.adaptive_max_pool2d: (nn.AdaptiveMaxPool2d, ("output_size", "return_indices")),
    F.avg_pool1d: (nn.AvgPool1d, ("kernel_size", "stride", "padding", "ceil_mode", "count_include_pad")),
    F.avg_pool2d: (
        nn.AvgPool2d,
        ("kernel_size", "stride", "padding", "ceil_mode", "count_include_pad", "divisor_override"),
    ),
    F.max_pool1d: (nn.MaxPool1d, ("kernel_size", "stride", "padding", "dilation", "ceil_mode", "return_indices")),
    F.max_pool2d: (nn.MaxPool2d, ("kernel_size", "stride", "padding", "dilation", "ceil_mode", "return_indices")),
    F.max_pool3d: (nn.MaxPool3d, ("kernel_size", "stride", "padding", "dilation", "ceil_mode", "return_indices")),
}
_IGNORED = {"inplace", "_stacklevel"}


def _key(node: fx.Node) -> object | None:
    if node.op in ("call_function", "call_method"):
        try:
            return node.target if node.target in _TABLE else None
        except TypeError:  # unhashable target
            return None
    return None


def module_name(gm: fx.GraphModule, node: fx.Node, stem: str) -> str:
    """A fresh dotted name for a new module, inside the module the op ran in."""
    stack = node.meta.get("nn_module_stack") or {}
    scope = ""
    if stack:
        scope = list(stack.values())[-1][0]
    base = f"{scope}.{stem}" if scope else stem
    try:
        gm.get_submodule(base)
    except AttributeError:
        return base
    return free_name(gm, base)


def run(gm: fx.GraphModule, ctx: PassContext) -> None:
    """Replace each table-listed functional call by a call of a new module."""
    for node in list(gm.graph.nodes):
        key = _key(node)
        if key is None or not node.args or not isinstance(node.args[0], fx.Node):
            continue
        cls, names = _TABLE[key]
        kwargs = dict(zip(names, node.args[1:]))
        kwargs.update({k: v for k, v in node.kwargs.items() if k not in _IGNORED})
        if len(node.args) - 1 > len(names) or any(isinstance(v, fx.Node) for v in kwargs.values()):
            ctx.skip(RULE, node.name, "arguments depend on the data; left functional")
            continue
        if kwargs.get("dtype") is not None or kwargs.get("return_indices"):
            ctx.skip(RULE, node.name, "dtype cast or returned indices; left functional")
            continue
        kwargs.pop("dtype", None)
        try:
            module = cls(**kwargs)
        except TypeError as exc:
            ctx.skip(RULE, node.name, f"cannot build {cls.__name__}: {exc}")
            continue
        name = module_name(gm, node, node.name)
        if not ctx.apply(RULE, node.name, f"{key if isinstance(key, str) else key.__name__} → {name}"):
            continue
        set_module(gm, name, module)
        with gm.graph.inserting_before(node):
            new = gm.graph.call_module(name, (node.args[0],))
        new.meta = dict(node.meta)
        node.replace_all_uses_with(new)
        gm.graph.erase_node(node)
