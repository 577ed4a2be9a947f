"""ONNX → torch: an ``fx.GraphModule`` of real ``torch.nn`` layers, ready for canonc's passes.

Conv, ConvTranspose, Gemm / MatMul (+ Add), BatchNormalization, activations and pooling
become ``nn`` modules (named after the ONNX name scopes or weights); add / mul / cat /
flatten / reshape / mean become torch functions. Everything that depends only on
initializers and shapes (the Shape / Gather / Concat chains of dynamo exports, Constant,
Expand, CastLike ...) is evaluated at import time: each value is computed on two example
inputs (batch 2 and batch 3), so a shape entry that follows the batch size is known as such.
Any other op is refused with one line naming the op and the node.
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import torch
from google.protobuf.message import DecodeError
from onnx import numpy_helper
from torch import fx, nn

from .errors import InputError, RefusedError

MIN_OPSET = 13
EX_BATCHES = (2, 3)
_DTYPES = {
    onnx.TensorProto.FLOAT: torch.float32,
    onnx.TensorProto.DOUBLE: torch.float64,
    onnx.TensorProto.FLOAT16: torch.float16,
    onnx.TensorProto.INT64: torch.int64,
    onnx.TensorProto.INT32: torch.int32,
    onnx.TensorProto.BOOL: torch.bool,
}


class Value:
    """An ONNX value at import time: its two example values, and its fx node when it is computed at run time.

    A value without a node is known at import: a constant when both examples agree,
    otherwise a shape quantity that follows the batch size.
    """

    __slots__ = ("ex", "node")

    def __init__(self, ex: tuple[torch.Tensor, torch.Tensor], node: fx.Node | None = None) -> None:
        self.ex = ex
        self.node = node

    @property
    def dynamic(self) -> bool:
        return self.node is not None

    @property
    def const(self) -> bool:
        a, b = self.ex
        return self.node is None and a.shape == b.shape and bool(torch.equal(a, b))


class ImportRefused(RefusedError):
    """An ONNX node canonc cannot import (the message names the op and node)."""


def _attrs(node: onnx.NodeProto) -> dict[str, object]:
    out = {}
    for a in node.attribute:
        v = onnx.helper.get_attribute_value(a)
        out[a.name] = v.decode() if isinstance(v, bytes) else v
    return out


def _atom(text: str) -> str:
    return re.sub(r"\W", "_", text).strip("_")


def _scope_name(node: onnx.NodeProto) -> str:
    """Dotted module name from dynamo ``name_scopes`` metadata or legacy ``/a/a.0/relu/Relu`` node names."""
    scopes: list[str] = []
    for prop in node.metadata_props:
        if prop.key == "pkg.torch.onnx.name_scopes":
            scopes = [s.strip(" '\"") for s in prop.value.strip("[]").split(",")][:-1]
    if not scopes and node.name.startswith("/"):
        scopes = node.name.split("/")[:-1]
    current = ""
    for part in (s for s in scopes if s and not s.startswith("_")):
        last = current.rpartition(".")[2]
        if not current or part.startswith(current + "."):
            current = part
        elif part.startswith(last + "."):  # legacy: a Sequential child is scoped "seq.0"
            current = current[: len(current) - len(last)] + part
        else:
            current = f"{current}.{part}"
    return ".".join(a for a in (_atom(p) for p in current.split(".")) if a)


def _spatial_pads(pads: list[int], nd: int, what: str) -> int | tuple[int, ...]:
    begin, end = pads[:nd], pads[nd:]
    if begin != end:
        raise ValueError(f"asymmetric {what} padding {pads} is not supported")
    return tuple(begin)


def _auto_pads(attrs: dict, in_spatial: tuple[int, ...], kernel: list[int], strides: list[int],
               dilations: list[int]) -> list[int]:
    mode = attrs.get("auto_pad", "NOTSET")
    nd = len(kernel)
    if mode in ("NOTSET", ""):
        return list(attrs.get("pads", [0] * 2 * nd))
    if mode == "VALID":
        return [0] * 2 * nd
    begin, end = [], []
    for size, k, s, d in zip(in_spatial, kernel, strides, dilations):
        total = max(0, (math.ceil(size / s) - 1) * s + (k - 1) * d + 1 - size)
        small = total // 2
        begin.append(small if mode == "SAME_UPPER" else total - small)
        end.append(total - begin[-1])
    return begin + end


def _linear_name_of(init_name: str) -> str:
    stem = init_name[: -len(".weight")] if init_name.endswith(".weight") else ""
    return ".".join(a for a in (_atom(p) for p in stem.split(".")) if a)


class Importer:
    """Build a GraphModule from one ONNX graph (use :func:`import_onnx`)."""

    def __init__(self, model: onnx.ModelProto) -> None:
        self.model = model
        self.graph = fx.Graph()
        self.root = nn.Module()
        self.env: dict[str, Value] = {}
        self.consumers: dict[str, list[int]] = defaultdict(list)
        self.absorbed: dict[int, Value] = {}
        self.names: set[str] = set()
        self.node: onnx.NodeProto | None = None
        self.index = 0
        for i, node in enumerate(model.graph.node):
            for name in node.input:
                if name:
                    self.consumers[name].append(i)
        for out in model.graph.output:
            self.consumers[out.name].append(-1)

    # -- values -----------------------------------------------------------------------

    def value(self, i: int) -> Value | None:
        """The node's ``i``-th input (None when absent or empty)."""
        if i >= len(self.node.input) or not self.node.input[i]:
            return None
        return self.env[self.node.input[i]]

    def const(self, i: int, what: str) -> torch.Tensor | None:
        """The node's ``i``-th input as a constant tensor (None when absent)."""
        v = self.value(i)
        if v is None:
            return None
        if not v.const:
            raise ValueError(f"{what} (input '{self.node.input[i]}') must be a constant")
        return v.ex[0]

    def ints(self, i: int, what: str) -> list[int] | None:
        t = self.const(i, what)
        return None if t is None else [int(x) for x in t.reshape(-1).tolist()]

    def _taken(self, name: str) -> bool:
        atoms = name.split(".")
        prefixes = {".".join(atoms[:i]) for i in range(1, len(atoms) + 1)}
        return bool(prefixes & self.names) or any(n.startswith(name + ".") for n in self.names)

    def _unique(self, stem: str) -> str:
        stem = stem or "node"
        name, k = stem, 1
        while self._taken(name):
            name, k = f"{stem}_{k}", k + 1
        self.names.add(name)
        return name

    def _buffer(self, t: torch.Tensor) -> fx.Node:
        name = self._unique(f"const_{_atom(self.node.name) or self.node.op_type.lower()}")
        self.root.register_buffer(name, t.clone())
        return self.graph.get_attr(name)

    def _fx_arg(self, a: object) -> object:
        if isinstance(a, Value):
            if a.dynamic:
                return a.node
            if not a.const:
                raise ValueError("an input that depends on the batch size is used as data")
            return self._buffer(a.ex[0])
        if isinstance(a, (list, tuple)):
            return type(a)(self._fx_arg(x) for x in a)
        return a

    @staticmethod
    def _ex_arg(a: object, k: int) -> object:
        if isinstance(a, Value):
            return a.ex[k]
        if isinstance(a, (list, tuple)):
            return type(a)(Importer._ex_arg(x, k) for x in a)
        return a

    @staticmethod
    def _has_dynamic(a: object) -> bool:
        if isinstance(a, Value):
            return a.dynamic
        if isinstance(a, (list, tuple)):
            return any(Importer._has_dynamic(x) for x in a)
        return False

    def call(self, fn: Callable, *args: object, **kwargs: object) -> Value:
        """``fn(*args)``: evaluated now when no argument is computed at run time, else an fx node."""
        with torch.no_grad():
            ex = tuple(fn(*self._ex_arg(args, k), **kwargs) for k in range(2))
        if not self._has_dynamic(args):
            return Value(ex)
        return Value(ex, self.graph.call_function(fn, self._fx_arg(args), kwargs))

    def module(self, module: nn.Module, x: Value, stem: str = "") -> Value:
        """Call ``module`` on ``x`` (registered under the node's scope name when ``x`` is computed)."""
        module.eval()
        with torch.no_grad():
            ex = (module(x.ex[0]), module(x.ex[1]))
        if not x.dynamic:
            return Value(ex)
        name = self._unique(stem or _scope_name(self.node) or _atom(self.node.name) or self.node.op_type.lower())
        *parents, leaf = name.split(".")
        parent = self.root
        for atom in parents:
            if not hasattr(parent, atom):
                parent.add_module(atom, nn.Module())
            parent = getattr(parent, atom)
        parent.add_module(leaf, module)
        return Value(ex, self.graph.call_module(name, (x.node,)))

    def weight_stem(self, i: int) -> str:
        """Module name for a layer whose weight is input ``i`` (scope name, else the weight's name)."""
        return _scope_name(self.node) or _linear_name_of(self.node.input[i])

    # -- driving ----------------------------------------------------------------------

    def inputs(self) -> None:
        inits = {t.name for t in self.model.graph.initializer}
        for t in self.model.graph.initializer:
            arr = torch.from_numpy(numpy_helper.to_array(t).copy())
            self.env[t.name] = Value((arr, arr))
        real = [i for i in self.model.graph.input if i.name not in inits]
        if len(real) != 1:
            raise InputError(f"ONNX graph has {len(real)} inputs; canonc imports single-input models")
        inp = real[0]
        tt = inp.type.tensor_type
        if tt.elem_type not in (onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE):
            raise InputError(f"ONNX input '{inp.name}' has element type {onnx.TensorProto.DataType.Name(tt.elem_type)}; "
                             "canonc imports models with a float input")
        dims = list(tt.shape.dim)
        if len(dims) < 2 or any(not d.HasField("dim_value") for d in dims[1:]):
            shown = ",".join(str(d.dim_value) if d.HasField("dim_value") else (d.dim_param or "?") for d in dims)
            raise InputError(f"ONNX input '{inp.name}' has shape [{shown}]; canonc needs a batch axis and fixed "
                             "other dims (fix them with onnx's update_inputs_outputs_dims)")
        self.input_shape = (1, *(d.dim_value for d in dims[1:]))
        gen = torch.Generator().manual_seed(0)
        dtype = _DTYPES[tt.elem_type]
        ex = tuple(torch.randn((b, *self.input_shape[1:]), generator=gen, dtype=dtype) for b in EX_BATCHES)
        placeholder = self.graph.placeholder(_atom(inp.name) or "x")
        self.env[inp.name] = Value(ex, placeholder)

    def run(self) -> fx.GraphModule:
        """Convert every node, then set the graph outputs."""
        self.inputs()
        for i, node in enumerate(self.model.graph.node):
            self.node, self.index = node, i
            if i in self.absorbed:
                self.env[node.output[0]] = self.absorbed[i]
                continue
            handler = _HANDLERS.get(node.op_type) if node.domain in ("", "ai.onnx") else None
            if handler is None:
                where = f"{node.domain}::" if node.domain not in ("", "ai.onnx") else ""
                raise ImportRefused(f"ONNX op {where}{node.op_type} (node '{node.name or node.output[0]}') is not "
                                    "supported by canonc's importer; canonize the PyTorch model instead")
            try:
                results = handler(self, _attrs(node))
            except ImportRefused:
                raise
            except (ValueError, RuntimeError, IndexError, TypeError, KeyError) as exc:
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                raise ImportRefused(f"ONNX {node.op_type} node '{node.name or node.output[0]}': {first}") from exc
            results = results if isinstance(results, tuple) else (results,)
            for name, value in zip(node.output, results):
                if name:
                    self.env[name] = value
            for name in node.output[len(results):]:
                if name and self.consumers.get(name):
                    raise ImportRefused(f"ONNX {node.op_type} node '{node.name}': output '{name}' is used; "
                                        "canonc imports only its first output")
        return self.finish()

    def finish(self) -> fx.GraphModule:
        outs = []
        for out in self.model.graph.output:
            v = self.env[out.name]
            if not v.dynamic:
                raise ImportRefused(f"ONNX output '{out.name}' does not depend on the input")
            for b, t in zip(EX_BATCHES, v.ex):
                if t.dim() == 0 or t.shape[0] != b:
                    raise ImportRefused(f"ONNX output '{out.name}' does not follow the batch size (the graph fixes "
                                        "it); export the model with a dynamic batch axis")
            outs.append(v.node)
        self.graph.output(outs[0] if len(outs) == 1 else tuple(outs))
        gm = fx.GraphModule(self.root, self.graph, "OnnxModel")
        return gm.eval()


# -- op handlers: each returns the Value(s) of the node's outputs ----------------------------


def _bias(b: Importer, i: int) -> torch.Tensor | None:
    """Input ``i`` as a bias, or None when absent or all zero (dynamo exports ``bias=None`` as zeros)."""
    bias = b.const(i, "bias")
    return None if bias is None or not bias.any() else bias


def _conv(b: Importer, a: dict) -> Value:
    x, w, bias = b.value(0), b.const(1, "weight"), _bias(b, 2)
    nd = w.dim() - 2
    kernel = list(a.get("kernel_shape", w.shape[2:]))
    strides = list(a.get("strides", [1] * nd))
    dil = list(a.get("dilations", [1] * nd))
    pads = _auto_pads(a, tuple(x.ex[0].shape[2:]), kernel, strides, dil)
    groups = int(a.get("group", 1))
    cls = (nn.Conv1d, nn.Conv2d, nn.Conv3d)[nd - 1]
    conv = cls(w.shape[1] * groups, w.shape[0], kernel, stride=strides, dilation=dil, groups=groups,
               padding=0 if pads[:nd] != pads[nd:] else tuple(pads[:nd]), bias=bias is not None)
    conv.weight.data.copy_(w)
    if bias is not None:
        conv.bias.data.copy_(bias)
    if pads[:nd] != pads[nd:]:
        torch_pads = [p for d in reversed(range(nd)) for p in (pads[d], pads[nd + d])]
        pad_cls = (nn.ConstantPad1d, nn.ConstantPad2d, nn.ConstantPad3d)[nd - 1]
        x = b.module(pad_cls(tuple(torch_pads), 0.0), x, (b.weight_stem(1) or "conv") + "_pad")
    return b.module(conv, x, b.weight_stem(1))


def _conv_transpose(b: Importer, a: dict) -> Value:
    x, w, bias = b.value(0), b.const(1, "weight"), _bias(b, 2)
    nd = w.dim() - 2
    if "output_shape" in a or a.get("auto_pad", "NOTSET") not in ("NOTSET", ""):
        raise ValueError("output_shape / auto_pad are not supported; export with explicit pads")
    groups = int(a.get("group", 1))
    pads = _spatial_pads(list(a.get("pads", [0] * 2 * nd)), nd, "ConvTranspose")
    cls = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)[nd - 1]
    conv = cls(w.shape[0], w.shape[1] * groups, list(a.get("kernel_shape", w.shape[2:])),
               stride=list(a.get("strides", [1] * nd)), padding=pads,
               output_padding=list(a.get("output_padding", [0] * nd)), groups=groups,
               dilation=list(a.get("dilations", [1] * nd)), bias=bias is not None)
    conv.weight.data.copy_(w)
    if bias is not None:
        conv.bias.data.copy_(bias)
    return b.module(conv, x, b.weight_stem(1))


def _batch_norm(b: Importer, a: dict) -> Value:
    x = b.value(0)
    scale, shift, mean, var = (b.const(i, n) for i, n in enumerate(("scale", "bias", "mean", "var"), start=1))
    if a.get("training_mode", 0):
        raise ValueError("training_mode=1 (batch statistics) is not an affine map; export the model in eval mode")
    rank = x.ex[0].dim()
    cls = {2: nn.BatchNorm1d, 3: nn.BatchNorm1d, 4: nn.BatchNorm2d, 5: nn.BatchNorm3d}[rank]
    bn = cls(scale.numel(), eps=float(a.get("epsilon", 1e-5)))
    bn.weight.data.copy_(scale)
    bn.bias.data.copy_(shift)
    bn.running_mean.copy_(mean)
    bn.running_var.copy_(var)
    return b.module(bn, x, _scope_name(b.node) or _linear_name_of(b.node.input[1]))


def _linear(b: Importer, x: Value, weight: torch.Tensor, bias: torch.Tensor | None, stem: str) -> Value:
    lin = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None)
    lin.weight.data.copy_(weight)
    if bias is not None:
        lin.bias.data.copy_(bias.reshape(-1).expand(weight.shape[0]))
    return b.module(lin, x, stem)


def _gemm(b: Importer, a: dict) -> Value:
    x, w, c = b.value(0), b.const(1, "B"), b.const(2, "C")
    if a.get("transA", 0):
        raise ValueError("transA=1 is not supported")
    w = w if a.get("transB", 0) else w.t()
    w = w * float(a.get("alpha", 1.0))
    if c is not None:
        if c.numel() not in (1, w.shape[0]) or (c.dim() == 2 and c.shape[0] != 1):
            raise ValueError(f"bias C of shape {list(c.shape)} is not a per-output vector")
        c = c * float(a.get("beta", 1.0))
    return _linear(b, x, w, c, b.weight_stem(1))


def _matmul(b: Importer, a: dict) -> Value:
    x, w = b.value(0), b.value(1)
    if not (x.dynamic and w.const and w.ex[0].dim() == 2):
        return b.call(torch.matmul, x, w)
    bias, users = None, b.consumers.get(b.node.output[0], [])
    if len(users) == 1 and users[0] >= 0:
        add = b.model.graph.node[users[0]]
        other = [n for n in add.input if n != b.node.output[0]]
        if add.op_type == "Add" and len(other) == 1 and other[0] in b.env and b.env[other[0]].const:
            c = b.env[other[0]].ex[0]
            if c.numel() == w.ex[0].shape[1] and c.dim() <= 2:
                bias = c
    out = _linear(b, x, w.ex[0].t(), bias, b.weight_stem(1))
    if bias is not None:
        b.absorbed[users[0]] = out
    return out


def _sigmoid(b: Importer, a: dict) -> Value:
    x, users = b.value(0), b.consumers.get(b.node.output[0], [])
    if len(users) == 1 and users[0] >= 0:
        mul = b.model.graph.node[users[0]]
        if mul.op_type == "Mul" and sorted(mul.input) == sorted([b.node.input[0], b.node.output[0]]):
            out = b.module(nn.SiLU(), x)
            b.absorbed[users[0]] = out
            return out
    return b.module(nn.Sigmoid(), x)


def _clip(b: Importer, a: dict) -> Value:
    lo, hi = b.const(1, "min"), b.const(2, "max")
    lo = float(lo) if lo is not None else a.get("min")
    hi = float(hi) if hi is not None else a.get("max")
    if lo == 0.0 and hi == 6.0:
        return b.module(nn.ReLU6(), b.value(0))
    if lo == 0.0 and hi is None:
        return b.module(nn.ReLU(), b.value(0))
    if lo is not None and hi is not None:
        return b.module(nn.Hardtanh(lo, hi), b.value(0))
    return b.call(torch.clamp, b.value(0), lo, hi)


def _hard_sigmoid(b: Importer, a: dict) -> Value:
    alpha, beta = float(a.get("alpha", 0.2)), float(a.get("beta", 0.5))
    if abs(alpha - 1 / 6) > 1e-6 or abs(beta - 0.5) > 1e-6:
        raise ValueError(f"HardSigmoid(alpha={alpha}, beta={beta}) is not torch's hardsigmoid (1/6, 0.5)")
    return b.module(nn.Hardsigmoid(), b.value(0))


def _pool(b: Importer, a: dict, kind: str) -> Value:
    x = b.value(0)
    kernel = list(a["kernel_shape"])
    nd = len(kernel)
    strides = list(a.get("strides", [1] * nd))
    dil = list(a.get("dilations", [1] * nd))
    pads = _spatial_pads(_auto_pads(a, tuple(x.ex[0].shape[2:]), kernel, strides, dil), nd, kind)
    ceil = bool(a.get("ceil_mode", 0))
    if kind == "MaxPool":
        cls = (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d)[nd - 1]
        pool = cls(kernel, strides, pads, dilation=dil, ceil_mode=ceil)
    else:
        if any(d != 1 for d in dil):
            raise ValueError("dilated AveragePool is not supported")
        cls = (nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d)[nd - 1]
        pool = cls(kernel, strides, pads, ceil_mode=ceil, count_include_pad=bool(a.get("count_include_pad", 0)))
    return b.module(pool, x)


def _global_pool(b: Importer, a: dict, kind: str) -> Value:
    x = b.value(0)
    nd = x.ex[0].dim() - 2
    table = {"avg": (nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d),
             "max": (nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d)}
    return b.module(table[kind][nd - 1](1), x)


def _reduce_mean(b: Importer, a: dict) -> Value:
    x = b.value(0)
    axes = b.ints(1, "axes") if len(b.node.input) > 1 else a.get("axes")
    keep = bool(a.get("keepdims", 1))
    rank = x.ex[0].dim()
    if not axes:
        if a.get("noop_with_empty_axes", 0):
            return x
        axes = list(range(rank))
    axes = sorted(int(d) % rank for d in axes)
    if x.dynamic and rank == 4 and axes == [2, 3] and keep:
        return b.module(nn.AdaptiveAvgPool2d(1), x)
    return b.call(torch.mean, x, axes, keep)


def _binary(fn: Callable) -> Callable[[Importer, dict], Value]:
    def handler(b: Importer, a: dict) -> Value:
        return b.call(fn, b.value(0), b.value(1))

    return handler


def _concat(b: Importer, a: dict) -> Value:
    return b.call(torch.cat, [b.value(i) for i in range(len(b.node.input))], int(a["axis"]))


def _reshape_to(b: Importer, x: Value, out: tuple[torch.Tensor, torch.Tensor]) -> Value:
    """Reshape ``x`` to the example outputs' shapes, writing the batch-dependent entry as -1."""
    if not x.dynamic:
        return Value(out)
    s0, s1 = list(out[0].shape), list(out[1].shape)
    batch_in = x.ex[0].shape[0] != x.ex[1].shape[0]
    varying = [i for i, (p, q) in enumerate(zip(s0, s1)) if p != q]
    if batch_in and varying != [0]:
        raise ValueError(f"the target shape {s0} (at batch {x.ex[0].shape[0]}) fixes the batch size or moves the batch "
                         "axis; export with a dynamic batch axis")
    if len(varying) > 1:
        raise ValueError(f"target shapes {s0} / {s1} vary in more than one axis")
    if varying == [0] and len(s0) == 2 and x.ex[0].dim() >= 2 and s0[1] == math.prod(x.ex[0].shape[1:]):
        return b.call(torch.flatten, x, 1)
    shape = tuple(-1 if i in varying else d for i, d in enumerate(s0))
    return b.call(torch.reshape, x, shape)


def _reshape(b: Importer, a: dict) -> Value:
    x, shape = b.value(0), b.value(1)
    if shape.dynamic:
        raise ValueError("the target shape is computed from data at run time")
    outs = []
    for k in range(2):
        target = [int(d) for d in shape.ex[k].tolist()]
        if not a.get("allowzero", 0):
            target = [x.ex[k].shape[i] if d == 0 else d for i, d in enumerate(target)]
        outs.append(x.ex[k].reshape(target))
    return _reshape_to(b, x, (outs[0], outs[1]))


def _flatten(b: Importer, a: dict) -> Value:
    x = b.value(0)
    axis = int(a.get("axis", 1)) % max(x.ex[0].dim(), 1)
    outs = tuple(t.reshape(math.prod(t.shape[:axis]), -1) for t in x.ex)
    return _reshape_to(b, x, outs)


def _unsqueeze(b: Importer, a: dict) -> Value:
    axes = b.ints(1, "axes") if len(b.node.input) > 1 else list(a["axes"])
    x = b.value(0)
    rank = x.ex[0].dim() + len(axes)
    for d in sorted(int(d) % rank for d in axes):
        x = b.call(torch.unsqueeze, x, d)
    return x


def _squeeze(b: Importer, a: dict) -> Value:
    axes = b.ints(1, "axes") if len(b.node.input) > 1 else a.get("axes")
    x = b.value(0)
    if axes is None:
        axes = [i for i, d in enumerate(x.ex[0].shape) if d == 1]
    return b.call(torch.squeeze, x, tuple(int(d) % x.ex[0].dim() for d in axes))


def _transpose(b: Importer, a: dict) -> Value:
    x = b.value(0)
    perm = list(a.get("perm", reversed(range(x.ex[0].dim()))))
    return b.call(torch.permute, x, perm)


def _identity(b: Importer, a: dict) -> Value:
    return b.value(0)


def _dropout(b: Importer, a: dict) -> Value:
    train = b.const(2, "training_mode")
    if train is not None and bool(train):
        raise ValueError("training_mode=True is random; export the model in eval mode")
    return b.value(0)


def _softmax(b: Importer, a: dict) -> Value:
    return b.module(nn.Softmax(dim=int(a.get("axis", -1))), b.value(0))


def _pad(b: Importer, a: dict) -> Value:
    x = b.value(0)
    pads = b.ints(1, "pads")
    value = b.const(2, "constant_value")
    if len(b.node.input) > 3 and b.node.input[3]:
        raise ValueError("Pad with axes is not supported")
    rank = x.ex[0].dim()
    if rank != 4 or any(pads[i] or pads[rank + i] for i in (0, 1)):
        raise ValueError(f"only spatial padding of 4-D tensors is supported (pads {pads})")
    torch_pads = (pads[3], pads[7], pads[2], pads[6])
    mode = a.get("mode", "constant")
    if mode == "constant":
        return b.module(nn.ConstantPad2d(torch_pads, float(value) if value is not None else 0.0), x)
    if mode in ("reflect", "edge"):
        return b.module((nn.ReflectionPad2d if mode == "reflect" else nn.ReplicationPad2d)(torch_pads), x)
    raise ValueError(f"Pad mode '{mode}' is not supported")


def _cast(b: Importer, a: dict) -> Value:
    x, dtype = b.value(0), _DTYPES.get(int(a["to"]))
    if dtype is None:
        raise ValueError(f"cast to {onnx.TensorProto.DataType.Name(int(a['to']))} is not supported")
    if x.dynamic and x.ex[0].dtype != dtype:
        raise ValueError(f"a run-time cast from {x.ex[0].dtype} to {dtype} is not supported")
    return x if x.dynamic else Value(tuple(t.to(dtype) for t in x.ex))


# ops evaluated at import time only (their inputs are constants or shapes)


def _static(fn: Callable[..., torch.Tensor], meta_inputs: tuple[int, ...] = ()) -> Callable[[Importer, dict], Value]:
    """An op computed at import time; inputs in ``meta_inputs`` may be run-time tensors (only their shape/dtype is read)."""

    def handler(b: Importer, a: dict) -> Value:
        ins = [b.value(i) for i in range(len(b.node.input))]
        for i, v in enumerate(ins):
            if v is not None and v.dynamic and i not in meta_inputs:
                raise ValueError("this op is supported only on constants and shapes, not on run-time tensors")
        with torch.no_grad():
            return Value(tuple(fn(a, *[None if v is None else v.ex[k] for v in ins]) for k in range(2)))

    return handler


def _shape(a: dict, x: torch.Tensor) -> torch.Tensor:
    return torch.tensor(list(x.shape), dtype=torch.int64)[a.get("start", 0): a.get("end")]


def _constant(a: dict) -> torch.Tensor:
    if "value" in a:
        return torch.from_numpy(numpy_helper.to_array(a["value"]).copy())
    for key, dtype in (("value_float", torch.float32), ("value_floats", torch.float32),
                       ("value_int", torch.int64), ("value_ints", torch.int64)):
        if key in a:
            return torch.tensor(a[key], dtype=dtype)
    raise ValueError(f"Constant with attributes {sorted(a)} is not supported")


def _gather(a: dict, data: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    return torch.from_numpy(np.take(data.numpy(), idx.numpy(), axis=int(a.get("axis", 0))).copy())


def _slice(a: dict, data: torch.Tensor, starts: torch.Tensor, ends: torch.Tensor,
           axes: torch.Tensor | None = None, steps: torch.Tensor | None = None) -> torch.Tensor:
    index = [slice(None)] * data.dim()
    axes = axes.tolist() if axes is not None else list(range(len(starts)))
    steps = steps.tolist() if steps is not None else [1] * len(starts)
    for s, e, ax, st in zip(starts.tolist(), ends.tolist(), axes, steps):
        index[ax] = slice(s, e, st)
    return torch.from_numpy(data.numpy()[tuple(index)].copy())


def _expand(a: dict, x: torch.Tensor, shape: torch.Tensor) -> torch.Tensor:
    return x * torch.ones(shape.tolist(), dtype=x.dtype)


def _constant_of_shape(a: dict, shape: torch.Tensor) -> torch.Tensor:
    fill = torch.from_numpy(numpy_helper.to_array(a["value"]).copy()) if "value" in a else torch.zeros(1)
    return fill.reshape(()).expand(shape.tolist()).clone()


_HANDLERS: dict[str, Callable[[Importer, dict], Value | tuple[Value, ...]]] = {
    "Conv": _conv,
    "ConvTranspose": _conv_transpose,
    "BatchNormalization": _batch_norm,
    "Gemm": _gemm,
    "MatMul": _matmul,
    "Relu": lambda b, a: b.module(nn.ReLU(), b.value(0)),
    "LeakyRelu": lambda b, a: b.module(nn.LeakyReLU(float(a.get("alpha", 0.01))), b.value(0)),
    "Sigmoid": _sigmoid,
    "Tanh": lambda b, a: b.module(nn.Tanh(), b.value(0)),
    "HardSigmoid": _hard_sigmoid,
    "HardSwish": lambda b, a: b.module(nn.Hardswish(), b.value(0)),
    "Gelu": lambda b, a: b.module(nn.GELU(approximate=a.get("approximate", "none")), b.value(0)),
    "Clip": _clip,
    "Softmax": _softmax,
    "MaxPool": lambda b, a: _pool(b, a, "MaxPool"),
    "AveragePool": lambda b, a: _pool(b, a, "AveragePool"),
    "GlobalAveragePool": lambda b, a: _global_pool(b, a, "avg"),
    "GlobalMaxPool": lambda b, a: _global_pool(b, a, "max"),
    "ReduceMean": _reduce_mean,
    "Add": _binary(torch.add),
    "Sub": _binary(torch.sub),
    "Mul": _binary(torch.mul),
    "Div": _binary(torch.div),
    "Concat": _concat,
    "Flatten": _flatten,
    "Reshape": _reshape,
    "Unsqueeze": _unsqueeze,
    "Squeeze": _squeeze,
    "Transpose": _transpose,
    "Identity": _identity,
    "Dropout": _dropout,
    "Pad": _pad,
    "Cast": _cast,
    "Constant": _static(lambda a: _constant(a)),
    "Shape": _static(_shape, meta_inputs=(0,)),
    "CastLike": _static(lambda a, x, like: x.to(like.dtype), meta_inputs=(1,)),
    "Gather": _static(_gather),
    "Slice": _static(_slice),
    "Expand": _static(_expand),
    "ConstantOfShape": _static(_constant_of_shape),
    "Range": _static(lambda a, s, e, d: torch.arange(s.item(), e.item(), d.item(), dtype=s.dtype)),
    "Equal": _static(lambda a, x, y: torch.eq(x, y)),
    "Where": _static(lambda a, c, x, y: torch.where(c, x, y)),
}
SUPPORTED_OPS = tuple(sorted(_HANDLERS))


def location_entries(model: onnx.ModelProto) -> list:
    """The ``location`` entries of every tensor stored as external data (file names, relative to the model)."""
    return [e for t in onnx.external_data_helper._get_all_tensors(model) for e in t.external_data
            if e.key == "location"]


def external_data_files(path: Path) -> list[Path]:
    """The external data files an ONNX file refers to (none for an unreadable file: ``read_onnx`` says why)."""
    try:
        model = onnx.load(str(path), load_external_data=False)
    except (DecodeError, OSError, ValueError):
        return []
    return [Path(path).parent / loc for loc in sorted({e.value for e in location_entries(model)})]


def read_onnx(path: Path) -> onnx.ModelProto:
    """Load and check an ONNX file, raising its opset to ≥ 13 when needed; ``InputError`` when unusable."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"no such file: {path}")
    if path.stat().st_size == 0:
        raise InputError(f"{path} is empty; pass an ONNX model file")
    try:
        onnx.checker.check_model(str(path))  # from the file: also above 2 GB, with external data beside it
        model = onnx.load(str(path))
    except (DecodeError, onnx.checker.ValidationError, OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(f"{path} is not a valid ONNX model ({first}); re-export it") from exc
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    if opset is None:
        raise InputError(f"{path} imports no standard ONNX opset; canonc reads ai.onnx models")
    if opset < MIN_OPSET:
        try:
            model = onnx.version_converter.convert_version(model, MIN_OPSET)
            onnx.checker.check_model(model)
        except Exception as exc:  # noqa: BLE001 - the converter raises many kinds of errors
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise InputError(f"{path} uses ONNX opset {opset}, which onnx.version_converter cannot raise to "
                             f"{MIN_OPSET} ({first}); re-export it with opset {MIN_OPSET} or newer") from exc
    return model


def import_onnx(path: str | Path) -> tuple[fx.GraphModule, tuple[int, ...]]:
    """Import an ONNX file as a GraphModule of torch.nn layers (eval mode).

    Parameters
    ----------
    path : str or Path
        The ``.onnx`` file (single float input with a batch axis and fixed other dims).

    Returns
    -------
    fx.GraphModule, tuple of int
        The module and its example input shape (batch 1).

    Raises
    ------
    InputError
        Unreadable or invalid file, opset too old to convert, unusable input signature.
    RefusedError
        An op or attribute canonc's importer does not support (one line naming op and node).
    """
    importer = Importer(read_onnx(Path(path)))
    gm = importer.run()
    return gm, importer.input_shape
