"""Layer groups from execution order: the poster's VGG-13-BN groups, specs, γ per group."""

from __future__ import annotations

import pytest
import torch
import torchvision

import canonc
from canonc.errors import InputError
from canonc.xai import layer_groups
from canonc.xai.methods import group_gammas
from models.zoo import randomize_bn


@pytest.fixture(scope="module")
def vgg13():
    torch.manual_seed(0)
    model = randomize_bn(torchvision.models.vgg13_bn(), input_shape=(2, 3, 32, 32))
    return canonc.canonize(model, torch.randn(1, 3, 32, 32), verify=False).module


def _convs(indices: range) -> list[str]:
    """Names of VGG-13-BN's convs (1-based) in ``features`` after BN removal keeps the original names."""
    names = ["features.0", "features.3", "features.7", "features.10", "features.14",
             "features.17", "features.21", "features.24", "features.28", "features.31"]
    return [names[i - 1] for i in indices]


def test_vgg13_default_groups_are_the_posters(vgg13):
    groups = layer_groups(vgg13)
    assert list(groups) == ["conv1-3", "conv4-7", "conv8-10", "classifier"]
    assert groups["conv1-3"] == _convs(range(1, 4))
    assert groups["conv4-7"] == _convs(range(4, 8))
    assert groups["conv8-10"] == _convs(range(8, 11))
    assert groups["classifier"] == ["classifier.0", "classifier.3", "classifier.6"]


def test_vgg13_explicit_spec_equals_auto(vgg13):
    assert layer_groups(vgg13, "3,4,3,classifier") == layer_groups(vgg13, "auto:4")


def test_vgg13_other_specs(vgg13):
    assert list(layer_groups(vgg13, "auto:2")) == ["conv1-10", "classifier"]
    assert list(layer_groups(vgg13, "5,5,classifier")) == ["conv1-5", "conv6-10", "classifier"]
    whole = layer_groups(vgg13, "10,3")  # no classifier token: the counts cover every layer
    assert list(whole) == ["layer1-10", "layer11-13"]


def test_vgg16_auto_matches_paper_code():
    model = torchvision.models.vgg16()
    groups = layer_groups(model, "auto:4")
    assert [len(v) for v in groups.values()] == [4, 5, 4, 3]  # convs 1-4, 5-9, 10-13, fc


@pytest.mark.parametrize("spec,message", [
    ("3,4,classifier", "add up to 7"),
    ("3,x,3,classifier", "counts like"),
    ("auto:1", "at least 2"),
    ("auto:z", "integer K"),
    ("0,10,classifier", "positive"),
])
def test_bad_specs(vgg13, spec, message):
    with pytest.raises(InputError, match=message):
        layer_groups(vgg13, spec)


def test_group_gammas(vgg13):
    groups = layer_groups(vgg13)
    gammas = group_gammas(groups, {"conv1-3": 0.5, "classifier": 0.0})
    assert gammas == {"conv1-3": 0.5, "conv4-7": 0.25, "conv8-10": 0.25, "classifier": 0.0}
    assert set(group_gammas(groups, 1.0).values()) == {1.0}
    with pytest.raises(InputError, match="conv1-4"):
        group_gammas(groups, {"conv1-4": 0.1})


def test_small_model_gets_fewer_groups():
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Flatten(), torch.nn.Linear(4, 2))
    assert layer_groups(model) == {"conv1": ["0"], "classifier": ["2"]}
    mlp = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    assert layer_groups(mlp, "auto:4") == {"layer1": ["0"], "layer2": ["2"]}
