"""Incremental forward passes for perturbation curves: recompute only what a step changed.

Step ``k`` of a region-perturbation curve differs from step ``k − 1`` in one patch. In a
CNN that patch changes a small window of each convolution's output, growing by the kernel
and shrinking by the stride from layer to layer (Nakandala et al., "Incremental and
approximate inference for faster occlusion-based deep CNN explanations", SIGMOD 2019).
:class:`IncrementalForward` keeps every node's output of a canonized model's ``torch.fx``
graph for a batch of samples and, per step, propagates each sample's changed box
(rows, columns) through the graph:

- convolutions, max and average pooling recompute the output window that the changed input
  box reaches, from a crop of the cached input (the layer's padding added where the crop
  leaves the image), and write it into their cached output;
- pointwise modules (activations, ``ThreshReLU``, dropout) and multi-input pointwise modules
  (residual ``Sum``, channel ``Concat``, same-shape ``Mul``) recompute the union of their
  inputs' boxes;
- any other node (global pooling, flatten, linear layers, gates, functions) is recomputed in
  full once one of its inputs changed, and everything after it too.

A window that would cover at least half of a layer's output is computed as the full layer,
and :func:`pays_off` uses the engine only where a step recomputes less than half of a full
pass's multiply-adds (VGG-16 at 224 px, 14-px patches: 15 %; the narrow DenseNet-121 at
64 px, 4-px patches: over 80 %, so it keeps full passes). Caches are channels-last, so that
windows are contiguous. The result equals the full forward pass up to float rounding (cropped,
channels-last convolutions sum in another order); :func:`incremental_curve` checks each
batch's last step against a full forward pass and falls back to full passes, with a warning,
where they disagree by more than :data:`CHECK_RTOL`.
"""

from __future__ import annotations

import functools
import math
import operator
import warnings
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import fx, nn

from ... import nn as cnn
from ...trace import run_node

FULL_WINDOW = 0.5
"""A window covering at least this share of a layer's output is computed as the full layer."""

POINTWISE = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.GELU, nn.SiLU, nn.Mish, nn.Sigmoid, nn.Tanh, nn.Hardswish,
             nn.Hardsigmoid, nn.Dropout, nn.Identity)
"""Modules that act on each value alone (``ThreshReLU`` is a ``ReLU``)."""

MIN_WORK_PER_INPUT = 200
"""Multiply-adds per input value a full pass must cost for incremental passes to pay off: below it
(a tiny model) building and comparing each step's input costs more than the pass itself."""

CHECK_RTOL = 1e-4
"""Tolerance of the last-step check, relative to the largest logit of the batch."""


class _Window:
    """Geometry of a sliding-window layer along rows and columns, and its computation on a crop."""

    def __init__(self, kernel: tuple[int, int], stride: tuple[int, int], padding: tuple[int, int],
                 dilation: tuple[int, int], fill: float, compute: Callable[[torch.Tensor], torch.Tensor]) -> None:
        self.kernel, self.stride, self.padding, self.dilation = kernel, stride, padding, dilation
        self.fill, self.compute = fill, compute

    def reach(self, box: torch.Tensor, out_size: tuple[int, int]) -> torch.Tensor:
        """Output boxes ``(N, 4)`` (rows ``[r0, r1)``, columns ``[c0, c1)``) that input boxes change."""
        out = torch.empty_like(box)
        for axis in range(2):
            lo, hi = box[:, 2 * axis], box[:, 2 * axis + 1]
            k, s, p, d = self.kernel[axis], self.stride[axis], self.padding[axis], self.dilation[axis]
            first = -torch.div(-(lo + p - (k - 1) * d), s, rounding_mode="floor")  # ceil division
            out[:, 2 * axis] = first.clamp(0, out_size[axis])
            out[:, 2 * axis + 1] = (torch.div(hi - 1 + p, s, rounding_mode="floor") + 1).clamp(0, out_size[axis])
        return torch.where((box[:, :1] < box[:, 1:2]) & (box[:, 2:3] < box[:, 3:]), out, torch.zeros_like(out))

    def source(self, origin: torch.Tensor, size: int, axis: int) -> tuple[torch.Tensor, int]:
        """Input starts and length that output positions ``origin .. origin + size`` read."""
        k, s, p, d = self.kernel[axis], self.stride[axis], self.padding[axis], self.dilation[axis]
        return origin * s - p, (size - 1) * s + (k - 1) * d + 1


def _pair(value: int | tuple[int, ...]) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else tuple(value)


def _window(module: nn.Module) -> _Window | None:
    """The window geometry of a conv or pooling module, or ``None`` if it has none usable here."""
    if isinstance(module, nn.Conv2d) and module.padding_mode == "zeros" and not isinstance(module.padding, str):
        return _Window(_pair(module.kernel_size), _pair(module.stride), _pair(module.padding), _pair(module.dilation),
                       0.0, lambda x: F.conv2d(x, module.weight, module.bias, module.stride, 0, module.dilation,
                                               module.groups))
    if isinstance(module, nn.MaxPool2d) and not module.ceil_mode and not module.return_indices:
        stride = module.stride or module.kernel_size
        return _Window(_pair(module.kernel_size), _pair(stride), _pair(module.padding), _pair(module.dilation),
                       -math.inf, lambda x: F.max_pool2d(x, module.kernel_size, stride, 0, module.dilation))
    if (isinstance(module, nn.AvgPool2d) and not module.ceil_mode and module.divisor_override is None
            and (module.count_include_pad or _pair(module.padding) == (0, 0))):
        stride = module.stride or module.kernel_size
        return _Window(_pair(module.kernel_size), _pair(stride), _pair(module.padding), (1, 1), 0.0,
                       lambda x: F.avg_pool2d(x, module.kernel_size, stride, 0))
    return None


def _gather(t: torch.Tensor, samples: torch.Tensor, tops: torch.Tensor, lefts: torch.Tensor, height: int,
            width: int, fill: float) -> torch.Tensor:
    """Windows ``(A, C, height, width)`` of ``t`` at per-sample corners; parts outside the image get ``fill``."""
    h, w = t.shape[-2:]
    rows = tops[:, None] + torch.arange(height, device=t.device)
    cols = lefts[:, None] + torch.arange(width, device=t.device)
    picked = t.permute(0, 2, 3, 1)[samples[:, None, None], rows.clamp(0, h - 1)[:, :, None],
                                   cols.clamp(0, w - 1)[:, None, :]].permute(0, 3, 1, 2)
    inside = ((rows >= 0) & (rows < h))[:, :, None] & ((cols >= 0) & (cols < w))[:, None, :]
    if bool(inside.all()):
        return picked
    return torch.where(inside[:, None], picked, torch.tensor(fill, dtype=t.dtype, device=t.device))


def _boxes_of_change(new: torch.Tensor, old: torch.Tensor) -> torch.Tensor:
    """Per sample the bounding box ``(r0, r1, c0, c1)`` of the values that differ (``(0, 0, 0, 0)``: none)."""
    diff = (new != old).flatten(1, -3).any(1)  # (N, H, W)
    boxes = []
    for mask in (diff.any(2), diff.any(1)):
        size = mask.shape[1]
        first = mask.int().argmax(1)
        last = size - mask.flip(1).int().argmax(1)
        boxes += [first, last]
    out = torch.stack(boxes, 1).cpu()
    return torch.where(diff.flatten(1).any(1).cpu()[:, None], out, torch.zeros_like(out))


class IncrementalForward:
    """A canonized model's forward pass on a batch, updated step by step where the input changed.

    Parameters
    ----------
    model : fx.GraphModule
        A canonized model (``canonc.canonize(...).module``) in eval mode.
    inputs : Tensor
        ``(N, C, H, W)``, the first input of the sequence.
    """

    def __init__(self, model: fx.GraphModule, inputs: torch.Tensor) -> None:
        self.model = model
        self.modules = dict(model.named_modules())
        self.nodes = [n for n in model.graph.nodes if n.op != "output"]
        (self.result,) = [n.args[0] for n in model.graph.nodes if n.op == "output"]
        self.values: dict[fx.Node, object] = {}
        self.boxes: dict[fx.Node, torch.Tensor | bool] = {}
        self.work: dict[fx.Node, float] = {}
        with torch.no_grad():
            for node in self.nodes:
                self.values[node] = inputs if node.op == "placeholder" else self._run(node)
        self.cost = {node: _cost(self.modules.get(node.target) if node.op == "call_module" else None,
                                 self.values[node]) for node in self.nodes if node.op != "placeholder"}

    def work_share(self) -> float:
        """Share of a full forward pass's work (multiply-adds, plus one per other output value)
        that the last :meth:`step` recomputed."""
        return sum(self.cost[n] * self.work.get(n, 0.0) for n in self.cost) / max(sum(self.cost.values()), 1)

    def output(self) -> torch.Tensor:
        """The model's output for the current input."""
        return self.values[self.result]

    def step(self, inputs: torch.Tensor) -> torch.Tensor:
        """The output for ``inputs``, recomputing only what changed since the previous input."""
        self.work = {}
        with torch.no_grad():
            for node in self.nodes:
                if node.op == "placeholder":
                    self.boxes[node] = _boxes_of_change(inputs, self.values[node])
                    self.values[node] = inputs
                else:
                    self.boxes[node] = self._update(node)
        return self.output()

    def _run(self, node: fx.Node) -> object:
        """The node's value from the cached values of its inputs, in storage of its own."""
        if node.op == "call_function" and node.target is cnn.stack_summands:
            return list(fx.node.map_arg(node.args[0], lambda n: self.values[n]))  # the Sum adds them itself
        module = self.modules.get(node.target) if node.op == "call_module" else None
        first = self.values[node.args[0]] if node.args and isinstance(node.args[0], fx.Node) else None
        if isinstance(module, cnn.ReLU) or (isinstance(module, cnn.Sum) and isinstance(first, list)):
            value = _pointwise(module, _tensors(first))  # no in-place work on the cached inputs
        else:
            value = run_node(self.model, node, self.values)
        own = [v for n in node.all_input_nodes for v in _tensors(self.values[n])]
        if isinstance(value, torch.Tensor) and any(value.data_ptr() == v.data_ptr() for v in own):
            value = value.clone()  # an output aliasing an input (identity, dropout) gets its own storage
        if isinstance(value, torch.Tensor) and value.dim() == 4:  # windows are then contiguous in memory
            value = value.contiguous(memory_format=torch.channels_last)
        return value

    def _changed(self, node: fx.Node) -> bool:
        box = self.boxes.get(node, False)
        return bool((box[:, 0] < box[:, 1]).any()) if isinstance(box, torch.Tensor) else bool(box)

    def _update(self, node: fx.Node) -> torch.Tensor | bool:
        """Bring the node's cached value up to date; return what changed (boxes, or a flag)."""
        sources = [n for n in node.all_input_nodes if self._changed(n)]
        if not sources:
            return False
        boxed = all(isinstance(self.boxes[n], torch.Tensor) for n in sources)
        if node.op == "call_function" and node.target is cnn.stack_summands:
            self.values[node] = self._run(node)
            return _union([self.boxes[n] for n in sources]) if boxed else True
        value = self.values[node]
        module = self.modules.get(node.target) if node.op == "call_module" else None
        if boxed and module is not None and isinstance(value, torch.Tensor) and value.dim() == 4:
            window = _window(module)
            if window is not None and len(node.all_input_nodes) == 1:
                boxes = window.reach(self.boxes[sources[0]], tuple(value.shape[2:]))
                self._write(node, boxes, window.compute, window)
                return boxes
            if isinstance(module, (*POINTWISE, cnn.Sum, cnn.Concat, cnn.Mul)) and self._same_grid(node):
                boxes = _union([self.boxes[n] for n in sources])
                self._write(node, boxes, lambda *parts: _pointwise(module, list(parts)), None)
                return boxes
        self.values[node] = new = self._run(node)
        self.work[node] = 1.0
        if isinstance(new, torch.Tensor) and new.dim() == 4:
            n, _, h, w = new.shape
            return torch.tensor([[0, h, 0, w]]).expand(n, 4).clone()
        return bool(_tensors(new))

    def _same_grid(self, node: fx.Node) -> bool:
        """All tensor inputs (summands included) have the node's batch and spatial size."""
        shape = self.values[node].shape
        inputs = [t for n in node.all_input_nodes for t in _tensors(self.values[n])]
        return all(t.dim() == 4 and t.shape[0] == shape[0] and t.shape[2:] == shape[2:] for t in inputs)

    def _write(self, node: fx.Node, boxes: torch.Tensor, compute: Callable[..., torch.Tensor],
               window: _Window | None) -> None:
        """Recompute one common window size over the changed samples (or the whole layer) into the cache.

        ``window``: the layer's geometry (its inputs are cropped with the layer's reach and
        padding); ``None``: a pointwise layer (its inputs are cropped at the window itself).
        """
        out = self.values[node]
        height, width = out.shape[2:]
        active = (boxes[:, 0] < boxes[:, 1]).nonzero()[:, 0].tolist()
        if not active:
            return
        size = (int((boxes[active, 1] - boxes[active, 0]).max()), int((boxes[active, 3] - boxes[active, 2]).max()))
        if size[0] * size[1] >= FULL_WINDOW * height * width:
            self.values[node] = self._run(node)
            self.work[node] = 1.0
            return
        parts = [t for n in node.all_input_nodes for t in _tensors(self.values[n])]
        samples = torch.tensor(active)
        tops = torch.minimum(boxes[active, 0], torch.tensor(height - size[0]))
        lefts = torch.minimum(boxes[active, 2], torch.tensor(width - size[1]))
        samples, tops, lefts = (v.to(out.device) for v in (samples, tops, lefts))
        if window is None:
            crops = [_gather(t, samples, tops, lefts, size[0], size[1], 0.0) for t in parts]
        else:
            (r, h), (c, w) = window.source(tops, size[0], 0), window.source(lefts, size[1], 1)
            crops = [_gather(t, samples, r, c, h, w, window.fill) for t in parts]
        result = compute(*crops)
        rows = tops[:, None] + torch.arange(size[0], device=out.device)
        cols = lefts[:, None] + torch.arange(size[1], device=out.device)
        out.permute(0, 2, 3, 1)[samples[:, None, None], rows[:, :, None], cols[:, None, :]] = result.permute(0, 2, 3, 1)
        self.work[node] = len(active) * size[0] * size[1] / (len(out) * height * width)


def _cost(module: nn.Module | None, value: object) -> float:
    """Work of computing a node in full: multiply-adds of a conv or linear layer, else its output size."""
    size = sum(t.numel() for t in _tensors(value))
    if isinstance(module, nn.Conv2d):
        return size * module.in_channels // module.groups * math.prod(_pair(module.kernel_size))
    if isinstance(module, nn.Linear):
        return size * module.in_features
    return float(size)


def _tensors(value: object) -> list[torch.Tensor]:
    """The tensors of a node's value (a tensor, or a list such as a Sum's summands)."""
    if isinstance(value, torch.Tensor):
        return [value]
    return [v for v in value if isinstance(v, torch.Tensor)] if isinstance(value, list | tuple) else []


def _union(boxes: list[torch.Tensor]) -> torch.Tensor:
    """Per sample the smallest box holding all the given boxes (empty boxes ignored)."""
    total = boxes[0]
    for other in boxes[1:]:
        merged = torch.stack([torch.minimum(total[:, 0], other[:, 0]), torch.maximum(total[:, 1], other[:, 1]),
                              torch.minimum(total[:, 2], other[:, 2]), torch.maximum(total[:, 3], other[:, 3])], 1)
        total_empty, other_empty = total[:, :1] >= total[:, 1:2], other[:, :1] >= other[:, 1:2]
        total = torch.where(total_empty, other, torch.where(other_empty, total, merged))
    return total


def _pointwise(module: nn.Module, tensors: list[torch.Tensor]) -> torch.Tensor:
    """A pointwise module on (crops of) its inputs, without in-place work."""
    if isinstance(module, cnn.Sum):
        return functools.reduce(operator.add, tensors)  # in order, as canonc.nn.Sum adds
    if isinstance(module, cnn.Concat):
        return torch.cat(tensors, module.dim)
    if isinstance(module, cnn.Mul):
        return tensors[0] * tensors[1]
    return torch.relu(tensors[0]) if isinstance(module, cnn.ReLU) else module(tensors[0])


def pays_off(model: nn.Module, first: torch.Tensor, second: torch.Tensor) -> bool:
    """Whether incremental passes save work on this model for a step like ``first → second`` (one sample).

    Only an fx graph module (a canonized model) on images qualifies, only if a full pass costs
    at least :data:`MIN_WORK_PER_INPUT` multiply-adds per input value, and only if the step
    recomputes less than :data:`FULL_WINDOW` of a full pass's work.
    """
    if not isinstance(model, fx.GraphModule) or first.dim() != 4:
        return False
    engine = IncrementalForward(model, first)
    if sum(engine.cost.values()) < MIN_WORK_PER_INPUT * first.numel():
        return False
    engine.step(second)
    return engine.work_share() < FULL_WINDOW


def incremental_curve(model: fx.GraphModule, n: int, step_input: Callable[[slice, int], torch.Tensor], steps: int,
                      score: Callable[[torch.Tensor, slice], torch.Tensor], *, batch_size: int,
                      full_curve: Callable[[slice], torch.Tensor]) -> torch.Tensor:
    """Scores ``(n, steps + 1)`` of the inputs ``step_input(part, k)``, ``k = 0 .. steps``, batch by batch.

    ``score(output, part)`` turns the model's output for samples ``part`` into their scores.
    Each batch's last step is checked against a full forward pass; a batch that disagrees
    (more than ``CHECK_RTOL`` of its largest logit) is recomputed by ``full_curve(part)``.
    """
    out = None
    for start in range(0, n, batch_size):
        part = slice(start, min(start + batch_size, n))
        engine = IncrementalForward(model, step_input(part, 0))
        scores = [score(engine.output(), part)] + [score(engine.step(step_input(part, k)), part)
                                                   for k in range(1, steps + 1)]
        with torch.no_grad():
            reference = model(step_input(part, steps))
        error = (engine.output() - reference).abs().max()
        if out is None:
            out = torch.empty((n, steps + 1), dtype=torch.float64, device=reference.device)
        out[part] = torch.stack(scores, 1)
        if error > CHECK_RTOL * reference.abs().max().clamp(min=1.0):
            warnings.warn(f"incremental forward passes differ from full ones by {float(error):.2e} on this model; "
                          "recomputing these samples with full forward passes", RuntimeWarning, stacklevel=2)
            out[part] = full_curve(part)
    return out
