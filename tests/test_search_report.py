"""Search results and the report (Markdown, CSV, JSON, PNG) of a toy-objective study."""

from __future__ import annotations

import csv
import json

import numpy as np
import optuna
import pytest
from search_toy import OBJECTIVES, SPACE, toy_values

from canonc.errors import InputError
from canonc.search.plots import gamma_means
from canonc.search.report import write_report
from canonc.search.results import summarise
from canonc.search.study import open_study, run_trials

optuna.logging.set_verbosity(optuna.logging.WARNING)


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    url = f"sqlite:///{tmp_path_factory.mktemp('study') / 'db.sqlite'}"
    search = open_study(url, "s", SPACE, OBJECTIVES, "grid", context={"toy": 1}, heartbeat_s=1)
    run_trials(search, toy_values)
    return summarise(search)


def test_front_best_and_hypervolume(results):
    assert len(results.trials) == 32
    # toy-up is best at γ(conv1-2) = 10 canonized; toy-down at γ(classifier) = 1 and γ(conv1-2) = 0
    best = results.best()
    assert dict(best["faithfulness"].config.gammas)["conv1-2"] == 10.0 and best["faithfulness"].config.canonized
    assert dict(best["robustness"].config.gammas) == {"conv1-2": 0.0, "classifier": 1.0}
    front = {(dict(t.config.gammas)["conv1-2"], dict(t.config.gammas)["classifier"], t.config.canonized)
             for t, on in zip(results.trials, results.front) if on}
    # on the front: classifier γ = 1 (the toy-down optimum), canonized (better toy-up at no cost), every conv1-2 γ
    assert front == {(g, 1.0, True) for g in (0.0, 0.25, 1.0, 10.0)}
    assert np.all(np.diff(results.hypervolume) >= 0) and results.hypervolume[-1] > 0


def test_gamma_means_average_the_configurations_sharing_a_gamma(results):
    means, half = gamma_means(results, 0, "conv1-2", True, [0.0, 10.0])
    # toy-up = γ/(1+γ) + 0.1 for canonized, whatever the classifier γ
    assert means == pytest.approx([0.1, 10 / 11 + 0.1]) and half == pytest.approx([0.0, 0.0], abs=1e-12)
    means, _ = gamma_means(results, 1, "classifier", False, [1.0, 5.0])
    assert means[0] == pytest.approx(np.mean([0.5 * g / (1 + g) for g in (0.0, 0.25, 1.0, 10.0)]))
    assert np.isnan(means[1])


def test_report_files(results, tmp_path):
    info = {"study": "toy", "model": "toy", "sampler": "grid"}
    paths = write_report(results, SPACE, tmp_path / "out", info)
    names = sorted(p.name for p in paths)
    assert names == ["gamma-faithfulness.png", "gamma-robustness.png", "gamma.png", "hypervolume.png", "report.md",
                     "results.json", "trials.csv"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == names  # no temp file left
    for p in paths:
        if p.suffix == ".png":
            assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = list(csv.DictReader((tmp_path / "out" / "trials.csv").open()))
    assert len(rows) == 32 and sum(r["pareto"] == "1" for r in rows) == 4
    assert list(rows[0])[:6] == ["trial", "slot", "canonized", "γ conv1-2", "γ classifier", "faithfulness"]
    data = json.loads((tmp_path / "out" / "results.json").read_text())
    assert len(data["trials"]) == 32 and data["hypervolume"]["reference"] == 1.1
    assert data["best"]["faithfulness"] == results.best()["faithfulness"].number
    md = (tmp_path / "out" / "report.md").read_text()
    assert "## Pareto front (4 of 32 configurations)" in md and "![metrics against γ](gamma.png)" in md
    assert md.count("| yes |") >= 4


def test_empty_study_has_no_report(tmp_path):
    search = open_study(f"sqlite:///{tmp_path / 'db.sqlite'}", "s", SPACE, OBJECTIVES, "grid", context={}, heartbeat_s=1)
    with pytest.raises(InputError, match="no completed trial"):
        write_report(summarise(search), SPACE, tmp_path / "out", {})
    assert not (tmp_path / "out").exists()
