"""The operation counter of ``benchmarks/bench_roofline.py`` counts what the bounds divide by."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch
from torch import nn

import canonc
from canonc.xai import explain

_SPEC = importlib.util.spec_from_file_location(
    "bench_roofline", Path(__file__).resolve().parents[1] / "benchmarks" / "bench_roofline.py")
roofline = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(roofline)


def _conv_flop(n: int, c_in: int, c_out: int, k: int, h: int, w: int) -> int:
    """Multiply-adds of a stride-1 'same' convolution, counted twice (multiply and add)."""
    return 2 * n * c_out * c_in * k * k * h * w


def test_a_convolution_and_its_input_gradient_are_counted_exactly():
    conv = nn.Conv2d(3, 5, 3, padding=1)
    x = torch.randn(2, 3, 8, 8, requires_grad=True)
    with torch.no_grad():
        forward = roofline.counted(lambda: conv(x))
    assert forward.total == _conv_flop(2, 3, 5, 3, 8, 8)
    both = roofline.counted(lambda: torch.autograd.grad(conv(x).sum(), x))
    assert both.total == 2 * _conv_flop(2, 3, 5, 3, 8, 8)  # the weight's gradient is not asked for
    assert set(both.by_op) == {"aten.convolution", "aten.convolution_backward"}


def test_an_lrp_explanation_is_counted_inside_the_rule_hooks():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 6, 3, padding=1), nn.ReLU(),
                          nn.Flatten(), nn.Linear(6 * 8 * 8, 5)).eval()
    x = torch.randn(2, 3, 8, 8)
    canonical = canonc.canonize(model, x[:1]).module
    ops = roofline.counted(lambda: explain(canonical, x, torch.tensor([1, 3]), "lrp-epsilon-plus"))
    first, second = _conv_flop(2, 3, 4, 3, 8, 8), _conv_flop(2, 4, 6, 3, 8, 8)
    # forward; z+ on the signed image: a pass and a transpose per input sign; after the ReLU one each
    assert ops.by_op["aten.convolution"] == first + second + 2 * first + second
    assert ops.by_op["aten.convolution_backward"] == 2 * first + second
