"""zennit on a canonized ResNet-50, with no zennit canonizer.

Every residual add must be a ``Sum`` module that gets zennit's ``Norm`` rule, and the
first layer rule (``Flat``) must land on the stem conv. With the adds left functional,
zennit copies relevance into both branches of every block (zennit.md: total relevance
doubled); with canonc's ``Sum`` it is split in proportion.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torchvision
from torch import nn
from zennit.attribution import Gradient
from zennit.composites import EpsilonPlusFlat
from zennit.layer import Sum as ZennitSum
from zennit.rules import Epsilon, Flat, Norm, ZPlus

from canonc import canonize
from canonc import nn as cnn
from models.zoo import randomize_bn

SHAPE = (1, 3, 32, 32)


@pytest.fixture(scope="module")
def resnet50():
    """(original, canonized) ResNet-50: random weights, randomized BN, float32."""
    torch.manual_seed(0)
    model = randomize_bn(torchvision.models.resnet50(), seed=0, input_shape=(2, *SHAPE[1:]))
    # the equivalence gate is covered by the zoo tests; this file is about zennit
    result = canonize(model, torch.randn(SHAPE), verify=False)
    return model, result


def _rules(model: nn.Module) -> dict[str, object]:
    """The rule EpsilonPlusFlat assigns to each named module, as its ``register`` does."""
    composite, ctx = EpsilonPlusFlat(), {}
    return {name: composite.module_map(ctx, name, m) for name, m in model.named_modules()}


def test_every_residual_add_is_a_sum_with_the_norm_rule(resnet50):
    model, result = resnet50
    canon = result.module
    sums = [name for name, m in canon.named_modules() if isinstance(m, cnn.Sum)]
    assert len(sums) == 16 and all(isinstance(canon.get_submodule(n), ZennitSum) for n in sums)
    assert result.report.bn_after == 0
    assert not [i for i in result.report.lint if i["kind"] in ("functional-combine", "batchnorm-left", "shared-module")]
    rules = _rules(canon)
    assert all(isinstance(rules[n], Norm) for n in sums)
    assert isinstance(rules["conv1"], Flat) and isinstance(rules["fc"], Epsilon)
    assert sum(isinstance(r, ZPlus) for r in rules.values()) == 52  # every other conv
    x = torch.randn(SHAPE)
    with torch.no_grad():
        torch.testing.assert_close(canon(x), model(x), rtol=1e-3, atol=1e-3 * model(x).abs().max().item())
    composite = EpsilonPlusFlat()
    assert not composite.canonizers  # no zennit canonizer anywhere
    with composite.context(canon) as hooked:
        hooked_sums = [n for n in sums if hooked.get_submodule(n)._forward_hooks or hooked.get_submodule(n)._forward_pre_hooks]
        assert hooked_sums == sums  # the Norm hook is really registered on each Sum
    assert not any(canon.get_submodule(n)._forward_hooks for n in sums)  # and removed afterwards


def _relevance(model: nn.Module, x: torch.Tensor, target: int) -> tuple[float, torch.Tensor]:
    with Gradient(model=model, composite=EpsilonPlusFlat()) as attributor:
        out, relevance = attributor(x, lambda y: y * torch.eye(y.shape[1])[[target]])
    return out[0, target].item(), relevance


class _PlainSum(nn.Module):
    """The same function as ``Sum``, but no zennit rule attaches (like a functional add)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim

    def forward(self, stacked: torch.Tensor) -> torch.Tensor:
        return stacked.sum(self.dim)


def test_epsilon_plus_flat_runs_and_relevance_is_not_doubled(resnet50):
    _, result = resnet50
    canon = result.module
    functional = copy.deepcopy(canon)
    for name, m in canon.named_modules():
        if isinstance(m, cnn.Sum):
            parent, _, leaf = name.rpartition(".")
            setattr(functional.get_submodule(parent), leaf, _PlainSum(m.dim))
    x = torch.randn(SHAPE, generator=torch.Generator().manual_seed(1))
    target = 7
    out, rel = _relevance(canon, x, target)
    out_f, rel_f = _relevance(functional, x, target)
    assert rel.shape == x.shape and torch.isfinite(rel).all() and rel.abs().sum() > 0
    assert out == pytest.approx(out_f, rel=1e-5)  # same function
    kept, kept_f = rel.sum().item() / out, rel_f.sum().item() / out_f
    assert 0.1 < kept < 2.0  # Sum + Norm: about what the output had (biases absorb some: β ~ N(0, 0.5))
    assert kept_f > 8 * kept  # copied into both branches of 16 blocks
