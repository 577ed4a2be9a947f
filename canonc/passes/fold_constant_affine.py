"""L3: fold a constant per-channel scale / shift written as tensor ops into a linear layer.

Matches ``x * c``, ``x + c``, ``x - c``, ``c - x``, ``x / c`` where ``c`` is a Python number
or a tensor computed from constants only (``get_attr`` and ops on it, e.g. timm's
``gamma.reshape(1, -1, 1, 1)``) that varies along one axis of ``x`` at most.

* **Left** (layer scale, ``conv(x) * c + d``): when ``x`` comes from a Conv /
  ConvTranspose / Linear, possibly through permute / transpose that move its channel
  axis onto the axis of ``c``, and nothing else uses that value, the op is folded into
  the layer's output (:func:`canonc.fold.fold_out`).
* **Right** (input normalisation ``(x - mean) / std`` or torchvision's per-channel
  ``cat([x[:, i:i+1] * a_i + b_i])``): an expression that is ``s·X + t`` per channel of a
  tensor ``X`` (channel axis 1) is folded into every linear layer that consumes it, as a
  BatchNorm is merged right (:mod:`canonc.passes.merge_right`; a zero-padded conv needs a
  bias map, refused under ``--no-bias-map``).

What cannot be folded either way is logged with both reasons.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass

import torch
from torch import fx, nn

from .. import nn as cnn
from ..fold import fold_out, out_channels
from ..graph import CAT_OPS, data_users, get_module, is_call, linear_base, replace_module, shape_of
from .base import PassContext
from .merge_right import install, plan

RULE = "fold-constant-affine"
_FUNCS = {operator.mul: "mul", torch.mul: "mul", operator.add: "add", torch.add: "add", operator.sub: "sub",
          torch.sub: "sub", operator.truediv: "div", torch.div: "div", torch.true_divide: "div"}
_METHODS = {"mul": "mul", "add": "add", "sub": "sub", "div": "div", "true_divide": "div"}
_MAX_CONST_DEPTH = 16


def _const(gm: fx.GraphModule, arg: object, depth: int = 0) -> torch.Tensor | None:
    """The value of ``arg`` when it depends on constants only (numbers, get_attr), else None."""
    if isinstance(arg, (int, float)) and not isinstance(arg, bool):
        return torch.tensor(float(arg), dtype=torch.float64)
    if not isinstance(arg, fx.Node) or depth > _MAX_CONST_DEPTH:
        return None
    if arg.op == "get_attr":
        value = gm
        for atom in arg.target.split("."):
            value = getattr(value, atom)
        return value.detach() if isinstance(value, torch.Tensor) and value.is_floating_point() else None
    if arg.op not in ("call_function", "call_method"):
        return None
    values: dict[fx.Node, torch.Tensor] = {}
    for node in arg.all_input_nodes:
        value = _const(gm, node, depth + 1)
        if value is None:
            return None
        values[node] = value
    args = fx.node.map_arg(arg.args, lambda n: values[n])
    kwargs = fx.node.map_arg(arg.kwargs, lambda n: values[n])
    with torch.no_grad():
        out = getattr(args[0], arg.target)(*args[1:], **kwargs) if arg.op == "call_method" else arg.target(*args, **kwargs)
    return out.detach() if isinstance(out, torch.Tensor) and out.is_floating_point() else None


@dataclass
class ConstOp:
    """``y = s·x + t`` along ``axis`` of ``x`` (``axis`` None: ``s`` and ``t`` are scalars)."""

    x: fx.Node
    s: torch.Tensor
    t: torch.Tensor
    axis: int | None


def _per_axis(c: torch.Tensor, shape: tuple[int, ...]) -> tuple[torch.Tensor, int | None] | None:
    """``c`` as a vector along the one axis of ``shape`` it varies on, if it broadcasts onto ``shape``."""
    if c.dim() > len(shape):
        return None
    full = (1,) * (len(shape) - c.dim()) + tuple(c.shape)
    if any(a != 1 and a != b for a, b in zip(full, shape)):
        return None
    varying = [i for i, a in enumerate(full) if a != 1]
    if not varying:
        return c.reshape(()).double(), None
    if len(varying) > 1 or varying[0] == 0:
        return None
    return c.reshape(-1).double(), varying[0]


def _operands(gm: fx.GraphModule, node: fx.Node) -> tuple[str, fx.Node, torch.Tensor, bool] | None:
    """``(kind, x, c, c_first)`` when ``node`` is ``x ∘ c`` for a data tensor ``x`` and a constant ``c``."""
    if node.op == "call_function":
        kind = _FUNCS.get(node.target) if not isinstance(node.target, str) else None
    elif node.op == "call_method":
        kind = _METHODS.get(node.target)
    else:
        kind = None
    if kind is None or len(node.args) != 2 or any(k != "alpha" or v != 1 for k, v in node.kwargs.items()):
        return None
    a, b = node.args
    ca, cb = _const(gm, a), _const(gm, b)
    if (ca is None) == (cb is None):
        return None
    x, c, const_first = (b, ca, True) if ca is not None else (a, cb, False)
    if not isinstance(x, fx.Node) or shape_of(x) is None:
        return None
    return kind, x, c, const_first


def const_op(gm: fx.GraphModule, node: fx.Node) -> ConstOp | None:
    """The per-channel affine map ``node`` applies to its one data operand, if it is one."""
    operands = _operands(gm, node)
    if operands is None:
        return None
    kind, x, c, const_first = operands
    shape = shape_of(x)
    if len(shape) < 2 or shape_of(node) != shape:
        return None
    vec = _per_axis(c, shape)
    if vec is None:
        return None
    c, axis = vec
    if kind == "mul":
        return ConstOp(x, c, torch.zeros_like(c), axis)
    if kind == "add":
        return ConstOp(x, torch.ones_like(c), c, axis)
    if kind == "sub":
        return ConstOp(x, -torch.ones_like(c), c, axis) if const_first else ConstOp(x, torch.ones_like(c), -c, axis)
    if const_first or (c == 0).any():
        return None
    return ConstOp(x, 1.0 / c, torch.zeros_like(c), axis)


def _not_per_channel(node: fx.Node, kind: str, x: fx.Node, c: torch.Tensor, const_first: bool) -> str:
    """Why ``x ∘ c`` is not a per-channel scale or shift of ``x``."""
    if kind == "div" and const_first:
        return "it divides a constant by the data: not affine"
    if shape_of(node) != shape_of(x) or len(shape_of(x)) < 2:
        return f"the constant broadcasts {x.name} from {shape_of(x)} to {shape_of(node)}"
    if kind == "div":
        return "it divides by a constant that has zeros"
    return f"the constant (shape {tuple(c.shape)}) varies along several axes or the batch axis (e.g. a position embedding)"


def _axis_up(node: fx.Node, axis: int | None) -> int | None | str:
    """Axis of ``node``'s input that becomes ``axis`` of its output (permute / transpose), or ``'no'``."""
    name = getattr(node.target, "__name__", node.target) if node.op in ("call_function", "call_method") else None
    shape = shape_of(node)
    if name not in ("permute", "transpose") or shape is None:
        return "no"
    if axis is None:
        return None
    nd = len(shape)
    if name == "transpose":
        d0, d1 = (int(d) % nd for d in node.args[1:3])
        return d1 if axis == d0 else d0 if axis == d1 else axis
    dims = node.args[1] if len(node.args) == 2 and isinstance(node.args[1], (tuple, list)) else node.args[1:]
    return int(dims[axis]) % nd


def _fold_left(gm: fx.GraphModule, node: fx.Node, op: ConstOp) -> tuple[fx.Node | None, nn.Module | None, str]:
    """The producer and its new layer absorbing ``op`` on its output, or a reason."""
    cur, axis = op.x, op.axis
    while True:
        if len(data_users(cur)) != 1:
            return None, None, f"{cur.name} is also used elsewhere"
        module = get_module(gm, cur)
        if module is not None:
            break
        up = _axis_up(cur, axis)
        if up == "no":
            what = getattr(cur.target, "__name__", cur.target)
            return None, None, f"its input comes from '{what}', not from a Conv/ConvTranspose/Linear"
        axis, cur = up, cur.args[0]
    if linear_base(module) is None:
        return None, None, f"its input comes from {cur.target} ({type(module).__name__}), not from a plain Conv/ConvTranspose/Linear"
    shape = shape_of(cur)
    channel = len(shape) - 1 if isinstance(module, nn.Linear) else 1
    if axis is not None and axis != channel:
        return None, None, f"the constant varies along axis {axis} of {cur.target}'s output, not its channel axis {channel}"
    n = out_channels(module)
    if op.s.dim() and op.s.numel() != n:
        return None, None, f"{cur.target} has {n} channels, the constant {op.s.numel()}"
    return cur, fold_out(module, op.s.expand(n), op.t.expand(n)), ""


@dataclass
class Expr:
    """A value that is ``s[c]·source[:, index[c]] + t[c]`` per channel (axis 1); ``ops`` constant ops."""

    source: fx.Node
    index: torch.Tensor
    s: torch.Tensor
    t: torch.Tensor
    ops: int


def _leaf(node: fx.Node) -> Expr | None:
    shape = shape_of(node)
    if shape is None or len(shape) < 2:
        return None
    n = shape[1]
    return Expr(node, torch.arange(n), torch.ones(n, dtype=torch.float64), torch.zeros(n, dtype=torch.float64), 0)


def _same_but_channels(a: fx.Node, b: fx.Node) -> bool:
    sa, sb = shape_of(a), shape_of(b)
    return sa is not None and sb is not None and len(sa) == len(sb) and sa[:1] + sa[2:] == sb[:1] + sb[2:]


def _channel_pick(node: fx.Node) -> tuple[fx.Node, torch.Tensor] | None:
    """``(X, channels)`` when ``node`` is ``X[:, a:b:k]`` or ``unsqueeze(X[:, i], 1)``."""
    if is_call(node, {torch.unsqueeze}, ("unsqueeze",)) and len(node.args) == 2 and node.args[1] == 1:
        inner = node.args[0]
        if isinstance(inner, fx.Node) and is_call(inner, {operator.getitem}) and isinstance(inner.args[0], fx.Node):
            idx = inner.args[1]
            shape = shape_of(inner.args[0])
            if (isinstance(idx, tuple) and len(idx) == 2 and idx[0] == slice(None) and isinstance(idx[1], int)
                    and shape is not None and len(shape) >= 2):
                return inner.args[0], torch.tensor([idx[1] % shape[1]])
        return None
    if is_call(node, {operator.getitem}) and isinstance(node.args[0], fx.Node):
        idx = node.args[1]
        shape = shape_of(node.args[0])
        if (isinstance(idx, tuple) and len(idx) == 2 and idx[0] == slice(None) and isinstance(idx[1], slice)
                and shape is not None and len(shape) >= 2):
            return node.args[0], torch.arange(shape[1])[idx[1]]
    return None


def expression(gm: fx.GraphModule, node: fx.Node) -> Expr | None:
    """``node`` as a per-channel affine function of one tensor (channel axis 1), if it is one."""
    op = const_op(gm, node)
    if op is not None and op.axis in (None, 1):
        inner = expression(gm, op.x)
        if inner is None:
            return None
        s, t = op.s.expand_as(inner.s), op.t.expand_as(inner.t)
        return Expr(inner.source, inner.index, s * inner.s, s * inner.t + t, inner.ops + 1)
    pick = _channel_pick(node)
    if pick is not None and _same_but_channels(node, pick[0]):
        inner = expression(gm, pick[0])
        if inner is not None:
            i = pick[1]
            return Expr(inner.source, inner.index[i], inner.s[i], inner.t[i], inner.ops)
    module = get_module(gm, node)
    tensors = None
    if isinstance(module, cnn.Concat) and module.dim in (1, -len(shape_of(node) or ())):
        tensors = node.args[0]
    elif is_call(node, CAT_OPS) and (node.args[1] if len(node.args) > 1 else node.kwargs.get("dim", 0)) == 1:
        tensors = node.args[0]
    if isinstance(tensors, (list, tuple)) and all(isinstance(p, fx.Node) for p in tensors):
        parts = [expression(gm, p) for p in tensors]
        if all(p is not None and p.source is parts[0].source for p in parts) and _same_but_channels(node, parts[0].source):
            return Expr(parts[0].source, torch.cat([p.index for p in parts]), torch.cat([p.s for p in parts]),
                        torch.cat([p.t for p in parts]), sum(p.ops for p in parts))
    return _leaf(node)


def _whole(expr: Expr | None) -> bool:
    """True when ``expr`` applies constants to every channel of its source, in order."""
    if expr is None or expr.ops == 0:
        return False
    n = shape_of(expr.source)[1]
    return expr.index.numel() == n and bool((expr.index == torch.arange(n)).all())


def _fold_right(gm: fx.GraphModule, node: fx.Node, expr: Expr, bias_map: bool, ctx: PassContext) -> str:
    """Fold ``node`` (= ``s·source + t``) into its consumers; ``''`` on success, else the reason."""
    folds, why = plan(gm, node, expr.s, expr.t, bias_map)
    if why:
        return why
    if ctx.apply(RULE, node.name):
        ctx.rewrites[-1].detail = f"{node.name} (constant s·x + t on {expr.source.name}) folded into " + ", ".join(install(gm, folds))
        node.replace_all_uses_with(expr.source)
        gm.graph.eliminate_dead_code()
    return ""


def _interior(gm: fx.GraphModule, node: fx.Node, ops: dict[str, str]) -> bool:
    """True when ``node`` only feeds other constant ops or a concat: a larger expression reports it."""
    users = data_users(node)
    return bool(users) and all(u.name in ops or is_call(u, CAT_OPS) or isinstance(get_module(gm, u), cnn.Concat)
                               for u in users)


def run(gm: fx.GraphModule, ctx: PassContext) -> None:
    """Fold constant per-channel affine ops into neighbouring linear layers."""
    left_why: dict[str, str] = {}
    for node in list(gm.graph.nodes):
        op = const_op(gm, node)
        if op is None:
            operands = _operands(gm, node)
            if operands is not None:
                ctx.skip(RULE, node.name, _not_per_channel(node, *operands))
            continue
        producer, layer, why = _fold_left(gm, node, op)
        if producer is None:
            left_why[node.name] = why
            continue
        if ctx.apply(RULE, node.name, f"{node.name} folded into {producer.target}"):
            replace_module(gm, producer, layer)
            node.replace_all_uses_with(op.x)
            gm.graph.erase_node(node)
    bias_map = ctx.options.get("bias_map", True)
    right_why: dict[str, str] = {}
    alive = set(gm.graph.nodes)
    for node in reversed(list(gm.graph.nodes)):
        if node not in alive or not data_users(node):
            continue
        if node.name not in left_why and not (is_call(node, CAT_OPS) or isinstance(get_module(gm, node), cnn.Concat)):
            continue
        expr = expression(gm, node)
        if _whole(expr):
            right_why[node.name] = _fold_right(gm, node, expr, bias_map, ctx)
            alive = set(gm.graph.nodes)
    nodes = {n.name: n for n in gm.graph.nodes}
    for name, why in right_why.items():
        if why and name in nodes and name not in left_why:
            ctx.skip(RULE, name, f"right: {why}")
    for name, why in left_why.items():
        node = nodes.get(name)
        if node is None or _interior(gm, node, left_why):
            continue
        right = right_why.get(name) or "it is not a per-channel map (axis 1) of a whole tensor"
        ctx.skip(RULE, name, f"left: {why}; right: {right}")
