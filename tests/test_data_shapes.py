"""The synthetic shapes benchmark: determinism, prefix stability, masks, geometry, ``load_data`` specs."""

from __future__ import annotations

import math

import pytest
import torch

from canonc.errors import InputError
from canonc.xai.data import SHAPE_CLASSES, TEST_SEED, box_mask, load_data, shapes_benchmark
from canonc.xai.data_shapes import _object


@pytest.fixture(scope="module")
def bench():
    return shapes_benchmark(300, seed=3)


def test_shapes_and_dtypes(bench):
    assert bench.images.shape == (300, 3, 64, 64) and bench.images.dtype == torch.float32
    assert bench.labels.shape == (300,) and bench.labels.dtype == torch.long
    assert bench.masks.shape == bench.boxes.shape == (300, 1, 64, 64)
    assert bench.masks.dtype == bench.boxes.dtype == torch.bool
    assert bench.classes == list(SHAPE_CLASSES) and len(bench.classes) == 6
    assert len(bench) == 300 and bench.name == "shapes:300:3"


def test_deterministic_and_prefix_stable(bench):
    again = shapes_benchmark(300, seed=3)
    assert torch.equal(again.images, bench.images) and torch.equal(again.masks, bench.masks)
    shorter = shapes_benchmark(260, seed=3)  # crosses the 256-sample block boundary
    assert torch.equal(shorter.images, bench.images[:260])
    assert torch.equal(shorter.labels, bench.labels[:260])
    other = shapes_benchmark(8, seed=4)
    assert not torch.equal(other.images, bench.images[:8])


@pytest.mark.parametrize("start, n", [(40, 180), (250, 50), (256, 44)])  # inside a block, across one, block-aligned
def test_a_slice_renders_the_same_images_as_the_whole_split(bench, start, n):
    part = shapes_benchmark(n, seed=3, start=start)
    for field in ("images", "labels", "masks", "boxes"):
        assert torch.equal(getattr(part, field), getattr(bench, field)[start:start + n])
    assert part.name == f"shapes:{n}:3@{start}"


def test_negative_start_is_refused():
    with pytest.raises(InputError, match="start must be at least 0"):
        shapes_benchmark(4, start=-1)


def test_every_class_occurs_and_masks_are_plausible(bench):
    assert torch.bincount(bench.labels, minlength=6).min() >= 25
    area = bench.masks.flatten(1).float().mean(1)
    assert area.min() > 0.01 and area.max() < 0.35


def test_box_is_the_tight_bounding_box_of_the_mask(bench):
    assert torch.equal(box_mask(bench.masks), bench.boxes)
    assert not (bench.masks & ~bench.boxes).any()
    for i in range(0, 300, 37):
        ys, xs = bench.masks[i, 0].nonzero(as_tuple=True)
        expected = torch.zeros(64, 64, dtype=torch.bool)
        expected[ys.min():ys.max() + 1, xs.min():xs.max() + 1] = True
        assert torch.equal(bench.boxes[i, 0], expected)


def test_object_is_drawn_on_top_in_one_colour(bench):
    pixels = bench.pixels()
    for i in range(0, 300, 23):
        inside = pixels[i][:, bench.masks[i, 0]]
        assert inside.std(1).max() < 1e-6  # one flat colour: nothing covers the object
    assert pixels.min() >= 0 and pixels.max() <= 1


@pytest.mark.parametrize(("label", "area"), [
    (0, math.pi * 0.85 ** 2),
    (1, 1.5 ** 2),
    (2, 3 * math.sqrt(3) / 4),
    (3, 10 * 0.5 * 0.45 * math.sin(math.pi / 5)),
    (4, 2 * (0.56 * 1.8) - 0.56 ** 2),
    (5, math.pi * (0.9 ** 2 - 0.5 ** 2)),
])
def test_shape_geometry_has_its_closed_form_area(label, area):
    """Area of each class shape of unit size, in units of r², on a fine grid (hand-computed values)."""
    grid = (torch.arange(400, dtype=torch.float32) + 0.5) / 400 * 2.4 - 1.2
    v, u = torch.meshgrid(grid, grid, indexing="ij")
    inside = _object(label, u[None], v[None], torch.ones(1, 1, 1))
    measured = inside.float().sum().item() * (2.4 / 400) ** 2
    assert measured == pytest.approx(area, rel=0.01)


def test_subset(bench):
    sub = bench.subset([5, 2])
    assert torch.equal(sub.images, bench.images[[5, 2]]) and torch.equal(sub.labels, bench.labels[[5, 2]])
    assert len(bench.subset(slice(10, 20))) == 10
    assert len(bench.subset(bench.labels == 0)) == int((bench.labels == 0).sum())


def test_load_data_shapes_specs():
    assert torch.equal(load_data("shapes:8:5").images, shapes_benchmark(8, seed=5).images)
    test_split = load_data("shapes:4")
    assert test_split.name == f"shapes:4:{TEST_SEED}"
    assert torch.equal(test_split.labels, shapes_benchmark(4, seed=TEST_SEED).labels)
    assert load_data("shapes:2", size=32).images.shape == (2, 3, 32, 32)


@pytest.mark.parametrize("spec", ["shapes:", "shapes:x", "shapes:4:a", "shapes:1:2:3", "shapes:0", "no/such/dir"])
def test_bad_specs_are_one_line_input_errors(spec):
    with pytest.raises(InputError) as err:
        load_data(spec)
    assert "\n" not in str(err.value)


def test_too_small_size_is_refused():
    with pytest.raises(InputError, match="too small"):
        load_data("shapes:2", size=8)
