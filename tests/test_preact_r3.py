"""R3 BN after concat: slices merge left into free producers (or cloned ones under
``untangle``), the rest goes right. Property over the number and widths of the parts,
shared producers, pooled producers, raw-input parts, consumers and strategies.
"""

from __future__ import annotations

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

from canonc.core import canonize
from canonc.nn import ThreshReLU
from models.preact import wild_bn

SETTINGS = settings(max_examples=15, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])


class CatNet(nn.Module):
    """``consumer(relu(bn(cat(conv_i(x)..., [pool(conv(x))], [x]))))``, optionally also returning ``conv_0(x)``."""

    def __init__(self, widths: list[int], pooled: bool, raw: bool, shared: bool, consumer_k: int, seed: int) -> None:
        super().__init__()
        self.convs = nn.ModuleList(nn.Conv2d(3, w, 3, padding=1, stride=2 if pooled else 1) for w in widths)
        self.down = nn.Conv2d(3, 2, 1) if pooled else None
        self.pool = nn.AvgPool2d(2) if pooled else None
        self.raw, self.shared = raw, shared
        total = sum(widths) + (2 if pooled else 0) + (3 if raw else 0)
        self.bn = wild_bn(nn.BatchNorm2d(total), seed, zeros=2)
        self.relu = nn.ReLU()
        self.consumer = nn.Conv2d(total, 4, consumer_k, padding=consumer_k // 2)

    def forward(self, x: torch.Tensor):
        parts = [conv(x) for conv in self.convs]
        if self.pool is not None:
            parts.append(self.pool(self.down(x)))
        if self.raw:
            parts.append(x if self.pool is None else self.pool(x))
        out = self.consumer(self.relu(self.bn(torch.cat(parts, 1))))
        return (out, parts[0]) if self.shared else out


def canon(model: nn.Module, **kwargs):
    res = canonize(model.eval(), torch.randn(1, 3, 8, 8), **kwargs)
    assert res.report.verified and res.report.max_rel_error_fp64 <= 1e-9
    return res


@SETTINGS
@given(widths=st.lists(st.integers(1, 4), min_size=1, max_size=3), pooled=st.booleans(), raw=st.booleans(),
       shared=st.booleans(), k=st.sampled_from([1, 3]), seed=st.integers(0, 2**16),
       strategy=st.sampled_from(["auto", "untangle", "left-only"]))
def test_concat_bn_verified(widths, pooled, raw, shared, k, seed, strategy):
    torch.manual_seed(seed)
    res = canon(CatNet(widths, pooled, raw, shared, k, seed), strategy=strategy)
    if strategy == "left-only":
        assert res.report.bn_after == 1
        return
    assert res.report.bn_after == 0
    threshs = [m for m in res.module.modules() if isinstance(m, ThreshReLU)]
    goes_right = raw or (shared and strategy == "auto")
    assert bool(threshs) == goes_right
    rules = [r["rule"] for r in res.report.rewrites]
    assert ("untangle" in rules) == (strategy == "untangle" and shared)


def test_free_producers_merge_left_without_threshrelu():
    res = canon(CatNet([2, 3], pooled=True, raw=False, shared=False, consumer_k=3, seed=1))
    assert res.report.bn_after == 0
    assert not any(isinstance(m, ThreshReLU) for m in res.module.modules())
    assert [r["rule"] for r in res.report.rewrites].count("split-concat-bn") == 1


def test_untangle_clones_shared_producer_and_reports_growth():
    model = CatNet([4, 4], pooled=False, raw=False, shared=True, consumer_k=1, seed=2)
    auto, untangled = canon(model), canon(model, strategy="untangle")
    assert any(isinstance(m, ThreshReLU) for m in auto.module.modules())
    assert not any(isinstance(m, ThreshReLU) for m in untangled.module.modules())
    assert [r["rule"] for r in untangled.report.rewrites].count("untangle") == 1
    assert untangled.report.params_after == auto.report.params_after + 3 * 3 * 3 * 4 + 4


def test_untangle_budget_refuses_clone_and_goes_right():
    model = CatNet([4, 4], pooled=False, raw=False, shared=True, consumer_k=1, seed=3)
    res = canon(model, strategy="untangle", options={"max_param_growth": 1.0})
    assert res.report.bn_after == 0
    assert any(isinstance(m, ThreshReLU) for m in res.module.modules())
    assert "max-param-growth" in " ".join(r.get("detail", "") for r in res.report.rewrites)
