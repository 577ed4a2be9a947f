"""torchvision zoo: every classifier canonizes and verifies (random weights, randomized BN).

A fast subset of representative architectures runs in CI; the full zoo is marked slow
(``make test-slow``; ``benchmarks/zoo_table.py`` writes the same sweep as a table).
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

import canonc
from canonc import nn as cnn
from models import torchvision_zoo

FAST = ["resnet18", "vgg11_bn", "mobilenet_v3_small", "efficientnet_b0", "regnet_x_400mf", "shufflenet_v2_x0_5",
        "googlenet", "mnasnet0_5"]
# Families whose every BN follows a Conv/Linear: all must merge left, exactly.
MERGE_LEFT_FAMILIES = ("vgg", "resnet", "resnext", "wide_resnet", "mobilenet_v2", "mobilenet_v3", "mnasnet",
                       "efficientnet", "regnet", "shufflenet", "googlenet", "inception_v3")
NO_BN = ("vgg11", "vgg13", "vgg16", "vgg19")  # VGGs without BN: nothing to merge
# Canonical module counts, from the architectures: one Sum per residual add, one Gate per
# squeeze-excitation, one Concat per torch.cat.
EXPECTED_MODULES = {
    "resnet18": {cnn.Sum: 8, cnn.Gate: 0, cnn.Concat: 0},  # 8 BasicBlocks
    "efficientnet_b0": {cnn.Sum: 9, cnn.Gate: 16, cnn.Concat: 0},  # 16 MBConv with SE, 9 with a residual
    "mobilenet_v3_small": {cnn.Sum: 6, cnn.Gate: 9, cnn.Concat: 0},  # SE in 9 of 11 blocks
    "shufflenet_v2_x0_5": {cnn.Sum: 0, cnn.Gate: 0, cnn.Concat: 16},  # 16 blocks, each ends in a cat
    "googlenet": {cnn.Sum: 0, cnn.Gate: 0, cnn.Concat: 9},  # 9 inception blocks
}
REL_TOL = 1e-9


def functional_combines(report: dict) -> list[dict]:
    """Lint items that are a functional add / cat / mul of data tensors."""
    return [item for item in report["lint"]
            if item["kind"] == "functional-combine" and item["reason"].split()[0] in ("add", "cat", "mul")]


def canonize_zoo(name: str) -> tuple[nn.Module, canonc.CanonResult]:
    """The zoo model ``name`` and its canonization; its output must not be constant (else no check could fail)."""
    model, example = torchvision_zoo.build(name)
    with torch.no_grad():
        y = model(torch.cat([example, torch.randn_like(example)]))
    assert y.abs().max() > 1e-3 and (y[0] - y[1]).abs().max() > 1e-6 * y.abs().max()
    return model, canonc.canonize(model, example, name=name)


def test_zoo_vit_zero_head_is_drawn() -> None:
    # torchvision starts every ViT with a zero head: at random weights its output would be 0 for any input
    model, example = torchvision_zoo.build("vit_b_32")
    assert model.heads.head.weight.abs().min() > 0 and model.class_token.abs().max() > 0
    with torch.no_grad():
        assert model(example).abs().max() > 0.1


def check_canonical(name: str, model: nn.Module, result: canonc.CanonResult) -> None:
    """Assert what the issue requires of ``name``'s canonization."""
    report = result.report.to_dict()
    assert report["verified"], report["failure"]
    leftover_bn = [item for item in report["lint"] if item["kind"] == "batchnorm-left"]
    assert report["bn_after"] == len(leftover_bn)
    assert all(item["reason"] and item["reason"] != "not merged" for item in report["lint"])
    assert not [item for item in report["lint"] if item["kind"] == "shared-module"]
    if name.startswith(MERGE_LEFT_FAMILIES) and name not in NO_BN:
        assert report["bn_before"] > 0
        assert report["bn_after"] == 0, leftover_bn[:3]
        # 1e-9, unless the model is ill-conditioned: then within 1e-3 of how far its own float32
        # evaluation is from float64 (DESIGN.md §4; regnet_y_128gf measured 5e-9 relative).
        assert (report["max_rel_error_fp64"] <= REL_TOL
                or report["max_abs_error_fp64"] <= 1e-3 * report["reference_fp32_error"])
        assert functional_combines(report) == []


@pytest.mark.parametrize("name", FAST)
def test_zoo_fast(name: str) -> None:
    model, result = canonize_zoo(name)
    check_canonical(name, model, result)
    counts = {cls: sum(isinstance(m, cls) for m in result.module.modules()) for cls in (cnn.Sum, cnn.Gate, cnn.Concat)}
    for cls, n in EXPECTED_MODULES.get(name, {}).items():
        assert counts[cls] == n, f"{cls.__name__}: {counts[cls]} != {n}"
    # Submodules are registered in the order the graph calls them (DESIGN.md §1.3).
    called = [n.target for n in result.module.graph.nodes if n.op == "call_module"]
    registered = [k for k, m in result.module.named_modules() if k in set(called)]
    assert registered == called
    # The user's model is untouched and the artifact keeps its dtype.
    assert next(result.module.parameters()).dtype == torch.float32
    assert sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()) == result.report.bn_before


@pytest.mark.slow
@pytest.mark.parametrize("name", torchvision_zoo.names())
def test_zoo_all(name: str) -> None:
    why = torchvision_zoo.memory_shortfall(name)
    if why:
        pytest.skip(why)
    model, result = canonize_zoo(name)
    check_canonical(name, model, result)
