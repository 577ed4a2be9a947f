"""``canonc search`` end to end with the real metrics: results, resume, cache, bad input."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest

from canonc import canonize
from canonc.cli import main
from canonc.load import load
from canonc.xai.data import load_data
from canonc.xai.metrics import evaluate_metrics

NET = '''
import torch
from torch import nn
from models.zoo import randomize_bn

INPUT_SHAPE = (1, 3, 64, 64)


def build():
    torch.manual_seed(0)
    layers = []
    for c_in, c_out in ((3, 8), (8, 8), (8, 16)):
        layers += [nn.Conv2d(c_in, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.ReLU(), nn.MaxPool2d(2)]
    net = nn.Sequential(*layers, nn.Flatten(), nn.Linear(16 * 8 * 8, 32), nn.ReLU(), nn.Linear(32, 6))
    return randomize_bn(net, seed=0)
'''
OBJECTIVES = "faithfulness,localization-rma,robustness,complexity"
TRAINED = "models:vgg13_bn-shapes"
SETTINGS = ["--set", "region-perturbation.regions=4", "--set", "avg-sensitivity.n_samples=1"]


@pytest.fixture(scope="module")
def net(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("net") / "net.py"
    path.write_text(NET)
    return path


def _search(model: str, out: Path, *extra: str) -> int:
    return main(["search", model, "--data", "shapes:2", "--objectives", OBJECTIVES, "--gammas", "0,10",
                 *SETTINGS, "--quiet", "-o", str(out), *extra])


def _rows(out: Path) -> list[dict[str, str]]:
    """The trials of the report, without the Pareto flag (which changes as trials are added)."""
    return [{k: v for k, v in r.items() if k != "pareto"} for r in csv.DictReader((out / "trials.csv").open())]


def test_a_trial_measures_the_real_metrics(net, tmp_path, capsys):
    out = tmp_path / "out"
    assert _search(f"{net}:build", out, "--trials", "1") == 0
    (row,) = _rows(out)
    assert {p.name for p in out.iterdir()} >= {"report.md", "trials.csv", "gamma.png", "study.db"}
    before = (out / "trials.csv").read_bytes()
    assert _search(f"{net}:build", out, "--trials", "1") == 2  # the study exists: refused without --resume
    assert "already exists" in capsys.readouterr().err
    assert (out / "trials.csv").read_bytes() == before

    model = load(f"{net}:build").model.eval()
    data = load_data("shapes:2")
    gammas = {g: float(row[f"γ {g}"]) for g in ("conv1", "conv2", "conv3", "classifier")}
    explained = canonize(model, data.images[:1]).module if row["canonized"] == "yes" else model
    scores = evaluate_metrics(explained, data.images, data.labels, method="lrp-gamma",
                              method_params={"gamma": gammas, "groups": "auto:4"}, masks=data.masks,
                              metrics=("region-perturbation", "rma", "avg-sensitivity", "sparseness"),
                              settings={"region-perturbation": {"regions": 4}, "avg-sensitivity": {"n_samples": 1}})
    expected = [float(scores[m].nanmean()) for m in ("region-perturbation", "rma", "avg-sensitivity", "sparseness")]
    assert [float(row[o]) for o in OBJECTIVES.split(",")] == pytest.approx(expected, rel=1e-9, abs=1e-12)
    assert all(math.isfinite(v) for v in expected)


@pytest.mark.slow
def test_tiny_search_on_the_trained_vgg13(tmp_path):
    out = tmp_path / "out"
    assert _search(TRAINED, out, "--trials", "4", "--sampler", "nsga2") == 0
    rows = _rows(out)
    assert len(rows) == 4
    assert list(rows[0])[2:7] == ["canonized", "γ conv1-3", "γ conv4-7", "γ conv8-10", "γ classifier"]
    assert all(r[g] in ("0", "10") for r in rows for g in ("γ conv1-3", "γ conv4-7", "γ conv8-10", "γ classifier"))
    assert all(math.isfinite(float(r[o])) for r in rows for o in OBJECTIVES.split(","))
    assert 0 <= min(float(r["localization-rma"]) for r in rows) <= max(float(r["localization-rma"]) for r in rows) <= 1


@pytest.mark.slow
def test_resume_keeps_trials_and_another_study_reuses_the_cache(net, tmp_path, capsys):
    out = tmp_path / "out"
    assert _search(f"{net}:build", out, "--trials", "2") == 0
    first = _rows(out)
    assert len(first) == 2

    # resume to a larger budget: the first trials are kept unchanged
    assert _search(f"{net}:build", out, "--trials", "3", "--resume") == 0
    resumed = _rows(out)
    assert len(resumed) == 3 and resumed[:2] == first

    # another study over the same grid points costs nothing: every value comes from the cache
    capsys.readouterr()
    assert main(["search", f"{net}:build", "--data", "shapes:2", "--objectives", OBJECTIVES, "--gammas", "0,10",
                 *SETTINGS, "--study", "again", "--trials", "3", "-o", str(tmp_path / "again"),
                 "--storage", f"sqlite:///{out / 'study.db'}"]) == 0
    assert "3 configurations (0 computed, 3 from the cache)" in capsys.readouterr().err
    assert [r[o] for r in _rows(tmp_path / "again") for o in OBJECTIVES.split(",")] == \
        [r[o] for r in resumed for o in OBJECTIVES.split(",")]


@pytest.mark.parametrize("args, message", [
    (["--gammas", "0,x"], "--gammas '0,x': write comma-separated numbers"),
    (["--objectives", "beauty"], "unknown objective 'beauty'"),
    (["--trials", "0"], "--trials 0: give at least 1"),
    (["--sampler", "tpe"], "--sampler tpe needs a budget"),
    (["--canonized", "perhaps"], "--canonized 'perhaps'"),
    (["--set", "regions=4"], "write METRIC.SETTING=VALUE"),
    (["--set", "localization-rma.colour=1"], "metric 'rma' has no setting 'colour'"),
    (["--device", "tpu"], "--device tpu: use cpu, or cuda"),
    (["--set", "pixel-flipping.x=1"], "metric setting for 'pixel-flipping', which is not among the"),
    (["--groups", "2,2,classifier"], "groups '2,2,classifier': counts add up to 4, but the model has 3"),
    (["--data", "shapes:x"], "write shapes:N"),
])
def test_bad_input_exits_2_with_one_line_and_writes_nothing(net, tmp_path, capsys, args, message):
    out = tmp_path / "out"
    assert main(["search", f"{net}:build", "--data", "shapes:2", "-o", str(out), "--quiet", *args]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not out.exists()


def test_worker_needs_a_shared_storage(net, tmp_path, capsys):
    assert main(["search", f"{net}:build", "--data", "shapes:2", "--worker"]) == 2
    assert "--worker needs --storage URL" in capsys.readouterr().err

