"""The random-graph fuzzer: 200 cases with 0 failures, and the fuzzer's own machinery."""

from __future__ import annotations

import copy
import runpy

import pytest
import torch

from canonc import canonize, fuzz

pytestmark = pytest.mark.usefixtures("one_thread")

N_CI = 200


def test_fuzz_200_cases_no_failure():
    summary = fuzz.run(N_CI, seed=0, out=None, progress=False)
    assert summary.failures == []
    assert summary.counts["failure"] == 0
    assert summary.counts["verified"] + summary.counts["refused"] == N_CI
    assert summary.counts["verified"] >= 0.9 * N_CI
    expected = ("no running statistics", "writes in place into a view", "the model does not run in")
    assert all(r.startswith(expected) for r in summary.reasons), summary.reasons


def test_generation_is_deterministic_and_varied():
    cases = [fuzz.generate(fuzz.case_seed(7, i)) for i in range(40)]
    assert [c.source() for c in cases] == [fuzz.generate(fuzz.case_seed(7, i)).source() for i in range(40)]
    kinds = {k for c in cases for k in c.kinds}
    assert {"conv", "bn", "act", "add", "cat"} <= kinds
    assert len({c.source() for c in cases}) == 40
    a, b = fuzz.build(cases[0]), fuzz.build(cases[0])
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def _verified_case() -> fuzz.Case:
    for i in range(50):
        case = fuzz.generate(fuzz.case_seed(3, i))
        if "bn" in case.kinds and case.dtype == "float64" and fuzz.run_case(case).kind == "verified":
            return case
    raise AssertionError("no verified float64 case with a BN among 50")


def test_independent_check_catches_a_wrong_model():
    case = _verified_case()
    model = fuzz.build(case)
    written = canonize(model, torch.randn(case.input_shape, dtype=torch.float64)).module
    fuzz.independent_check(model, written, case.input_shape, torch.float64, case.seed)  # passes as written
    wrong = copy.deepcopy(written)
    with torch.no_grad():
        p = next(p for n, p in wrong.named_parameters() if n.endswith("bias"))
        p.add_(1e-3)
    with pytest.raises(AssertionError, match="off by"):
        fuzz.independent_check(model, wrong, case.input_shape, torch.float64, case.seed)
    with pytest.raises(AssertionError, match="not torch.float32"):
        fuzz.independent_check(model, written, case.input_shape, torch.float32, case.seed)


def test_shrink_and_repro_script(tmp_path, monkeypatch):
    case = _verified_case()
    bn_out = next(op.out for op, kind in zip(case.ops, case.kinds) if kind == "bn")

    def fake(c: fuzz.Case) -> fuzz.Outcome:  # "fails" whenever the first BN is in the slice
        return fuzz.Outcome("failure" if any(op.out == bn_out for op in fuzz._slice(c.ops, c.outputs)) else "verified")

    monkeypatch.setattr(fuzz, "run_case", fake)
    small = fuzz.shrink(case, fake(case))
    assert small.outputs == [bn_out]
    assert len(fuzz._slice(small.ops, small.outputs)) <= len(fuzz._slice(case.ops, case.outputs))
    script = tmp_path / "repro.py"
    script.write_text(fuzz.repro_script(small, fuzz.Outcome("failure", "made up")))
    monkeypatch.undo()
    ns = runpy.run_path(str(script), run_name="__main__")  # canonizes, saves, reloads and checks: no failure
    assert isinstance(ns["build"](), torch.nn.Module)
