"""The trained shapes zoo: each checkpoint loads as ``models:NAME``, meets the accuracy bar and canonizes."""

from __future__ import annotations

import pytest
import torch

from canonc import canonize, load_model
from canonc.xai.data import TEST_SEED, shapes_benchmark
from models.shapes import ARCHITECTURES, checkpoint_paths, sidecar
from models.train_shapes import TEST_IMAGES, accuracy

# BatchNorm layers of each topology: the same as the full-width torchvision model's.
BN_COUNT = {"vgg13_bn-shapes": 10, "resnet18-shapes": 20, "efficientnet_b0-shapes": 49, "densenet121-shapes": 121}
SLOW = {"efficientnet_b0-shapes", "densenet121-shapes"}
# BNs after a concat cannot merge left: strategy "auto" turns them into ThreshReLU and merges them
# right (DenseNet-121: the 58 dense layers' norm1, 3 transitions and norm5).
THRESH_RELU = {"vgg13_bn-shapes": 0, "resnet18-shapes": 0, "efficientnet_b0-shapes": 0, "densenet121-shapes": 62}


@pytest.fixture(scope="module")
def test_split():
    return shapes_benchmark(TEST_IMAGES, seed=TEST_SEED)  # the held-out images the sidecar's accuracy is on


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n in SLOW else n for n in ARCHITECTURES])
def test_checkpoint_is_accurate_and_canonizes(name, test_split):
    model = load_model(f"models:{name}")
    assert not model.training
    score = accuracy(model, test_split)
    assert score >= 0.95
    assert abs(score - sidecar(name)["test_accuracy"]) <= 2 / TEST_IMAGES  # the recorded figure reproduces
    res = canonize(model, torch.randn(1, 3, 64, 64))
    report = res.report.to_dict()
    assert report["verified"] is True
    assert (report["bn_before"], report["bn_after"]) == (BN_COUNT[name], 0)
    assert sum(r["rule"] == "thresh-relu" for r in report["rewrites"]) == THRESH_RELU[name]
    with torch.no_grad():
        same = (res.module(test_split.images).argmax(1) == model(test_split.images).argmax(1)).float().mean()
    assert same == 1.0


@pytest.mark.parametrize("name", list(ARCHITECTURES))
def test_sidecar_matches_the_checkpoint(name):
    weights, _ = checkpoint_paths(name)
    assert weights.stat().st_size <= 5 * 2**20
    record = sidecar(name)
    assert record["name"] == name and record["test_seed"] == TEST_SEED and record["test_accuracy"] >= 0.95
    assert set(record["recipe"]) >= {"epochs", "images_per_epoch", "lr", "batch_size"}
    assert record["train_wall_s"] > 0 and record["train_cpu_s"] > 0
    # the budget, as recorded when the checkpoint was trained: at most 5 minutes on 2 CPU cores
    assert record["train_wall_s"] <= 300 and record["threads"] * record.get("processes", 1) <= 2
