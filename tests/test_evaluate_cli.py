"""``canonc evaluate``: the four result files, and one-line errors that leave nothing behind."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from PIL import Image

from canonc.cli import main
from canonc.xai.evaluate_cli import metric_settings

FACTORY = "from evaluate_toy import INPUT_SHAPE, tiny_net as build\n"


@pytest.fixture
def factory(tmp_path) -> str:
    path = tmp_path / "tiny.py"
    path.write_text(FACTORY)
    return f"{path}:build"


def test_writes_table_csv_json_and_heatmaps(tmp_path, factory, capsys):
    out = tmp_path / "eval"
    rc = main(["evaluate", factory, "--data", "shapes:5:3", "--methods", "eb,lrp-epsilon-plus",
               "--metrics", "sparseness,rra,pointing-game", "-o", str(out), "--examples", "2", "--quiet"])
    assert rc == 0
    assert sorted(p.name for p in out.iterdir()) == ["heatmaps.png", "results.json", "table.csv", "table.md"]
    table = (out / "table.md").read_text().splitlines()
    assert table[0] == "| method | canonized | ↑ Sparseness | ↑ RRA | ↑ pointing-game |"
    assert len(table) == 2 + 4 + 2 + 5 + 2  # header, rule, 2 methods × 2, blank, caption; effect title, its header, 2 rows
    assert table[-2].startswith("| EB | ") and table[-1].startswith("| LRP-ε+ | ")
    rows = list(csv.DictReader((out / "table.csv").open()))
    assert [(r["method"], r["canonized"]) for r in rows] == [("eb", "no"), ("eb", "yes"),
                                                             ("lrp-epsilon-plus", "no"), ("lrp-epsilon-plus", "yes")]
    doc = json.loads((out / "results.json").read_text())
    assert doc["n"] == 5 and doc["data"] == "shapes:5:3" and doc["canonization"]["bn_after"] == 0
    assert all(len(r["scores"]["rra"]) == 5 for r in doc["rows"])
    with Image.open(out / "heatmaps.png") as im:
        assert im.format == "PNG" and im.width > im.height > 100  # 2 image rows × 5 columns
    assert capsys.readouterr().out == ""


@pytest.mark.parametrize(("args", "message"), [
    (["--data", "shapes:x"], "shapes:N or shapes:N:SEED"),
    (["--data", "shapes:4", "--metrics", "sparseness,nope"], "unknown metric 'nope'"),
    (["--data", "shapes:4", "--methods", "nope"], "unknown method 'nope'"),
    (["--data", "shapes:4", "--canonized", "maybe"], "choose from no, yes"),
    (["--data", "shapes:4", "--device", "tpu9"], "--device tpu9"),
    (["--data", "no/such/folder"], "no such folder"),
    (["--data", "shapes:4", "--set", "patch_size=4"], "METRIC.SETTING=VALUE"),
    (["--data", "shapes:4", "--set", "sparseness.nope=1"], "has no setting 'nope'"),
])
def test_bad_input_exits_2_with_one_line_and_writes_nothing(tmp_path, factory, capsys, args, message):
    out = tmp_path / "eval"
    rc = main(["evaluate", factory, "-o", str(out), "--metrics", "sparseness", "--quiet", *args])
    err = capsys.readouterr().err
    assert rc == 2
    assert message in err and err.count("\n") == 1 and "Traceback" not in err
    assert not out.exists()


def test_output_that_is_a_file_is_refused(tmp_path, factory, capsys):
    target = tmp_path / "taken"
    target.write_text("keep")
    assert main(["evaluate", factory, "--data", "shapes:2", "-o", str(target)]) == 2
    assert "is not a folder" in capsys.readouterr().err
    assert target.read_text() == "keep"


def test_missing_parent_folder_is_refused(tmp_path, factory, capsys):
    assert main(["evaluate", factory, "--data", "shapes:2", "-o", str(Path(tmp_path, "a", "b"))]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_metric_settings_are_typed():
    assert metric_settings(["region-perturbation.patch_size=4", "region-perturbation.baseline=blur",
                            "avg-sensitivity.lower_bound=0.1", "rra.absolute=false"]) == {
        "region-perturbation": {"patch_size": 4, "baseline": "blur"},
        "avg-sensitivity": {"lower_bound": 0.1}, "rra": {"absolute": False}}
