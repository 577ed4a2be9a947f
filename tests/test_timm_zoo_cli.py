"""``canonc zoo``: a coverage table over a model collection, rows with reasons, JSON for machines."""

from __future__ import annotations

import json

from canonc.cli import main
from canonc.zoo_cli import table_rows


def test_zoo_timm_json_and_table(tmp_path, capsys, one_thread):
    out = tmp_path / "rows.json"
    code = main(["zoo", "timm", "--filter", "lcnet_035,no_such_model*", "--input-size", "32", "--json", str(out)])
    rows = json.loads(out.read_text())
    assert code == 0 and [r["model"] for r in rows] == ["lcnet_035"]
    row = rows[0]
    assert row["status"] == "verified" and row["bn_before"] == 27 and row["bn_after"] == 0
    assert row["input"] == [1, 3, 32, 32] and row["params"] == 1644370 and row["max_rel_error_fp64"] <= 1e-9
    printed = capsys.readouterr().out
    assert "1 of 1 verified" in printed and "27 → 0" in printed


def test_zoo_rejects_bad_usage_with_one_line(tmp_path, capsys, one_thread):
    assert main(["zoo", "timm", "--filter", "no_such_model*"]) == 2
    assert main(["zoo", "torchvision", "--input-size", "2"]) == 2
    assert main(["zoo", "torchvision", "--json", str(tmp_path / "rows.txt")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["canonc: error: no timm model matches --filter 'no_such_model*'",
                   "canonc: error: --input-size 2 is too small; use at least 8 pixels",
                   f"canonc: error: --json {tmp_path / 'rows.txt'}: use a path ending in .json"]


def test_failed_rows_show_their_reason(one_thread):
    rows = [{"model": "m", "status": "error", "reason": "cannot build: TypeError: x"}]
    assert table_rows(rows) == [["m", "–", "–", "–", "–", "–", "error: cannot build: TypeError: x"]]
