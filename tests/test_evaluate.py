"""``canonc.xai.evaluate``: rows method × canonized, per-sample scores wired to the right model, table formats."""

from __future__ import annotations

import csv
import io
import json
import math

import pytest
import torch
from evaluate_toy import tiny_net

from canonc import canonize
from canonc.errors import InputError
from canonc.xai import explain
from canonc.xai.data import shapes_benchmark
from canonc.xai.evaluate import EvaluationResult, evaluate, example_indices
from canonc.xai.metrics import relevance_rank_accuracy, sparseness

METRICS = ["sparseness", "rra", "rma", "region-perturbation"]
SETTINGS = {"region-perturbation": {"patch_size": 8, "regions": 4}}


@pytest.fixture(scope="module")
def data():
    return shapes_benchmark(6, size=32, seed=11)


@pytest.fixture(scope="module")
def result(data) -> EvaluationResult:
    return evaluate(tiny_net(), data, methods=["eb", "lrp-epsilon-plus"], metrics=METRICS, settings=SETTINGS,
                    examples=3, model_name="tiny")


def test_rows_and_per_sample_scores(result):
    assert result.rows() == [("eb", "no"), ("eb", "yes"), ("lrp-epsilon-plus", "no"), ("lrp-epsilon-plus", "yes")]
    for row in result.rows():
        assert list(result.scores[row]) == METRICS
        for values in result.scores[row].values():
            assert values.shape == (6,) and values.dtype == torch.float64
    assert result.info["canonization"]["verified"] is True
    assert result.info["canonization"]["bn_before"] == 2 and result.info["canonization"]["bn_after"] == 0


def test_scores_are_those_of_the_right_model(result, data):
    """The "yes" row scores the canonized module's maps, the "no" row the original's (BN without a rule)."""
    model = tiny_net()
    canon = canonize(model, data.images[:1]).module
    for module, canonized in ((canon, "yes"), (model, "no")):
        maps = explain(module, data.images, data.labels, "lrp-epsilon-plus", strict=False)
        got = result.scores[("lrp-epsilon-plus", canonized)]
        assert torch.allclose(got["sparseness"], sparseness(maps), atol=1e-6)
        assert torch.allclose(got["rra"], relevance_rank_accuracy(maps, data.masks), atol=1e-6)
    assert not torch.allclose(result.scores[("lrp-epsilon-plus", "no")]["sparseness"],
                              result.scores[("lrp-epsilon-plus", "yes")]["sparseness"])


def test_markdown_marks_direction_and_best(result):
    table = result.to_markdown()
    lines = table.splitlines()
    assert lines[0] == "| method | canonized | ↑ Sparseness | ↑ RRA | ↑ RMA | ↑ Region Perturbation |"
    body = [line.split(" | ") for line in lines[2:6]]
    assert [cells[0].lstrip("| ") for cells in body] == ["EB", "EB", "LRP-ε+", "LRP-ε+"]
    means = result.means()
    for col, metric in enumerate(METRICS, start=2):
        bold = [row for row, cells in zip(result.rows(), body) if cells[col].strip(" |").startswith("**")]
        assert bold == result.best()[metric]
        assert bold == [max(result.rows(), key=lambda r: means[r][metric])]


def test_canonization_effect_is_the_paired_difference(result):
    diff = result.scores[("eb", "yes")]["rma"] - result.scores[("eb", "no")]["rma"]
    mean, se = result.effects()[("eb", "rma")]
    assert mean == pytest.approx(float(diff.mean()), abs=1e-12)
    assert se == pytest.approx(float(diff.std()) / math.sqrt(6), abs=1e-12)
    lines = result.to_markdown().splitlines()
    start = lines.index("| method | Δ ↑ Sparseness | Δ ↑ RRA | Δ ↑ RMA | Δ ↑ Region Perturbation |")
    assert lines[start + 2].startswith("| EB | ") and f"{mean:+.3f} ± {2 * se:.3f}" in lines[start + 2]
    assert len(lines) == start + 2 + 2  # one row per method
    only_yes = EvaluationResult("m", "d", ["eb"], ["yes"], result.metrics,
                                {("eb", "yes"): result.scores[("eb", "yes")]}, result.labels)
    assert only_yes.effects() == {} and "effect" not in only_yes.to_markdown()


def test_csv_and_json_carry_the_means_and_samples(result):
    rows = list(csv.DictReader(io.StringIO(result.to_csv())))
    assert len(rows) == 4 and rows[1]["method"] == "eb" and rows[1]["canonized"] == "yes"
    assert float(rows[1]["rra"]) == pytest.approx(result.means()[("eb", "yes")]["rra"], abs=0)
    doc = json.loads(json.dumps(result.to_dict()))
    assert doc["n"] == 6 and doc["model"] == "tiny" and doc["labels"] == result.labels.tolist()
    assert [m["higher_is_better"] for m in doc["metrics"]] == [True, True, True, True]
    assert doc["rows"][3]["scores"]["rma"] == result.scores[("lrp-epsilon-plus", "yes")]["rma"].tolist()
    assert len(doc["effects"]) == 2 * 4 and doc["effects"][0]["method"] == "eb"


def test_nan_scores_become_null_and_are_skipped_in_means(result):
    row = ("eb", "no")
    patched = dict(result.scores)
    patched[row] = {**result.scores[row], "rra": torch.tensor([math.nan, 0.5, 0.5, 0.5, 0.5, 0.5], dtype=torch.float64)}
    nan_result = EvaluationResult("m", "d", result.methods, result.canonized, result.metrics, patched, result.labels)
    assert nan_result.means()[row]["rra"] == 0.5
    assert nan_result.to_dict()["rows"][0]["scores"]["rra"][0] is None


def test_examples_hold_heatmaps_of_one_image_per_class_first(result, data):
    assert result.example_index == example_indices(data.labels, 3)
    assert len(set(data.labels[result.example_index].tolist())) == min(3, len(set(data.labels.tolist())))
    assert result.examples[("eb", "yes")].shape == (3, 32, 32)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"methods": ["nope"]}, "unknown method"),
    ({"metrics": ["nope"]}, "unknown metric"),
    ({"canonized": ["maybe"]}, "choose from no, yes"),
    ({"mask": "circle"}, "segmentation or box"),
    ({"methods": []}, "at least one method"),
])
def test_bad_choices_are_input_errors(data, kwargs, message):
    with pytest.raises(InputError, match=message):
        evaluate(tiny_net(), data, **{"metrics": ["sparseness"], **kwargs})
