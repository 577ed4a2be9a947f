"""Functional layers with constant weights → torch.nn layers with those weights.

``F.conv2d(x, W, b, ...)``, ``F.linear``, ``F.layer_norm``, ``F.group_norm``, ``F.rms_norm`` and
eval-mode ``F.batch_norm`` whose parameters are computed from parameters only become module
calls, so the other passes (and XAI rules) see them. The weight expression is evaluated once:
weight standardisation (timm ``StdConv2d`` / ``ScaledStdConv2d``: a ``batch_norm`` over the
weight), gains and reshapes are folded into the new layer's weight.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import fx, nn

from ..graph import is_data, set_module
from .base import PassContext
from .constants import Constants
from .modularize import _call_new_module

RULE = "lift-layer"
_CONV = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}
_BN = {2: nn.BatchNorm1d, 3: nn.BatchNorm1d, 4: nn.BatchNorm2d, 5: nn.BatchNorm3d}
# function → (kind, positional parameter names after the input)
_CONV_ARGS = ("weight", "bias", "stride", "padding", "dilation", "groups")
_TABLE: dict[object, tuple[str, tuple[str, ...]]] = {
    F.conv1d: ("conv", _CONV_ARGS), F.conv2d: ("conv", _CONV_ARGS), F.conv3d: ("conv", _CONV_ARGS),
    torch.conv1d: ("conv", _CONV_ARGS), torch.conv2d: ("conv", _CONV_ARGS), torch.conv3d: ("conv", _CONV_ARGS),
    F.linear: ("linear", ("weight", "bias")),
    F.layer_norm: ("layer_norm", ("normalized_shape", "weight", "bias", "eps")),
    torch.layer_norm: ("layer_norm", ("normalized_shape", "weight", "bias", "eps")),
    F.group_norm: ("group_norm", ("num_groups", "weight", "bias", "eps")),
    torch.group_norm: ("group_norm", ("num_groups", "weight", "bias", "eps")),
    F.rms_norm: ("rms_norm", ("normalized_shape", "weight", "eps")),
    F.batch_norm: ("batch_norm", ("running_mean", "running_var", "weight", "bias", "training", "momentum", "eps")),
    torch.batch_norm: ("batch_norm", ("weight", "bias", "running_mean", "running_var", "training", "momentum", "eps",
                                      "cudnn_enabled")),
}
_DEFAULTS = {"bias": None, "stride": 1, "padding": 0, "dilation": 1, "groups": 1, "weight": None, "eps": None,
             "training": False, "momentum": 0.1}


def _param(value: object) -> nn.Parameter | None:
    return None if value is None else nn.Parameter(value.detach().clone().contiguous())


def _conv(a: dict, x_dim: int) -> nn.Module:
    w = a["weight"]
    n = w.dim() - 2
    if x_dim != n + 2:
        raise ValueError(f"unbatched {n}-d conv input")
    conv = _CONV[n](w.shape[1] * a["groups"], w.shape[0], tuple(w.shape[2:]), stride=a["stride"], padding=a["padding"],
                    dilation=a["dilation"], groups=a["groups"], bias=a["bias"] is not None)
    conv.weight, conv.bias = _param(w), _param(a["bias"])
    return conv


def _linear(a: dict, x_dim: int) -> nn.Module:
    w = a["weight"]
    lin = nn.Linear(w.shape[1], w.shape[0], bias=a["bias"] is not None)
    lin.weight, lin.bias = _param(w), _param(a["bias"])
    return lin


def _norm_affine(module: nn.Module, weight: object, bias: object) -> nn.Module:
    module.weight = _param(weight)
    if hasattr(module, "bias"):
        module.bias = _param(bias)
    return module


def _layer_norm(a: dict, x_dim: int) -> nn.Module:
    eps = 1e-5 if a["eps"] is None else a["eps"]
    affine = a["weight"] is not None or a["bias"] is not None
    ln = nn.LayerNorm(tuple(a["normalized_shape"]), eps=eps, elementwise_affine=affine, bias=a["bias"] is not None)
    return _norm_affine(ln, a["weight"], a["bias"]) if affine else ln


def _group_norm(a: dict, x_dim: int) -> nn.Module:
    w = a["weight"]
    if w is None or a["bias"] is None:
        raise ValueError("group_norm with only one of weight and bias")
    gn = nn.GroupNorm(a["num_groups"], w.numel(), eps=1e-5 if a["eps"] is None else a["eps"])
    return _norm_affine(gn, w, a["bias"])


def _rms_norm(a: dict, x_dim: int) -> nn.Module:
    rms = nn.RMSNorm(tuple(a["normalized_shape"]), eps=a["eps"], elementwise_affine=a["weight"] is not None)
    return _norm_affine(rms, a["weight"], None) if a["weight"] is not None else rms


def _batch_norm(a: dict, x_dim: int) -> nn.Module:
    mean, var = a["running_mean"], a["running_var"]
    if a["training"] or mean is None or var is None:
        raise ValueError("batch statistics (training=True or no running statistics)")
    bn = _BN[x_dim](mean.numel(), eps=1e-5 if a["eps"] is None else a["eps"], affine=a["weight"] is not None)
    if a["weight"] is not None:
        bn.weight = _param(a["weight"])
        bn.bias = _param(a["bias"] if a["bias"] is not None else torch.zeros_like(a["weight"]))
    bn.running_mean.copy_(mean)
    bn.running_var.copy_(var)
    return bn.eval()


_BUILD = {"conv": _conv, "linear": _linear, "layer_norm": _layer_norm, "group_norm": _group_norm,
          "rms_norm": _rms_norm, "batch_norm": _batch_norm}


def _key(node: fx.Node) -> object | None:
    if node.op != "call_function":
        return None
    try:
        return node.target if node.target in _TABLE else None
    except TypeError:
        return None


def scope_of(node: fx.Node) -> str:
    """Qualified name of the innermost module ``node`` was traced in (``''`` at the top)."""
    stack = node.meta.get("nn_module_stack") or {}
    return list(stack.values())[-1][0] if stack else ""


def _take_scope(gm: fx.GraphModule, new: fx.Node) -> fx.Node:
    """Give the lifted layer its scope's name (timm ``StdConv2d`` at ``stem.conv`` stays ``stem.conv``)
    when nothing else in the graph uses that module or its tensors any more."""
    scope = scope_of(new)
    if not scope:
        return new
    gm.graph.eliminate_dead_code()
    for other in gm.graph.nodes:
        if other is not new and other.op in ("call_module", "get_attr") and (
                other.target == scope or other.target.startswith(scope + ".")):
            return new
    set_module(gm, scope, gm.get_submodule(new.target))
    new.target = scope
    return new


def run(gm: fx.GraphModule, ctx: PassContext) -> None:
    """Turn each functional layer with constant parameters into a module call."""
    consts = Constants(gm)
    for node in list(gm.graph.nodes):
        key = _key(node)
        if key is None or not node.args or not is_data(node.args[0]):
            continue
        kind, names = _TABLE[key]
        if len(node.args) - 1 > len(names):
            ctx.skip(RULE, node.name, f"unexpected arguments to {kind}; left functional")
            continue
        raw = {**dict(zip(names, node.args[1:])), **node.kwargs}
        if any(not consts.known(v) for v in raw.values()):
            ctx.skip(RULE, node.name, f"the {kind}'s parameters depend on the input; left functional")
            continue
        args = {**_DEFAULTS, **{k: consts.value(v) for k, v in raw.items()}}
        x = node.args[0].meta.get("val")
        try:
            module = _BUILD[kind](args, x.dim()).to(x.dtype)
        except (ValueError, TypeError, RuntimeError) as exc:
            ctx.skip(RULE, node.name, f"cannot build a module for this {kind}: {exc}")
            continue
        if not ctx.apply(RULE, node.name, f"{kind} with constant parameters → {type(module).__name__}"):
            continue
        new = _take_scope(gm, _call_new_module(gm, node, node.name, module, (node.args[0],)))
        ctx.rewrites[-1].detail = f"{kind} with constant parameters → {type(module).__name__} {new.target}"
