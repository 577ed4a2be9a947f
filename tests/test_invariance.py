"""Implementation invariance: two writings of one function get the same explanation once canonized."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from canonc.cli import main
from canonc.errors import InputError
from canonc.invariance import invariance
from models.pairs import densenet_prefolded_pair
from models.preact import wild_bn


def small(seed: int = 0) -> nn.Module:
    """conv → ReLU → conv → BN → ReLU → conv → ReLU → pool → Linear, float64, wild BN statistics.

    The BN follows the second conv: EpsilonPlusFlat's first-layer Flat rule ignores weights.
    """
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, 6, 3, padding=1),
                          wild_bn(nn.BatchNorm2d(6), seed, zeros=1), nn.ReLU(),
                          nn.Conv2d(6, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(4, 5))
    return model.double().eval()


def prefolded(model: nn.Module) -> nn.Module:
    """The same function with the BN folded into the second conv by hand."""
    new = copy.deepcopy(model)
    conv, bn = new[2], new[3]
    s = bn.weight.detach() / torch.sqrt(bn.running_var + bn.eps)
    with torch.no_grad():
        conv.weight.mul_(s.reshape(-1, 1, 1, 1))
        conv.bias.copy_(s * (conv.bias - bn.running_mean) + bn.bias)
    new[3] = nn.Identity()
    return new


def pair() -> tuple[nn.Module, nn.Module]:
    a = small()
    return a, prefolded(a)


def test_small_pair_explanations_agree_after_canonization():
    a, b = pair()
    res = invariance(a, b, torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(1)))
    print(res.summary())
    assert res.output_difference <= 1e-12
    assert res.before > 1e-3
    assert res.after <= 1e-5


def test_different_functions_are_rejected():
    with pytest.raises(InputError, match="different functions"):
        invariance(small(0), small(1), torch.randn(1, 3, 8, 8))


def test_cli_invariance(tmp_path, capsys):
    src = tmp_path / "pair.py"
    src.write_text("from tests.test_invariance import pair\n\n"
                   "def a():\n    return pair()[0]\n\n"
                   "def b():\n    return pair()[1]\n")
    code = main(["invariance", f"{src}:a", f"{src}:b", "--input-shape", "1,3,8,8"])
    out = capsys.readouterr().out
    assert code == 0
    before, after = (float(v) for v in out.split("before canonization ")[1].split("\n")[0].split(", after "))
    assert before > 1e-3 and after <= 1e-5


@pytest.mark.slow
def test_densenet121_prefolded_norm2_pair():
    a, b = densenet_prefolded_pair("densenet121")
    res = invariance(a, b, torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(0)))
    print(res.summary())
    assert res.before > 1e-3
    assert res.after <= 1e-5
