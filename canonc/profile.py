"""Per-layer error: how far each matched intermediate tensor of the canonized graph is
from the original's, in float64 (the rewrite logic) and float32 (the written artifact).

Points come from :func:`canonc.match.match`, in the canonized graph's execution order; the
last point is the model output, so its errors equal the gate's output errors when run on
the gate's inputs. A point *diverges* when its float64 error exceeds the gate's tolerance
applied to that tensor, ``max(1e-9·(1 + max|y|), 1e-3·err32_ref)`` (``err32_ref``: the
original's own float32 error there); the first diverging point is where a broken rewrite
shows up first.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass

import torch
from torch import fx
from torch.utils._pytree import tree_flatten

from .match import match
from .verify import ABS_TOL, REL_TO_FP32


@dataclass
class Point:
    """Errors at one matched tensor (maxima over all inputs)."""

    node: str
    original: str
    layer: str
    kind: str
    shape: list[int]
    max_abs: float
    err_fp64: float
    err_fp32: float
    ref_fp32: float
    tolerance: float
    diverges: bool


class _Capture(fx.Interpreter):
    """Runs a graph and keeps copies of the outputs of the nodes named in ``keep`` (in-place ops follow)."""

    def __init__(self, gm: fx.GraphModule, keep: set[str]) -> None:
        super().__init__(gm)
        self.keep = keep
        self.values: dict[str, list[torch.Tensor]] = {}

    def run_node(self, n: fx.Node) -> object:
        out = super().run_node(n)
        if n.name in self.keep:
            leaves, _ = tree_flatten(out)
            self.values[n.name] = [t.detach().clone() for t in leaves if isinstance(t, torch.Tensor)]
        return out


def capture(gm: fx.GraphModule, inputs: tuple[torch.Tensor, ...], keep: set[str]) -> dict[str, list[torch.Tensor]]:
    """Outputs (flattened to tensors) of the nodes named ``keep`` when ``gm`` runs ``inputs``."""
    runner = _Capture(gm, keep)
    with torch.no_grad():
        runner.run(*inputs)
    return runner.values


def _max_abs(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    if len(a) != len(b) or any(x.shape != y.shape for x, y in zip(a, b)):
        return float("inf")
    worst = 0.0
    for x, y in zip(a, b):
        if x.numel():
            d = (x.double() - y.double()).abs().max().item()
            worst = max(worst, d if d == d else float("inf"))
    return worst


def _describe(gm: fx.GraphModule, node: fx.Node) -> tuple[str, str]:
    if node.op == "call_module":
        return str(node.target), type(gm.get_submodule(node.target)).__name__
    if node.op in ("call_function", "call_method"):
        return "", getattr(node.target, "__name__", str(node.target))
    return "", node.op


def error_profile(
    orig64: fx.GraphModule,
    canon64: fx.GraphModule,
    inputs: list[tuple[torch.Tensor, ...]],
    dtype: torch.dtype = torch.float32,
    pairs: dict[fx.Node, fx.Node] | None = None,
) -> list[Point]:
    """Errors at every matched point of ``canon64`` against ``orig64``.

    Parameters
    ----------
    orig64, canon64 : fx.GraphModule
        The traced original and the canonized graph in float64, shapes propagated.
    inputs : list of tuple of Tensor
        Float64 inputs (the gate's); errors are maxima over them.
    dtype : torch.dtype
        Dtype of the written artifact (float32 errors are of ``canon64`` cast to it).
    pairs : dict, optional
        The matching (:func:`canonc.match.match`), computed when not given.

    Returns
    -------
    list of Point
        One per matched tensor, in the canonized graph's execution order (output last).
    """
    pairs = match(orig64, canon64) if pairs is None else pairs
    order = [c for c in canon64.graph.nodes if c in pairs and c.op not in ("placeholder", "get_attr")]
    keep_c, keep_o = {c.name for c in order}, {pairs[c].name for c in order}
    orig32 = copy.deepcopy(orig64).to(dtype)
    canon32 = copy.deepcopy(canon64).to(dtype)
    stats = {c.name: [0.0, 0.0, 0.0, 0.0] for c in order}  # max|y|, err64, err32, ref32
    for x in inputs:
        x32 = tuple(t.to(dtype) if t.is_floating_point() else t for t in x)
        o64 = capture(orig64, x, keep_o)
        c64 = capture(canon64, x, keep_c)
        c32 = capture(canon32, x32, keep_c)
        o32 = capture(orig32, x32, keep_o)
        for c in order:
            ref = o64[pairs[c].name]
            row = stats[c.name]
            mag = max((t.double().abs().max().item() for t in ref if t.numel()), default=0.0)
            errs = (_max_abs(c64[c.name], ref), _max_abs(c32[c.name], ref), _max_abs(o32[pairs[c].name], ref))
            for i, v in enumerate((mag, *errs)):
                row[i] = max(row[i], v)
        del o64, c64, c32, o32
    points = []
    for c in order:
        mag, err64, err32, ref32 = stats[c.name]
        tol = max(ABS_TOL * (1.0 + mag), REL_TO_FP32 * (ref32 if ref32 != float("inf") else 0.0))
        layer, kind = _describe(canon64, c)
        shape = list(c.meta["val"].shape) if isinstance(c.meta.get("val"), torch.Tensor) else []
        points.append(Point(c.name, pairs[c].name, layer, kind, shape, mag, err64, err32, ref32, tol, err64 > tol))
    return points


def first_divergence(points: list[Point]) -> Point | None:
    """The first point whose float64 error exceeds its tolerance, if any."""
    return next((p for p in points if p.diverges), None)


def as_rows(points: list[Point]) -> list[dict]:
    """The points as JSON-ready dicts."""
    return [asdict(p) for p in points]
