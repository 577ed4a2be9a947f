"""The gate's check inputs: a second size used where the canonized graph runs it, skipped with a note
where not; a model whose output ignores its input is flagged."""

from __future__ import annotations

import copy

import torch
from torch import nn

import canonc
from canonc.verify import check_inputs, gate


def _conv() -> nn.Conv2d:
    torch.manual_seed(0)
    return nn.Conv2d(3, 4, 3, padding=1).double().eval()


def test_second_size_that_the_canonized_graph_cannot_run_is_skipped_with_a_note():
    original = _conv()
    fixed = nn.Sequential(original, nn.Flatten(2), nn.Unflatten(2, (8, 8)))  # runs only at 8×8
    inputs = check_inputs((torch.randn(1, 3, 8, 8, dtype=torch.float64),), original)
    assert [list(x[0].shape) for x in inputs] == [[1, 3, 8, 8], [3, 3, 8, 8], [1, 3, 40, 40]]
    result = gate(original, fixed, copy.deepcopy(original).float(), inputs, torch.float32)
    assert result.passed and result.max_abs_error_fp64 == 0.0
    assert result.input_shapes == [[[1, 3, 8, 8]], [[3, 3, 8, 8]]]
    assert len(result.notes) == 1 and "1,3,40,40 skipped" in result.notes[0]


def test_a_graph_that_fails_at_the_given_size_fails_the_gate():
    original = _conv()
    broken = nn.Sequential(original, nn.Flatten(2), nn.Unflatten(2, (5, 5)))  # runs at no size here
    inputs = check_inputs((torch.randn(1, 3, 8, 8, dtype=torch.float64),), original)
    result = gate(original, broken, copy.deepcopy(original).float(), inputs, torch.float32)
    assert not result.passed and result.max_abs_error_fp64 == float("inf")


def test_a_model_blind_to_its_input_is_verified_with_a_warning():
    # torchvision's ViTs start with a zero head: their output is 0 whatever the trunk computes
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(144, 5))
    nn.init.zeros_(model[4].weight)
    result = canonc.canonize(model.eval(), torch.randn(1, 3, 8, 8))
    blind = [w for w in result.report.warnings if "same for every input" in w]
    assert result.report.verified and len(blind) == 1  # once, from the batch-3 input
    nn.init.normal_(model[4].weight)
    assert not [w for w in canonc.canonize(model, torch.randn(1, 3, 8, 8)).report.warnings if "same for every" in w]
