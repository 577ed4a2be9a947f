"""``canonc explain``: one image, a folder, the side-by-side comparison, errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from canonc.cli import main

MODEL = '''
import torch
from torch import nn


class Small(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        return self.fc(torch.relu(self.bn(self.conv(x))).mean((2, 3)))


def make():
    torch.manual_seed(0)
    model = Small()
    model.bn.running_var.uniform_(0.5, 2.0)
    model.bn.weight.data.uniform_(0.5, 2.0)
    return model.eval()


make.input_shape = (1, 3, 16, 12)
'''


@pytest.fixture
def files(tmp_path: Path) -> Path:
    (tmp_path / "small.py").write_text(MODEL)
    rng = np.random.default_rng(0)
    (tmp_path / "imgs").mkdir()
    for name in ("a.png", "b.jpg"):
        Image.fromarray(rng.integers(0, 255, (30, 20, 3), dtype=np.uint8)).save(tmp_path / "imgs" / name)
    return tmp_path


def test_one_image(files: Path, capsys):
    out = files / "heat.png"
    rc = main(["explain", f"{files}/small.py:make", "--image", str(files / "imgs" / "a.png"), "--target", "2",
               "-o", str(out), "--method", "eb"])
    assert rc == 0
    with Image.open(out) as im:
        assert im.size == (12, 16)  # the model's input size, (W, H)
    assert "target 2, eb" in capsys.readouterr().out


def test_folder_and_comparison(files: Path):
    out = files / "maps"
    rc = main(["explain", f"{files}/small.py:make", "--image", str(files / "imgs"), "-o", str(out),
               "--compare-uncanonized", "--method", "lrp-gamma", "--gamma", "conv1=0.5,classifier=0", "--quiet"])
    assert rc == 0
    assert sorted(p.name for p in out.iterdir()) == ["a.png", "b.png"]
    with Image.open(out / "a.png") as im:
        assert im.size == (12 + 4 + 12, 16)  # original | gap | canonized


@pytest.mark.parametrize("args,message", [
    (["-o", "x.jpg"], "PNG"),
    (["-o", "x.png", "--gamma", "conv1=abc"], "GROUP=VALUE"),
    (["-o", "x.png", "--method", "lrp-gamma", "--gamma", "conv7=1"], "conv7"),
    (["-o", "x.png", "--target", "5"], "out of range"),
])
def test_errors_exit_2(files: Path, capsys, args, message):
    rc = main(["explain", f"{files}/small.py:make", "--image", str(files / "imgs" / "a.png"), "--quiet",
               *[a if a not in ("x.png", "x.jpg") else str(files / a) for a in args]])
    assert rc == 2
    assert message in capsys.readouterr().err


def test_missing_image_exit_2(files: Path, capsys):
    assert main(["explain", f"{files}/small.py:make", "--image", str(files / "nope.png"), "-o",
                 str(files / "h.png")]) == 2
    assert "no such image" in capsys.readouterr().err


def test_saved_canonical_model_is_explained_as_is(files: Path, capsys):
    canon = files / "canon.pt"
    assert main([f"{files}/small.py:make", "-o", str(canon), "--quiet"]) == 0
    capsys.readouterr()
    base = ["explain", str(canon), "--trust-pickle", "--input-shape", "1,3,16,12",
            "--image", str(files / "imgs" / "a.png"), "-o", str(files / "h.png")]
    assert main(base) == 0
    out = capsys.readouterr().out
    assert "VERIFIED" not in out and "wrote" in out  # not canonized again
    assert main([*base, "--compare-uncanonized"]) == 2
    assert "already canonical" in capsys.readouterr().err
