"""RRA, RMA, Pointing Game and Top-K Intersection on a hand-made map and mask."""

from __future__ import annotations

import math

import pytest
import torch

from canonc.errors import InputError
from canonc.xai.metrics import pointing_game, relevance_mass_accuracy, relevance_rank_accuracy, top_k_intersection

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: one thread is fastest on shared cores

MAP = torch.tensor([[0.9, 0.1, 0.2],
                    [0.8, 0.7, 0.0],
                    [0.3, 0.6, 0.5]], dtype=torch.float64)
MASK = torch.tensor([[1, 0, 0],
                     [1, 0, 0],
                     [0, 1, 0]], dtype=torch.bool)
# A second sample: strong negative relevance outside the mask (at (0, 2)).
SIGNED = MAP.clone()
SIGNED[0, 2] = -0.95


def test_rank_accuracy_of_known_map():
    # K = 3 mask pixels; the top 3 are 0.9 (in), 0.8 (in), 0.7 (out) → 2/3.
    # Signed second map: |−0.95| ranks first with abs (out) → 0.95, 0.9, 0.8 → 2/3; signed it ranks last → 2/3.
    scores = relevance_rank_accuracy(torch.stack([MAP, SIGNED]), torch.stack([MASK, MASK])[:, None])
    assert scores.tolist() == pytest.approx([2 / 3, 2 / 3], abs=1e-15)


def test_rank_accuracy_abs_changes_the_ranking():
    mask = torch.zeros(3, 3, dtype=torch.bool)
    mask[0, 2] = True  # only the −0.95 pixel
    maps, masks = SIGNED[None], mask[None]
    assert relevance_rank_accuracy(maps, masks).item() == 1.0  # |a| ranks it first
    assert relevance_rank_accuracy(maps, masks, absolute=False).item() == 0.0
    assert relevance_rank_accuracy(maps, masks, quantus_compat=True).item() == 0.0  # quantus: signed


def test_mass_accuracy_of_known_map():
    # (0.9 + 0.8 + 0.6) / 4.1; signed map with |a|: same in-mask mass over 4.1 − 0.2 + 0.95
    scores = relevance_mass_accuracy(torch.stack([MAP, SIGNED]), torch.stack([MASK, MASK]))
    assert scores.tolist() == pytest.approx([2.3 / 4.1, 2.3 / 4.85], abs=1e-15)
    signed = relevance_mass_accuracy(SIGNED[None], MASK[None], quantus_compat=True)
    assert signed.item() == pytest.approx(2.3 / (4.1 - 0.2 - 0.95), abs=1e-15)


def test_pointing_game_and_top_k():
    maps = torch.stack([MAP, MAP.T.contiguous()])
    masks = torch.stack([MASK, MASK])
    assert pointing_game(maps, masks).tolist() == [1.0, 1.0]
    moved = MAP.clone()
    moved[1, 1] = 1.0  # the maximum now lies outside the mask
    assert pointing_game(moved[None], MASK[None]).item() == 0.0
    # top 4: 0.9 (in), 0.8 (in), 0.7 (out), 0.6 (in)
    assert top_k_intersection(MAP[None], MASK[None], k=4).item() == pytest.approx(0.75, abs=1e-15)
    with pytest.raises(InputError, match="1 <= k <= H\\*W = 9"):
        top_k_intersection(MAP[None], MASK[None], k=10)


def test_empty_mask_is_nan_except_quantus_pointing_game():
    empty = torch.zeros(1, 3, 3, dtype=torch.bool)
    for metric in (relevance_rank_accuracy, relevance_mass_accuracy, pointing_game):
        assert math.isnan(metric(MAP[None], empty).item())
    assert math.isnan(top_k_intersection(MAP[None], empty, k=2).item())
    assert pointing_game(MAP[None], empty, quantus_compat=True).item() == 1.0  # quantus: NaN → True


def test_ties_keep_pixel_order_by_default():
    # Four tied pixels, K = 2 mask pixels at flat positions 2 and 3: index order takes 0 and 1 first.
    maps = torch.ones(1, 2, 2, dtype=torch.float64)
    masks = torch.tensor([[[False, False], [True, True]]])
    assert relevance_rank_accuracy(maps, masks).item() == 0.0


def test_masks_must_match_the_maps():
    with pytest.raises(InputError, match=r"masks have shape \(1, 2, 2\); the maps are \(1, 3, 3\)"):
        relevance_rank_accuracy(MAP[None], torch.ones(1, 2, 2, dtype=torch.bool))
    with pytest.raises(InputError, match="need ground-truth masks"):
        relevance_mass_accuracy(MAP[None], None)
