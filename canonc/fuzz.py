"""Random-graph fuzzer: generate small PyTorch models, canonize them, check the result.

``python -m canonc.fuzz --n N --seed S [--out DIR]`` generates ``N`` models (DAGs of
Conv1d/2d/3d, ConvTranspose, Linear, BatchNorm with wild statistics, activations as
modules and functions, add, concat, gates, pooling, flatten, shared modules, in float64,
float32, float16 and bfloat16), canonizes each and classifies the outcome:

- ``verified``: canonized, and the written model passes an independent check;
- ``refused``: canonc declined with a reason (a ``CanoncError``);
- ``failure``: any other exception, or a written model that fails the independent check
  (its own float64 comparison, not the gate's code path).

Each failure is shrunk (the smallest output slice that still fails) and saved in
``--out`` as a self-contained script. A case is fully determined by its seed.
"""

from __future__ import annotations

import argparse
import copy
import inspect
import random
import sys
import tempfile
import time
import traceback
import types
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import fx, nn

from .codegen import save_module
from .core import canonize
from .errors import CanoncError, VerificationError

_DTYPE_WEIGHTS = {"float64": 45, "float32": 45, "float16": 5, "bfloat16": 5}
_SPATIAL = {1: (12, 24), 2: (6, 10), 3: (4, 5)}  # input size range per number of spatial dims
_MAX_SPATIAL = {1: 40, 2: 14, 3: 7}
_MAX_CH = 12
_MAX_FLAT = 192


def wild_bn_stats(bn: nn.modules.batchnorm._BatchNorm, gen: torch.Generator, tiny_var: bool = False) -> None:
    """Draw wild statistics into ``bn`` in place (DESIGN.md §5), from ``gen``.

    ``mean ~ N(0, 1)``, ``var ~ LogUniform(1e-2, 10)`` (about 5 % exactly 1e-6 with
    ``tiny_var``), ``gamma ~ U(0.2, 2)`` with random signs and about 10 % exact zeros,
    ``beta ~ N(0, 0.5)``.
    """
    n = bn.num_features
    with torch.no_grad():
        if bn.track_running_stats:
            bn.running_mean.copy_(torch.randn(n, generator=gen))
            var = torch.exp(torch.empty(n).uniform_(-4.6, 2.3, generator=gen))
            if tiny_var:
                var[torch.rand(n, generator=gen) < 0.05] = 1e-6
            bn.running_var.copy_(var)
        if bn.affine:
            gamma = torch.empty(n).uniform_(0.2, 2.0, generator=gen)
            gamma *= torch.where(torch.rand(n, generator=gen) < 0.5, -1.0, 1.0)
            gamma[torch.rand(n, generator=gen) < 0.1] = 0.0
            bn.weight.copy_(gamma)
            bn.bias.copy_(torch.randn(n, generator=gen) * 0.5)


def randomize(model: nn.Module, seed: int) -> None:
    """Deterministic weights and wild BatchNorm statistics, seeded per module name.

    Each child ``m<k>`` draws from its own generator, so a shrunk slice of a model
    keeps the values the full model had. BN: ``gamma`` of both signs with exact zeros,
    ``beta ~ N(0, 0.5)``, ``mean ~ N(0, 1)``, ``var ~ LogUniform(1e-2, 10)`` with some
    tiny (1e-6) variances, ``eps`` as constructed.
    """
    with torch.no_grad():
        for name, module in model.named_children():
            gen = torch.Generator().manual_seed(seed * 1000 + int(name[1:]))
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                wild_bn_stats(module, gen, tiny_var=True)
                continue
            for p in module.parameters(recurse=False):
                fan_in = max(1, p[0].numel()) if p.dim() > 1 else 4
                p.copy_(torch.empty(p.shape).uniform_(-1.0, 1.0, generator=gen) * fan_in ** -0.5)


@dataclass
class Op:
    """One step of a generated forward: ``lines`` compute ``out`` from ``inputs``."""

    out: str
    lines: list[str]
    inputs: list[str]
    modules: list[str]


@dataclass
class Case:
    """A generated model: everything needed to rebuild it and its example input."""

    seed: int
    dtype: str
    input_shape: tuple[int, ...]
    modules: dict[str, str]  # attribute → constructor source, in registration order
    ops: list[Op]
    outputs: list[str]
    kinds: list[str] = field(default_factory=list)

    def source(self) -> str:
        """Python source of the model: imports, ``FuzzNet``, ``build()``, ``INPUT_SHAPE``."""
        ops = _slice(self.ops, self.outputs)
        used = {m for op in ops for m in op.modules}
        init = [f"        self.{k} = {v}" for k, v in self.modules.items() if k in used]
        body = [line for op in ops for line in op.lines]
        ret = self.outputs[0] if len(self.outputs) == 1 else "(" + ", ".join(self.outputs) + ")"
        return "\n".join([
            "import torch",
            "import torch.nn.functional as F",
            "from torch import nn",
            "",
            f"SEED = {self.seed}",
            f"DTYPE = torch.{self.dtype}",
            f"INPUT_SHAPE = {self.input_shape!r}",
            "",
            "",
            inspect.getsource(wild_bn_stats),
            "",
            inspect.getsource(randomize),
            "",
            "class FuzzNet(nn.Module):",
            "    def __init__(self) -> None:",
            "        super().__init__()",
            *init,
            "",
            "    def forward(self, v0):",
            *[f"        {line}" for line in body],
            f"        return {ret}",
            "",
            "",
            "def build() -> nn.Module:",
            "    model = FuzzNet()",
            "    randomize(model, SEED)",
            "    return model.to(DTYPE).eval()",
            "",
        ])


def _slice(ops: list[Op], outputs: list[str]) -> list[Op]:
    """The ops needed to compute ``outputs``, in order."""
    need = set(outputs)
    keep = []
    for op in reversed(ops):
        if op.out in need:
            keep.append(op)
            need.update(op.inputs)
    return keep[::-1]


class _Gen:
    """Grows a random model op by op, checking every op on a real tensor."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.seed = seed
        self.modules: dict[str, str] = {}
        self.objs: dict[str, nn.Module] = {}
        self.ops: list[Op] = []
        self.env: dict[str, torch.Tensor] = {}
        self.kinds: list[str] = []
        self.count = 0

    # -- helpers ---------------------------------------------------------------------
    def fresh(self, prefix: str) -> str:
        self.count += 1
        return f"{prefix}{self.count}"

    def pick(self, pred=lambda t: True) -> str | None:
        """A value name, biased towards recent ones, whose tensor satisfies ``pred``."""
        names = [n for n, t in self.env.items() if pred(t)]
        if not names:
            return None
        if self.rng.random() < 0.6:
            return names[-1]
        return self.rng.choice(names)

    def try_op(self, kind: str, out: str, lines: list[str], inputs: list[str], new: dict[str, str],
               shared: list[str] = ()) -> bool:
        """Evaluate ``lines``; keep the op when they run and the result stays small."""
        objs = {k: eval(v, {"nn": nn, "torch": torch}) for k, v in new.items()}
        ns = {"torch": torch, "F": torch.nn.functional, "self": types.SimpleNamespace(**self.objs, **objs)}
        ns["self"].training = False
        for m in objs.values():
            m.double().eval()
        local = {k: v.clone() for k, v in self.env.items()}
        try:
            with torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                for line in lines:
                    exec(line, ns, local)
        except Exception:  # noqa: BLE001 - an invalid random configuration: try another op
            return False
        y = local[out]
        if not isinstance(y, torch.Tensor) or y.numel() == 0 or not _small(y):
            return False
        self.modules.update(new)
        self.objs.update(objs)
        self.env[out] = y
        self.ops.append(Op(out, lines, inputs, list(new) + list(shared)))
        self.kinds.append(kind)
        return True

    # -- ops -------------------------------------------------------------------------
    def conv(self) -> bool:
        v = self.pick(lambda t: t.dim() >= 3)
        if v is None:
            return False
        t, r = self.env[v], self.env[v].dim() - 2
        cin = t.shape[1]
        groups = self.rng.choice([g for g in range(1, cin + 1) if cin % g == 0])
        cout = groups * self.rng.randint(1, max(1, _MAX_CH // groups))
        k = self.rng.randint(1, 3 if r < 3 else 2)
        stride, dilation = self.rng.choice([1, 1, 2]), self.rng.choice([1, 1, 2])
        mode = self.rng.choice(["zeros"] * 5 + ["reflect", "replicate", "circular"])
        pad: object = self.rng.randint(0, k)
        if stride == 1 and self.rng.random() < 0.2:
            pad = self.rng.choice(["'same'", "'valid'"])
        bias = self.rng.random() < 0.8
        m, out = self.fresh("m"), self.fresh("v")
        ctor = (f"nn.Conv{r}d({cin}, {cout}, {k}, stride={stride}, padding={pad}, dilation={dilation}, "
                f"groups={groups}, bias={bias}, padding_mode='{mode}')")
        return self.try_op("conv", out, [f"{out} = self.{m}({v})"], [v], {m: ctor})

    def conv_t(self) -> bool:
        v = self.pick(lambda t: t.dim() >= 3)
        if v is None:
            return False
        t, r = self.env[v], self.env[v].dim() - 2
        cin = t.shape[1]
        groups = self.rng.choice([g for g in range(1, cin + 1) if cin % g == 0])
        cout = groups * self.rng.randint(1, max(1, _MAX_CH // groups))
        k = self.rng.randint(1, 3 if r < 3 else 2)
        stride, dilation = self.rng.choice([1, 2]), self.rng.choice([1, 1, 2])
        pad = self.rng.randint(0, max(0, (k - 1) * dilation))
        out_pad = self.rng.randint(0, max(stride, dilation) - 1)
        bias = self.rng.random() < 0.8
        m, out = self.fresh("m"), self.fresh("v")
        ctor = (f"nn.ConvTranspose{r}d({cin}, {cout}, {k}, stride={stride}, padding={pad}, "
                f"output_padding={out_pad}, groups={groups}, bias={bias}, dilation={dilation})")
        return self.try_op("conv_t", out, [f"{out} = self.{m}({v})"], [v], {m: ctor})

    def linear(self) -> bool:
        v = self.pick(lambda t: t.dim() in (2, 3))
        if v is None:
            return False
        t = self.env[v]
        m, out = self.fresh("m"), self.fresh("v")
        bias = self.rng.random() < 0.8
        if t.dim() == 2:
            ctor = f"nn.Linear({t.shape[1]}, {self.rng.randint(2, 16)}, bias={bias})"
            return self.try_op("linear", out, [f"{out} = self.{m}({v})"], [v], {m: ctor})
        # channels-first (N, C, L): a Linear over C through transposes, maybe with BN1d on the way back
        fout = self.rng.randint(2, _MAX_CH)
        ctor = {m: f"nn.Linear({t.shape[1]}, {fout}, bias={bias})"}
        h = self.fresh("h")
        lines = [f"{h} = self.{m}({v}.transpose(1, 2))"]
        choice = self.rng.random()
        if choice < 0.5:
            bn = self.fresh("m")
            ctor[bn] = self._bn_ctor(1, fout)
            lines.append(f"{out} = self.{bn}({h}.transpose(1, 2))")
            kind = "linear3d+bn"
        elif choice < 0.7 and t.shape[2] <= _MAX_CH:
            bn = self.fresh("m")  # BN over the sequence axis: must not merge into the Linear
            ctor[bn] = self._bn_ctor(1, t.shape[2])
            lines.append(f"{out} = self.{bn}({h}).transpose(1, 2)")
            kind = "linear3d+bn-wrong-axis"
        else:
            lines.append(f"{out} = {h}.transpose(1, 2)")
            kind = "linear3d"
        return self.try_op(kind, out, lines, [v], ctor)

    def _bn_ctor(self, r: int, c: int) -> str:
        eps = self.rng.choice([1e-5, 1e-3])
        affine = self.rng.random() > 0.15
        stats = self.rng.random() > 0.03
        return f"nn.BatchNorm{max(r, 1)}d({c}, eps={eps}, affine={affine}, track_running_stats={stats})"

    def bn(self) -> bool:
        v = self.pick(lambda t: t.dim() >= 2)
        if v is None:
            return False
        t = self.env[v]
        m, out = self.fresh("m"), self.fresh("v")
        return self.try_op("bn", out, [f"{out} = self.{m}({v})"], [v], {m: self._bn_ctor(t.dim() - 2, t.shape[1])})

    def act(self) -> bool:
        v = self.pick()
        if v is None:
            return False
        out = self.fresh("v")
        if self.rng.random() < 0.5:
            m = self.fresh("m")
            ctor = self.rng.choice(["nn.ReLU()", "nn.ReLU(inplace=True)", "nn.ReLU6()", "nn.SiLU()", "nn.GELU()",
                                    f"nn.LeakyReLU({self.rng.choice([0.01, 0.2, -0.5])})", "nn.Sigmoid()"])
            return self.try_op("act", out, [f"{out} = self.{m}({v})"], [v], {m: ctor})
        expr = self.rng.choice(["F.relu({v})", "torch.relu({v})", "{v}.relu()", "F.relu6({v})", "F.silu({v})",
                                "F.gelu({v})", "F.leaky_relu({v}, 0.1)", "torch.sigmoid({v})", "F.hardswish({v})"])
        return self.try_op("act-fn", out, [f"{out} = " + expr.format(v=v)], [v], {})

    def add(self) -> bool:
        a = self.pick()
        if a is None:
            return False
        ta = self.env[a]
        same = [n for n, t in self.env.items() if t.shape == ta.shape and n != a]
        gate_like = [n for n, t in self.env.items() if t.dim() == ta.dim() and t.dim() > 2
                     and t.shape[1] == ta.shape[1] and all(d == 1 for d in t.shape[2:])]
        out = self.fresh("v")
        if same and self.rng.random() < 0.8:
            b = self.rng.choice(same)
            if self.rng.random() < 0.2:  # in place: later readers of ``a`` see the sum
                lines = self.rng.choice([[f"{out} = {a}", f"{out} += {b}"], [f"{out} = {a}.add_({b})"]])
                return self.try_op("add-inplace", out, lines, [a, b], {})
            expr = self.rng.choice(["{a} + {b}", "torch.add({a}, {b})", "{a}.add({b})", "{a} - {b}",
                                    "torch.add({a}, {b}, alpha=2)"])
            return self.try_op("add", out, [f"{out} = " + expr.format(a=a, b=b)], [a, b], {})
        if gate_like and self.rng.random() < 0.5:
            b = self.rng.choice(gate_like)
            return self.try_op("add-broadcast", out, [f"{out} = {a} + {b}"], [a, b], {})
        c = self.rng.choice(["0.5", "-1.25", "2.0"])
        return self.try_op("add-const", out, [f"{out} = {a} + {c}"], [a], {})

    def cat(self) -> bool:
        a = self.pick(lambda t: t.dim() >= 2)
        if a is None:
            return False
        ta = self.env[a]
        ok = [n for n, t in self.env.items() if t.dim() == ta.dim() and t.shape[2:] == ta.shape[2:]
              and t.shape[1] + ta.shape[1] <= 2 * _MAX_CH]
        if not ok:
            return False
        b = self.rng.choice(ok)
        out = self.fresh("v")
        expr = self.rng.choice(["torch.cat([{a}, {b}], 1)", "torch.cat(({a}, {b}), dim=1)", "torch.cat([{a}, {b}], -1)"])
        return self.try_op("cat", out, [f"{out} = " + expr.format(a=a, b=b)], [a, b], {})

    def gate(self) -> bool:
        v = self.pick(lambda t: t.dim() >= 3)
        if v is None:
            return False
        t, r = self.env[v], self.env[v].dim() - 2
        c = t.shape[1]
        out, g = self.fresh("v"), self.fresh("g")
        if self.rng.random() < 0.7:  # squeeze-excitation
            m = self.fresh("m")
            act = self.rng.choice(["torch.sigmoid", "F.hardsigmoid"])
            lines = [f"{g} = {act}(self.{m}(F.adaptive_avg_pool{r}d({v}, 1)))", f"{out} = {v} * {g}"]
            return self.try_op("gate-se", out, lines, [v], {m: f"nn.Conv{r}d({c}, {c}, 1)"})
        w = self.pick(lambda x: x.shape == t.shape)
        return self.try_op("mul", out, [f"{out} = {v} * torch.sigmoid({w})"], [v, w], {})

    def pool(self) -> bool:
        v = self.pick(lambda t: t.dim() >= 3)
        if v is None:
            return False
        r = self.env[v].dim() - 2
        out = self.fresh("v")
        k = self.rng.randint(1, 3)
        s = self.rng.randint(1, 2)
        p = self.rng.randint(0, k // 2)
        options = [
            ("mod", f"nn.AvgPool{r}d({k}, stride={s}, padding={p}, ceil_mode={self.rng.random() < 0.3}, "
                    f"count_include_pad={self.rng.random() < 0.5})"),
            ("mod", f"nn.MaxPool{r}d({k}, stride={s}, padding={p})"),
            ("mod", f"nn.AdaptiveAvgPool{r}d({self.rng.randint(1, 3)})"),
            ("fn", f"F.avg_pool{r}d({{v}}, {k}, {s})"),
            ("fn", f"F.max_pool{r}d({{v}}, {k}, {s})"),
            ("fn", f"F.adaptive_avg_pool{r}d({{v}}, 1)"),
            ("fn", "{v}.mean(" + repr(tuple(range(2, 2 + r))) + ", keepdim=True)"),
        ]
        kind, text = self.rng.choice(options)
        if kind == "mod":
            m = self.fresh("m")
            return self.try_op("pool", out, [f"{out} = self.{m}({v})"], [v], {m: text})
        return self.try_op("pool-fn", out, [f"{out} = " + text.format(v=v)], [v], {})

    def flatten(self) -> bool:
        v = self.pick(lambda t: t.dim() >= 3)
        if v is None:
            return False
        r = self.env[v].dim() - 2
        out = self.fresh("v")
        expr = self.rng.choice([
            f"torch.flatten(F.adaptive_avg_pool{r}d({{v}}, 1), 1)",
            "{v}.flatten(1)",
            "{v}.mean(" + repr(tuple(range(2, 2 + r))) + ")",
            "torch.flatten({v}, 1)",
        ])
        return self.try_op("flatten", out, [f"{out} = " + expr.format(v=v)], [v], {})

    def functional_layer(self) -> bool:
        """``F.conv*d`` / ``F.linear`` on a module's parameters (left functional, listed by the lint)."""
        v = self.pick(lambda t: t.dim() in (2, 3, 4))
        if v is None:
            return False
        t = self.env[v]
        m, out = self.fresh("m"), self.fresh("v")
        if t.dim() == 2:
            ctor, fn = f"nn.Linear({t.shape[1]}, {self.rng.randint(2, 12)})", "F.linear"
        else:
            r = t.dim() - 2
            ctor, fn = f"nn.Conv{r}d({t.shape[1]}, {self.rng.randint(2, _MAX_CH)}, 1)", f"F.conv{r}d"
        return self.try_op("functional-layer", out, [f"{out} = {fn}({v}, self.{m}.weight, self.{m}.bias)"], [v], {m: ctor})

    def dropout(self) -> bool:
        v = self.pick()
        if v is None:
            return False
        out = self.fresh("v")
        if self.rng.random() < 0.5:
            m = self.fresh("m")
            ctor = self.rng.choice(["nn.Dropout(0.3)", "nn.Identity()"])
            return self.try_op("dropout", out, [f"{out} = self.{m}({v})"], [v], {m: ctor})
        return self.try_op("dropout-fn", out, [f"{out} = F.dropout({v}, 0.3, self.training)"], [v], {})

    def reuse(self) -> bool:
        """Call an existing module again at a new site (weight sharing)."""
        names = list(self.objs)
        self.rng.shuffle(names)
        for m in names:
            v = self.pick()
            if v is None:
                return False
            out = self.fresh("v")
            if self.try_op("shared", out, [f"{out} = self.{m}({v})"], [v], {}, shared=[m]):
                return True
        return False

    OPS = (("conv", 6), ("conv_t", 2), ("linear", 2), ("bn", 6), ("act", 4), ("add", 3), ("cat", 2),
           ("gate", 1), ("pool", 2), ("flatten", 1), ("dropout", 1), ("reuse", 2), ("functional_layer", 1))

    def generate(self) -> Case:
        r = self.rng.choice([1, 2, 2, 2, 3])
        lo, hi = _SPATIAL[r]
        shape = (self.rng.randint(1, 2), self.rng.randint(1, 4), *[self.rng.randint(lo, hi) for _ in range(r)])
        dtype = self.rng.choices(list(_DTYPE_WEIGHTS), weights=list(_DTYPE_WEIGHTS.values()))[0]
        self.env["v0"] = torch.randn(shape, dtype=torch.float64)
        target = self.rng.randint(2, 9)
        names, weights = zip(*self.OPS)
        tries = 0
        while len(self.ops) < target and tries < 200:
            tries += 1
            getattr(self, self.rng.choices(names, weights=weights)[0])()
        if not self.ops:
            self.conv() or self.act()
        used = {i for op in self.ops for i in op.inputs}
        outputs = [op.out for op in self.ops if op.out not in used]
        order = list(self.modules)
        self.rng.shuffle(order)  # registration order differs from execution order
        modules = {k: self.modules[k] for k in order}
        return Case(self.seed, dtype, shape, modules, self.ops, outputs, self.kinds)


def _small(t: torch.Tensor) -> bool:
    if t.dim() == 2:
        return t.shape[1] <= _MAX_FLAT
    if t.dim() < 2 or t.dim() > 5:
        return False
    r = t.dim() - 2
    return t.shape[1] <= 2 * _MAX_CH and all(d <= _MAX_SPATIAL[r] for d in t.shape[2:])


def generate(seed: int) -> Case:
    """The random model of ``seed`` (deterministic)."""
    return _Gen(seed).generate()


def build(case: Case) -> nn.Module:
    """Execute the case's source and return its model (eval mode, the case's dtype)."""
    module = types.ModuleType(f"canonc_fuzz_{case.seed}")
    exec(compile(case.source(), f"<fuzz case {case.seed}>", "exec"), module.__dict__)
    return module.build()


def _run(model: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    with torch.no_grad():
        y = model(x.clone())  # the model may write into its input in place
    return list(y) if isinstance(y, (tuple, list)) else [y]


def independent_check(model: nn.Module, written: nn.Module, input_shape: tuple[int, ...], dtype: torch.dtype,
                      seed: int) -> None:
    """Check a written canonical model against the original; raise AssertionError if wrong.

    Float64 copies of both are compared on fresh inputs (batch 1, 3 and the case's own,
    where the original accepts them). The written
    weights are rounded to ``dtype``, so the tolerance grows with the original's own
    rounding error in ``dtype``: ``1e-8·(1+max|y|)`` for float64 models, else
    ``c·(1+max|y|) + 100·err_dtype``. Also checks dtype, eval mode, one call per module.
    """
    assert not any(m.training for m in written.modules()), "written model is not in eval mode"
    bad = [n for n, p in written.state_dict().items() if p.is_floating_point() and p.dtype != dtype]
    assert not bad, f"written tensors {bad[:3]} are not {dtype}"
    if isinstance(written, fx.GraphModule):
        targets = Counter(n.target for n in written.graph.nodes if n.op == "call_module")
        shared = [t for t, c in targets.items() if c > 1]
        assert not shared, f"modules called more than once: {shared}"
    ref, canon = copy.deepcopy(model).double(), copy.deepcopy(written).double()
    rel = {torch.float64: 1e-8, torch.float32: 1e-4}.get(dtype, 3e-2)
    gen = torch.Generator().manual_seed(seed + 7919)
    for batch in sorted({1, 3, input_shape[0]}):
        x = torch.randn((batch, *input_shape[1:]), generator=gen, dtype=torch.float64)
        try:
            want = _run(ref, x)
        except RuntimeError:  # the model itself takes only some batch sizes
            continue
        got, own = _run(canon, x), _run(model, x.to(dtype))
        lowp = _run(written, x.to(dtype))
        assert len(got) == len(want), f"{len(got)} outputs, expected {len(want)}"
        for i, (w, g, o, lp) in enumerate(zip(want, got, own, lowp)):
            assert g.shape == w.shape, f"output {i}: shape {tuple(g.shape)}, expected {tuple(w.shape)}"
            assert lp.dtype == dtype, f"output {i}: dtype {lp.dtype}, expected {dtype}"
            if not torch.isfinite(w).all():
                continue
            mag = w.abs().max().item()
            err_own = (o.double() - w).abs().max().item() if dtype != torch.float64 else 0.0
            tol = rel * (1.0 + mag) + 100.0 * err_own
            err = (g - w).abs().max().item()
            assert err <= tol, f"output {i} (batch {batch}): written model off by {err:.3g} > {tol:.3g} (max|y| {mag:.3g})"


def _state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@dataclass
class Outcome:
    """Classification of one case: ``verified``, ``refused`` or ``failure``, with the detail."""

    kind: str
    detail: str = ""


def run_case(case: Case) -> Outcome:
    """Canonize the case's model, write it, reload it and check it independently."""
    model = build(case)
    dtype = next((t.dtype for t in [*model.parameters(), *model.buffers()] if t.is_floating_point()), torch.float32)
    before, training = _state(model), model.training
    x = torch.randn(case.input_shape, generator=torch.Generator().manual_seed(case.seed), dtype=torch.float64)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result = canonize(model, x.to(dtype), name=f"fuzz-{case.seed}")
    except VerificationError as exc:  # the gate caught a wrong rewrite: a pass bug
        return Outcome("failure", f"gate: {exc}")
    except CanoncError as exc:
        return Outcome("refused", str(exc))
    except Exception as exc:  # noqa: BLE001 - every other exception is a bug
        return Outcome("failure", f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}")
    try:
        after = _state(model)
        assert model.training == training and after.keys() == before.keys() and all(
            torch.equal(after[k], before[k]) for k in before), "canonize mutated the user's model"
        with tempfile.TemporaryDirectory(prefix="canonc-fuzz-") as tmp:
            save_module(result.module, Path(tmp) / "canon.pt")
            written = torch.load(Path(tmp) / "canon.pt", weights_only=False)
        independent_check(model, written, case.input_shape, dtype, case.seed)
    except AssertionError as exc:
        return Outcome("failure", f"check: {exc}")
    except Exception as exc:  # noqa: BLE001
        return Outcome("failure", f"{type(exc).__name__} after canonize: {exc}\n{traceback.format_exc()}")
    return Outcome("verified")


def shrink(case: Case, outcome: Outcome) -> Case:
    """The smallest single-output slice of ``case`` that still fails (or ``case``)."""
    best = case
    best_size = len(_slice(case.ops, case.outputs))
    for op in case.ops:
        small = Case(case.seed, case.dtype, case.input_shape, case.modules, case.ops, [op.out], case.kinds)
        size = len(_slice(small.ops, small.outputs))
        if size >= best_size:
            continue
        if run_case(small).kind == "failure":
            best, best_size = small, size
    return best


_REPRO = '''

if __name__ == "__main__":
    # Reproduce: canonize, save, reload, and compare with the original in float64.
    import tempfile
    from pathlib import Path

    from canonc import canonize
    from canonc.codegen import save_module
    from canonc.fuzz import independent_check

    model = build()
    x = torch.randn(INPUT_SHAPE, generator=torch.Generator().manual_seed(SEED), dtype=torch.float64).to(DTYPE)
    result = canonize(model, x)
    with tempfile.TemporaryDirectory() as tmp:
        save_module(result.module, Path(tmp) / "canon.pt")
        written = torch.load(Path(tmp) / "canon.pt", weights_only=False)
    independent_check(model, written, INPUT_SHAPE, DTYPE, SEED)
    print("no failure")
'''


def repro_script(case: Case, outcome: Outcome) -> str:
    """A self-contained script that rebuilds ``case`` and reproduces ``outcome``."""
    first = outcome.detail.strip().splitlines()[0] if outcome.detail.strip() else outcome.kind
    return f'"""canonc fuzz failure, seed {case.seed}: {first}"""\n\n' + case.source() + _REPRO


def case_seed(seed: int, i: int) -> int:
    """Seed of the ``i``-th case of a run started with ``seed``."""
    return seed * 100_000 + i


@dataclass
class Summary:
    """Counts of a fuzz run, refusal reasons and the failing seeds."""

    counts: Counter = field(default_factory=Counter)
    reasons: Counter = field(default_factory=Counter)
    failures: list[tuple[int, str]] = field(default_factory=list)
    seconds: float = 0.0


def run(n: int, seed: int = 0, out: Path | None = None, progress: bool = True) -> Summary:
    """Generate and check ``n`` cases; save each shrunk failure as a script in ``out``."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    summary = Summary()
    start = time.perf_counter()
    bar = Progress(TextColumn("fuzz"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.description}"),
                   TimeRemainingColumn(), disable=not progress, transient=False)
    with bar:
        task = bar.add_task("", total=n)
        for i in range(n):
            case = generate(case_seed(seed, i))
            outcome = run_case(case)
            summary.counts[outcome.kind] += 1
            if outcome.kind == "refused":
                summary.reasons[_reason_key(outcome.detail)] += 1
            if outcome.kind == "failure":
                summary.failures.append((case.seed, outcome.detail.strip().splitlines()[0]))
                if out is not None:
                    out.mkdir(parents=True, exist_ok=True)
                    small = shrink(case, outcome)
                    (out / f"fail_{case.seed}.py").write_text(repro_script(small, run_case(small)))
            c = summary.counts
            bar.update(task, advance=1, description=f"verified {c['verified']}  refused {c['refused']}  "
                                                    f"failure {c['failure']}")
    summary.seconds = time.perf_counter() - start
    return summary


def _reason_key(detail: str) -> str:
    for key in ("no running statistics", "does not trace", "NaN or Inf", "writes in place into a view"):
        if key in detail:
            return key
    return detail[:80]


def main(argv: list[str] | None = None) -> int:
    """``python -m canonc.fuzz --n N --seed S [--out DIR]``; exit 1 when a case failed."""
    p = argparse.ArgumentParser(prog="python -m canonc.fuzz", description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=100, help="number of random models")
    p.add_argument("--seed", type=int, default=0, help="seed of the run (case i has seed S*100000+i)")
    p.add_argument("--out", type=Path, default=None, help="directory for the failure scripts")
    p.add_argument("--threads", type=int, default=1, help="torch threads (small models run best on one)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    summary = run(args.n, args.seed, args.out, progress=not args.no_progress)
    c = summary.counts
    print(f"fuzz: {args.n} cases (seed {args.seed}) in {summary.seconds:.1f}s ({args.n / summary.seconds:.1f}/s): "
          f"verified {c['verified']}, refused {c['refused']}, failure {c['failure']}")
    for reason, count in summary.reasons.most_common():
        print(f"  refused ×{count}: {reason}")
    for s, first in summary.failures:
        print(f"  FAILURE seed {s}: {first}" + (f"  → {args.out}/fail_{s}.py" if args.out else ""))
    return 1 if c["failure"] else 0


if __name__ == "__main__":
    sys.exit(main())
