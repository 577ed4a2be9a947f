"""The pre-activation options on the command line: --no-bias-map, --strategy, --max-param-growth."""

from __future__ import annotations

import json

import pytest

from canonc.cli import main


@pytest.mark.parametrize("flags, bn_after", [([], 0), (["--no-bias-map"], 3), (["--strategy", "left-only"], 5)])
def test_preact_net_cli(tmp_path, flags, bn_after):
    src, report = tmp_path / "net.py", tmp_path / "r.json"
    src.write_text("from models.preact import preact_net\n")
    code = main([f"{src}:preact_net", "--input-shape", "1,3,32,32", "-o", str(tmp_path / "c.pt"), "--report", str(report),
                 "--quiet", *flags])
    data = json.loads(report.read_text())
    assert code == 0 and data["verified"] and data["bn_after"] == bn_after
    kept = [v for v in data["bn_actions"].values() if v.startswith("kept")]
    assert len(kept) == bn_after and data["param_growth"] <= 1.0


def test_untangle_budget_option(tmp_path):
    src = tmp_path / "cat.py"
    src.write_text("from tests.test_preact_r3 import CatNet\n\n"
                   "def net():\n    return CatNet([4, 4], False, False, True, 1, 0).eval()\n")
    for growth, rule in (("6", "untangle"), ("1", "thresh-relu")):
        report = tmp_path / f"r{growth}.json"
        assert main([f"{src}:net", "--input-shape", "1,3,8,8", "-o", str(tmp_path / "c.pt"), "--report", str(report),
                     "--quiet", "--strategy", "untangle", "--max-param-growth", growth]) == 0
        data = json.loads(report.read_text())
        assert data["bn_after"] == 0 and rule in {r["rule"] for r in data["rewrites"]}
