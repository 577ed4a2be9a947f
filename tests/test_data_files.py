"""Image folders with VOC XML boxes and VOC segmentation roots, on the tiny files in ``tests/fixtures/``."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from canonc.errors import InputError
from canonc.xai.data import VOC_CLASSES, load_data

FIXTURES = Path(__file__).parent / "fixtures"


def rect(size: int, rows: tuple[int, int], cols: tuple[int, int]) -> torch.Tensor:
    """A ``(1, size, size)`` bool mask, True on ``rows × cols`` (half-open ranges)."""
    mask = torch.zeros(1, size, size, dtype=torch.bool)
    mask[0, rows[0]:rows[1], cols[0]:cols[1]] = True
    return mask


def test_image_folder_boxes_become_masks():
    data = load_data(str(FIXTURES / "imagefolder"), size=16)
    assert data.classes == ["cat", "dog"]
    assert data.labels.tolist() == [0, 0, 1]
    assert data.images.shape == (3, 3, 16, 16)
    # c1.xml next to its image: cat box x 3..8, y 5..12 (1-based, inclusive)
    assert torch.equal(data.boxes[0], rect(16, (4, 12), (2, 8)))
    # c2: only the box named like its class folder counts (the "dog" box is another object)
    assert torch.equal(data.boxes[1], rect(16, (8, 16), (8, 16)))
    # d1: no object named "dog", so all of its boxes count
    assert torch.equal(data.boxes[2], rect(16, (1, 3), (1, 5)))
    assert torch.equal(data.masks, data.boxes)


def test_image_folder_pixels_and_scaling():
    data = load_data(str(FIXTURES / "imagefolder"), size=16)
    png = np.asarray(Image.open(FIXTURES / "imagefolder" / "cat" / "c1.png"), dtype=np.float32) / 255
    assert torch.allclose(data.pixels()[0], torch.from_numpy(png).permute(2, 0, 1), atol=1e-6)
    doubled = load_data(str(FIXTURES / "imagefolder"), size=32)
    assert doubled.boxes.shape == (3, 1, 32, 32)
    assert torch.equal(doubled.boxes[0], rect(32, (8, 24), (4, 16)))
    assert load_data(str(FIXTURES / "imagefolder")).images.shape[-1] == 224


def test_voc_segmentation_masks_and_boxes():
    data = load_data(str(FIXTURES / "voc"), size=16)
    assert data.classes == list(VOC_CLASSES)
    assert [data.classes[i] for i in data.labels] == ["dog", "person"]  # the class with most pixels
    # a: dog pixels x 2..7, y 3..5 (row 2 is the void outline); box from Annotations/a.xml
    assert torch.equal(data.masks[0], rect(16, (3, 6), (2, 8)))
    assert torch.equal(data.boxes[0], rect(16, (1, 7), (1, 9)))
    # b: no XML, so the box is the bounding box of the mask
    assert torch.equal(data.masks[1], rect(16, (1, 16), (0, 4)))
    assert torch.equal(data.boxes[1], data.masks[1])


def test_voc_split_selection():
    train = load_data(f"{FIXTURES / 'voc'}:train", size=16)
    assert [train.classes[i] for i in train.labels] == ["aeroplane"]
    assert int(train.masks.sum()) == 4 * 3
    with pytest.raises(InputError, match="one of: train, val"):
        load_data(f"{FIXTURES / 'voc'}:test")
    with pytest.raises(InputError, match="selects a list of a VOC root"):
        load_data(f"{FIXTURES / 'imagefolder'}:val")


def _copy(tmp_path: Path, name: str) -> Path:
    return Path(shutil.copytree(FIXTURES / name, tmp_path / name))


@pytest.mark.parametrize(("damage", "message"), [
    (lambda root: (root / "cat" / "c1.xml").unlink(), "has no box annotation"),
    (lambda root: (root / "cat" / "c1.png").write_bytes(b"not an image"), "cannot read image"),
    (lambda root: (root / "cat" / "c1.xml").write_text("<annotation>"), "not a Pascal-VOC annotation"),
    (lambda root: (root / "cat" / "c1.xml").write_text(
        "<annotation><size><width>9</width><height>16</height></size></annotation>"), "annotation says 9x16"),
    (lambda root: [shutil.rmtree(root / d) for d in ("cat", "dog")], "holds no class folders"),
])
def test_broken_image_folders_are_input_errors(tmp_path, damage, message):
    root = _copy(tmp_path, "imagefolder")
    damage(root)
    with pytest.raises(InputError, match=message) as err:
        load_data(str(root), size=16)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(("damage", "message"), [
    (lambda root: (root / "SegmentationClass" / "b.png").unlink(), "missing segmentation mask"),
    (lambda root: Image.new("RGB", (16, 16)).save(root / "SegmentationClass" / "b.png"), "palette"),
    (lambda root: Image.new("P", (16, 16)).save(root / "SegmentationClass" / "b.png"), "no VOC class pixel"),
    (lambda root: Image.new("P", (8, 16)).save(root / "SegmentationClass" / "b.png"), "mask of b is 8x16"),
])
def test_broken_voc_roots_are_input_errors(tmp_path, damage, message):
    root = _copy(tmp_path, "voc")
    damage(root)
    with pytest.raises(InputError, match=message):
        load_data(str(root), size=16)
