"""Heatmap rendering: diverging colours, symmetric scale, PNG of the expected size."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from canonc.xai import colorize, save_heatmap, side_by_side
from canonc.xai.heatmap import heatmap_image


def test_colours_are_diverging_and_symmetric():
    r = torch.tensor([[-2.0, 0.0, 4.0, 2.0]])
    rgb = colorize(r)
    assert rgb.shape == (1, 4, 3) and rgb.dtype == np.uint8
    assert tuple(rgb[0, 1]) == (247, 247, 247)          # zero is white
    assert tuple(rgb[0, 2]) == (103, 0, 31)             # +max is dark red
    assert rgb[0, 0, 2] > rgb[0, 0, 0]                  # negative is blue
    assert tuple(rgb[0, 3]) == (214, 96, 77)            # +max/2 sits on the middle red stop
    assert tuple(rgb[0, 0]) == (67, 147, 195)           # -max/2 on the middle blue stop


def test_all_zero_map_is_white():
    assert (colorize(np.zeros((3, 5))) == 247).all()


def test_png_has_the_relevance_size(tmp_path):
    path = tmp_path / "heat.png"
    save_heatmap(torch.randn(24, 40), path)
    with Image.open(path) as im:
        assert im.format == "PNG" and im.size == (40, 24) and im.mode == "RGB"


def test_side_by_side_size():
    a, b = heatmap_image(torch.randn(10, 12)), heatmap_image(torch.randn(8, 12))
    joined = side_by_side([a, b], gap=4)
    assert joined.size == (28, 10)
    assert joined.getpixel((13, 5)) == (255, 255, 255)  # the gap
