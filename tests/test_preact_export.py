"""ThreshReLU and BiasMap export as standard ONNX ops and as readable source."""

from __future__ import annotations

import torch
from torch import nn

from canonc.codegen import emit_dir
from canonc.core import canonize
from canonc.nn import BiasMap, ThreshReLU
from canonc.onnx_export import export_onnx
from models.preact import wild_bn


def canonical():
    torch.manual_seed(0)
    model = nn.Sequential(nn.MaxPool2d(2), wild_bn(nn.BatchNorm2d(4), 1, 2), nn.ReLU(),
                          nn.Conv2d(4, 6, 3, padding=1, stride=2, groups=2), nn.ConvTranspose2d(6, 2, 3, stride=2))
    x = torch.randn(1, 4, 16, 16)
    res = canonize(model.eval(), x)
    assert res.report.bn_after == 0
    assert sum(isinstance(m, (ThreshReLU, BiasMap)) for m in res.module.modules()) == 2
    return res.module, x


def test_onnx_standard_ops(tmp_path):
    module, x = canonical()
    info = export_onnx(module, x, tmp_path / "m.onnx")
    assert info["onnx_verified"]
    ops = info["onnx_op_counts"]
    assert {"Max", "Min", "Where", "Conv"} <= set(ops)
    assert "BatchNormalization" not in ops


def test_emitted_source_reloads(tmp_path):
    module, x = canonical()
    emit_dir(module, tmp_path / "emit", (x,), "preact")
    src = (tmp_path / "emit" / "model.py").read_text()
    assert "ThreshReLU(num_features=4" in src and "BiasMap(out_channels=6" in src
