"""The gate's second input size: used where the canonized graph runs it, skipped with a note where not."""

from __future__ import annotations

import copy

import torch
from torch import nn

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
