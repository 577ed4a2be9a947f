"""Narrow torchvision topologies trained on the shapes benchmark, and their checkpoints.

Each builder returns the named torchvision class with its layer structure, BatchNorm
placement and block counts intact; only the widths are reduced, so a 64 px model trains
on two CPU cores in minutes. ``load_shapes(NAME)`` serves ``models:NAME`` for the
checkpoints in ``models/checkpoints/`` (trained by ``python -m models.train_shapes NAME``).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from torch import nn
from torchvision.models import densenet, efficientnet, resnet, vgg

from canonc.errors import InputError

CHECKPOINTS = Path(__file__).parent / "checkpoints"
INPUT_SHAPE = (1, 3, 64, 64)
NUM_CLASSES = 6  # canonc.xai.data.SHAPE_CLASSES

# VGG "B" (VGG-13): ten 3x3 convs in five stages, each conv followed by BN + ReLU, widths / 8.
VGG13_NARROW = [8, 8, "M", 16, 16, "M", 32, 32, "M", 64, 64, "M", 64, 64, "M"]


def vgg13_bn(num_classes: int = NUM_CLASSES) -> vgg.VGG:
    """VGG-13-BN: cfg "B" with BN at an eighth of the width; three-layer classifier on a 2x2 pool."""
    model = vgg.VGG(vgg.make_layers(VGG13_NARROW, batch_norm=True), num_classes=num_classes)
    model.avgpool = nn.AdaptiveAvgPool2d((2, 2))
    width = VGG13_NARROW[-2] * 4
    model.classifier = nn.Sequential(
        nn.Linear(width, 128), nn.ReLU(True), nn.Dropout(0.2),
        nn.Linear(128, 128), nn.ReLU(True), nn.Dropout(0.2),
        nn.Linear(128, num_classes),
    )
    return model


class NarrowResNet(resnet.ResNet):
    """torchvision's ResNet (stem, four stages, ``fc``) with the stage widths given.

    ``ResNet.__init__`` fixes the widths 64-128-256-512; this builds the same modules
    with ``widths`` instead and keeps torchvision's ``forward`` and ``_make_layer``.
    """

    def __init__(self, block: type[resnet.BasicBlock], layers: list[int], widths: tuple[int, int, int, int],
                 num_classes: int) -> None:
        nn.Module.__init__(self)
        self._norm_layer = nn.BatchNorm2d
        self.inplanes, self.dilation, self.groups, self.base_width = widths[0], 1, 1, 64
        self.conv1 = nn.Conv2d(3, widths[0], kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(block, widths[0], layers[0])
        self.layer2 = self._make_layer(block, widths[1], layers[1], stride=2)
        self.layer3 = self._make_layer(block, widths[2], layers[2], stride=2)
        self.layer4 = self._make_layer(block, widths[3], layers[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(widths[3] * block.expansion, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")


def resnet18(num_classes: int = NUM_CLASSES) -> resnet.ResNet:
    """ResNet-18: BasicBlock x [2, 2, 2, 2] at a quarter of the width (16-32-64-128)."""
    return NarrowResNet(resnet.BasicBlock, [2, 2, 2, 2], (16, 32, 64, 128), num_classes)


def efficientnet_b0(num_classes: int = NUM_CLASSES) -> efficientnet.EfficientNet:
    """EfficientNet-B0: torchvision's B0 block config (depth 1.0) at width multiplier 0.25.

    torchvision draws the head from ``U(±1/sqrt(num_classes))``, sized for 1000 classes; with
    six classes that saturates the softmax at the start, so the head gets PyTorch's default
    ``Linear`` initialisation instead. Stochastic depth is off (probability 0; the modules
    stay): the narrow net then learns within the training budget.
    """
    setting, last_channel = efficientnet._efficientnet_conf("efficientnet_b0", width_mult=0.25, depth_mult=1.0)
    model = efficientnet.EfficientNet(setting, dropout=0.2, stochastic_depth_prob=0.0, last_channel=last_channel,
                                      num_classes=num_classes)
    model.classifier[1].reset_parameters()
    return model


def densenet121(num_classes: int = NUM_CLASSES) -> densenet.DenseNet:
    """DenseNet-121: dense blocks (6, 12, 24, 16) with growth rate 8 and 16 stem features (32, 64 in the original)."""
    return densenet.DenseNet(growth_rate=8, block_config=(6, 12, 24, 16), num_init_features=16, num_classes=num_classes)


ARCHITECTURES: dict[str, Callable[[], nn.Module]] = {
    "vgg13_bn-shapes": vgg13_bn,
    "resnet18-shapes": resnet18,
    "efficientnet_b0-shapes": efficientnet_b0,
    "densenet121-shapes": densenet121,
}


def checkpoint_paths(name: str) -> tuple[Path, Path]:
    """The weights (``.safetensors``) and sidecar (``.json``) paths of ``name``."""
    return CHECKPOINTS / f"{name}.safetensors", CHECKPOINTS / f"{name}.json"


def load_shapes(name: str) -> tuple[nn.Module, tuple[int, ...]]:
    """The trained ``name`` (a key of :data:`ARCHITECTURES`) in eval mode, and its input shape."""
    from safetensors.torch import load_file

    weights, _ = checkpoint_paths(name)
    if not weights.is_file():
        raise InputError(f"models:{name} has no checkpoint {weights}; train it: python -m models.train_shapes {name}")
    model = ARCHITECTURES[name]()
    model.load_state_dict(load_file(weights))
    return model.eval(), INPUT_SHAPE


def sidecar(name: str) -> dict:
    """The JSON sidecar of ``name``'s checkpoint (test accuracy, training time, seed, recipe)."""
    return json.loads(checkpoint_paths(name)[1].read_text())
