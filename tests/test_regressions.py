"""Regression tests for the failures measured in ../shared/reference (graph-tools.md, zennit.md).

Each small graph gets wild BN statistics; models run in float64 so the written module can
be compared with the original directly at 1e-9 relative.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.fx.experimental.optimization
import torch.nn.functional as F
from torch import nn

from canonc import canonize
from canonc import nn as cnn
from canonc.errors import RefusedError, VerificationError

pytestmark = pytest.mark.usefixtures("one_thread")


def _rel_error(original: nn.Module, canon: nn.Module, shape: tuple[int, ...], seed: int = 1) -> float:
    """Max |y_canon - y| / (1 + max|y|) on fresh float64 inputs of batch 1 and 3."""
    gen = torch.Generator().manual_seed(seed)
    worst = 0.0
    for batch in (1, 3):
        x = torch.randn((batch, *shape[1:]), generator=gen, dtype=torch.float64)
        with torch.no_grad():
            want, got = original(x.clone()), canon(x.clone())  # clones: a model may write into x
        worst = max(worst, ((got - want).abs().max() / (1 + want.abs().max())).item())
    return worst


def _canon(model: nn.Module, shape: tuple[int, ...]):
    model = model.double().eval()
    result = canonize(model, torch.randn(shape, dtype=torch.float64))
    return result, _rel_error(model, result.module, shape)


def _bn_count(module: nn.Module) -> int:
    return sum(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in module.modules())


def _calls(module) -> list[str]:
    return [n.target for n in module.graph.nodes if n.op == "call_module"]


class ConvTwice(nn.Module):
    """One conv module called twice, each call followed by its own BN (fx.fuse: error 16)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(4)
        self.bn2 = nn.BatchNorm2d(4)

    def forward(self, x):
        return self.bn1(self.conv(x)) + self.bn2(self.conv(x))


def test_conv_called_twice_with_two_bns(wild_bn):
    model = wild_bn(ConvTwice()).double()
    fused = torch.fx.experimental.optimization.fuse(copy.deepcopy(model))  # the anchor's wrong answer
    assert _rel_error(model, fused, (1, 3, 8, 8)) > 1e-2
    result, err = _canon(model, (1, 3, 8, 8))
    assert err <= 1e-9 and result.report.verified and result.report.max_rel_error_fp64 <= 1e-9
    assert (result.report.bn_before, result.report.bn_after) == (2, 0)
    calls = _calls(result.module)
    assert sorted(c for c in calls if c.startswith("conv")) == ["conv", "conv_1"]
    assert len(calls) == len(set(calls))  # every module called once
    assert not torch.equal(result.module.conv.weight, result.module.conv_1.weight)
    assert isinstance(result.module.get_submodule(calls[-1]), cnn.Sum)


@pytest.mark.parametrize("dim", [1, 2, 3])
def test_grouped_conv_transpose_bn(wild_bn, dim):
    convt = getattr(nn, f"ConvTranspose{dim}d")(4, 6, 3, stride=2, groups=2)
    model = wild_bn(nn.Sequential(convt, getattr(nn, f"BatchNorm{dim}d")(6))).double()
    with pytest.raises(RuntimeError):  # torch's own fuser fails on grouped ConvTranspose
        torch.nn.utils.fuse_conv_bn_eval(model[0], model[1], transpose=True)
    result, err = _canon(model, (1, 4) + (5,) * dim)
    assert err <= 1e-9 and result.report.verified
    assert (result.report.bn_before, result.report.bn_after) == (1, 0)
    assert result.report.lint == []


class ReluBetween(nn.Module):
    """conv → F.relu → BN: registration order suggests conv+BN, the dataflow forbids it."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.bn = nn.BatchNorm2d(4)

    def forward(self, x):
        return self.bn(F.relu(self.conv(x)))


def test_functional_relu_between_conv_and_bn_blocks_the_merge(wild_bn):
    model = wild_bn(ReluBetween()).double()
    result, err = _canon(model, (1, 3, 8, 8))
    assert err <= 1e-9 and result.report.verified
    assert (result.report.bn_before, result.report.bn_after) == (1, 1)
    assert torch.equal(result.module.conv.weight, model.conv.weight)  # nothing folded across the ReLU
    assert isinstance(result.module.get_submodule(_calls(result.module)[1]), nn.ReLU)  # the relu is a module now
    lint = [item for item in result.report.lint if item["kind"] == "batchnorm-left"]
    assert [item["node"] for item in lint] == ["bn"] and "relu" in lint[0]["reason"]
    assert any(s["rule"] == "merge-left" and s["node"] == "bn" and "relu" in s["reason"] for s in result.report.skipped)
    # Opt-in last resort: the same BN becomes an explicit per-channel conv, with the reason kept.
    as_layer = canonize(model, torch.randn(1, 3, 8, 8, dtype=torch.float64), options={"bn_as_layer": True})
    assert as_layer.report.bn_after == 0 and torch.equal(as_layer.module.conv.weight, model.conv.weight)
    rewrites = [r for r in as_layer.report.rewrites if r["rule"] == "bn-as-layer"]
    assert [r["node"] for r in rewrites] == ["bn"] and "relu" in rewrites[0]["detail"]


class HeadFirst(nn.Module):
    """The classifier is registered before the body (zennit put Flat on the head)."""

    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Linear(4, 2)
        self.bn = nn.BatchNorm2d(4)
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, x):
        return self.head(torch.flatten(F.adaptive_avg_pool2d(F.relu(self.bn(self.conv(x))), 1), 1))


def _first_layer_rules(model: nn.Module) -> dict[str, str]:
    from zennit.composites import EpsilonPlusFlat

    composite, ctx = EpsilonPlusFlat(), {}
    rules = {name: composite.module_map(ctx, name, m) for name, m in model.named_modules()}
    return {name: type(rule).__name__ for name, rule in rules.items() if rule is not None}


def test_registration_order_follows_execution(wild_bn):
    model = wild_bn(HeadFirst()).double()
    assert _first_layer_rules(model)["head"] == "Flat"  # the anchor's mistake on the original
    result, err = _canon(model, (1, 3, 8, 8))
    assert err <= 1e-9 and result.report.bn_after == 0
    names = [n for n, m in result.module.named_modules() if n and not list(m.children())]
    assert names[0] == "conv" and names[-1] == "head"
    assert names == [n for n in _calls(result.module)]
    rules = _first_layer_rules(result.module)
    assert rules["conv"] == "Flat" and rules["head"] == "Epsilon"


def test_bn_affine_false(wild_bn):
    model = wild_bn(nn.Sequential(nn.Conv2d(3, 5, 3, bias=False), nn.BatchNorm2d(5, affine=False))).double()
    result, err = _canon(model, (1, 3, 8, 8))
    assert err <= 1e-9 and (result.report.bn_before, result.report.bn_after) == (1, 0)
    s = 1 / torch.sqrt(model[1].running_var + model[1].eps)
    assert torch.allclose(result.module.get_submodule("0").weight, model[0].weight * s.view(-1, 1, 1, 1), rtol=1e-14)
    assert torch.allclose(result.module.get_submodule("0").bias, -model[1].running_mean * s, rtol=1e-14)


def test_bn_without_running_stats_is_refused():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4, track_running_stats=False)).eval()
    with pytest.raises(RefusedError, match="running statistics") as info:
        canonize(model, torch.randn(1, 3, 8, 8))
    assert info.value.exit_code == 3 and "'1'" in str(info.value)


class Linear2d(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(5, 6)
        self.bn = nn.BatchNorm1d(6)

    def forward(self, x):
        return self.bn(self.fc(x))


class Linear3d(nn.Module):
    """Linear over the last axis, BatchNorm1d over features through a transpose."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(5, 6)
        self.bn = nn.BatchNorm1d(6)

    def forward(self, x):
        return self.bn(self.fc(x).transpose(1, 2)).transpose(1, 2)


@pytest.mark.parametrize(("cls", "shape"), [(Linear2d, (2, 5)), (Linear3d, (2, 7, 5))])
def test_linear_batchnorm1d(wild_bn, cls, shape):
    model = wild_bn(cls()).double()
    result, err = _canon(model, shape)
    assert err <= 1e-9 and (result.report.bn_before, result.report.bn_after) == (1, 0)
    assert not torch.equal(result.module.fc.weight, model.fc.weight)
    assert [r["rule"] for r in result.report.rewrites].count("merge-left") == 1


class SecondUser(nn.Module):
    """The conv output feeds the BN and, unnormalized, a residual add."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)

    def forward(self, x):
        y = self.conv(x)
        return self.bn(y) + y


def test_producer_with_second_data_user_is_cloned(wild_bn):
    model = wild_bn(SecondUser()).double()
    result, err = _canon(model, (1, 4, 8, 8))
    assert err <= 1e-9 and result.report.bn_after == 0
    assert torch.equal(result.module.conv.weight, model.conv.weight)  # the raw path keeps the weights
    assert not torch.equal(result.module.conv_1.weight, model.conv.weight)  # the BN path got a merged clone
    assert result.report.params_after == result.report.params_before - 8 + 4 * 4 * 9 + 4


class FakeFanOut(nn.Module):
    """timm style: the conv output is also read by shape getattr / size / _assert."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.bn = nn.BatchNorm2d(4)

    def forward(self, x):
        y = self.conv(x)
        torch._assert(y.ndim == 4, "expected NCHW")
        channels = y.shape[1] + y.size(1)
        return self.bn(y).flatten(1)[:, : channels * 4]


def test_metadata_users_do_not_block_a_merge(wild_bn):
    model = wild_bn(FakeFanOut()).double()
    result, err = _canon(model, (1, 3, 8, 8))
    assert err <= 1e-9 and result.report.bn_after == 0
    assert [c for c in _calls(result.module)] == ["conv"]  # merged in place, no clone


def test_timm_batchnorm_act_is_split_and_merged(wild_bn):
    timm_layers = pytest.importorskip("timm.layers")
    model = wild_bn(nn.Sequential(nn.Conv2d(3, 4, 3), timm_layers.BatchNormAct2d(4, act_layer=nn.ReLU))).double()
    result, err = _canon(model, (1, 3, 8, 8))
    assert err <= 1e-9 and (result.report.bn_before, result.report.bn_after) == (1, 0)
    kinds = [type(result.module.get_submodule(c)) for c in _calls(result.module)]
    assert kinds[0] is nn.Conv2d and issubclass(kinds[1], nn.ReLU) and len(kinds) == 2


def test_no_identity_bn_left_behind():
    """A fresh BN is *almost* the identity: 1/sqrt(1 + eps) must still be folded in."""
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4, eps=1e-3)).double().eval()
    result, err = _canon(model, (1, 3, 8, 8))
    assert err <= 1e-9 and result.report.bn_after == 0 and _bn_count(result.module) == 0
    scale = 1 / (1 + 1e-3) ** 0.5
    assert torch.allclose(result.module.get_submodule("0").weight, model[0].weight * scale, rtol=1e-14, atol=0)
    assert not torch.allclose(result.module.get_submodule("0").weight, model[0].weight, rtol=1e-6, atol=0)


@pytest.mark.parametrize("train", [False, True])
def test_user_model_is_never_mutated(wild_bn, train):
    model = wild_bn(ConvTwice()).float()
    model.train(train)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    modules = [id(m) for m in model.modules()]
    flags = [m.training for m in model.modules()]
    x = torch.randn(2, 3, 8, 8)
    x_before = x.clone()
    result = canonize(model, x)
    after = model.state_dict()
    assert after.keys() == before.keys() and all(torch.equal(after[k], before[k]) for k in before)
    assert after["bn1.num_batches_tracked"].item() == 0  # no train-mode forward touched the statistics
    assert [id(m) for m in model.modules()] == modules and [m.training for m in model.modules()] == flags
    assert torch.equal(x, x_before)
    assert result.report.verified and not result.module.training
    assert ("train mode" in " ".join(result.report.warnings)) == train
    assert next(result.module.parameters()).dtype == torch.float32


class InPlace(nn.Module):
    """In-place writes read later: ``relu_`` through a Dropout alias, ``+=``, and a write into the input."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)
        self.bn = nn.BatchNorm2d(3)
        self.drop = nn.Dropout(0.5)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x):
        y = self.bn(self.conv(x))
        self.relu(self.drop(y))  # eval Dropout returns y itself: y is now relu(y)
        z = y * 2
        z += x  # fx records a plain add unless canonc's tracer sees the +=
        w = z * 3  # reads z after the +=
        x.relu_()  # writes into the caller's tensor
        return y + w + x


def test_in_place_writes_keep_their_meaning(wild_bn):
    model = wild_bn(InPlace()).double()
    result, err = _canon(model, (1, 3, 8, 8))
    assert err <= 1e-9 and result.report.verified and result.report.bn_after == 0
    assert not any(getattr(m, "inplace", False) for m in result.module.modules())


class WeightsReadFunctionally(nn.Module):
    """``conv`` is called as a module (then BN) and its weights are also used by ``F.conv2d``."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 1)
        self.bn = nn.BatchNorm2d(4)

    def forward(self, x):
        return self.bn(self.conv(x)) + F.conv2d(x, self.conv.weight, self.conv.bias)


def test_merge_keeps_weights_read_by_functional_calls(wild_bn):
    model = wild_bn(WeightsReadFunctionally()).double()
    result, err = _canon(model, (1, 3, 8, 8))
    assert err <= 1e-9 and result.report.bn_after == 0
    assert torch.equal(result.module.conv2d.weight, model.conv.weight)  # F.conv2d, lifted to a module
    assert not torch.equal(result.module.conv_1.weight, model.conv.weight)  # the merged clone


class WriteIntoView(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.relu = nn.ReLU(inplace=True)
        self.conv = nn.Conv2d(3, 3, 1)

    def forward(self, x):
        flat = self.relu(x.flatten(1))  # writes into x through the view
        return flat.sum(1) + self.conv(x).sum((1, 2, 3))


def test_in_place_write_into_a_view_read_later_is_refused():
    with pytest.raises(RefusedError, match="writes in place into a view of 'x'.*inplace=False"):
        canonize(WriteIntoView().eval(), torch.randn(1, 3, 4, 4))


def test_a_rewrite_that_breaks_the_forward_fails_the_gate(wild_bn, monkeypatch):
    """A pass bug that makes the canonical forward raise is a verification failure naming the pass."""
    from canonc.passes import merge_left

    monkeypatch.setattr(merge_left, "fold_out", lambda layer, s, t: nn.Conv2d(7, 4, 1).double())
    model = wild_bn(nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4))).double()
    with pytest.raises(VerificationError, match="pass 'merge-left' broke equivalence at node '_1'"):
        canonize(model, torch.randn(1, 3, 4, 4, dtype=torch.float64))


def test_batch_dependent_model_is_checked_at_the_batches_it_takes():
    """``x.mean(2)`` then Conv1d: batch 1 is read as an unbatched (C, L) input; batch 3 fails in torch itself."""
    model = nn.Sequential(cnn.Mean((2,)), nn.Conv1d(1, 2, 1)).double().eval()
    result = canonize(model, torch.randn(1, 1, 6, dtype=torch.float64))
    assert result.report.verified and [s[0][0] for s in result.report.check_inputs] == [1, 1]
