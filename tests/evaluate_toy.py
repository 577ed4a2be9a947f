"""A tiny BN classifier of the six shape classes for the evaluation tests (randomized BN, 32 px)."""

from __future__ import annotations

import torch
from torch import nn

from models.zoo import randomize_bn

INPUT_SHAPE = (1, 3, 32, 32)


def tiny_net() -> nn.Module:
    """Conv-BN-ReLU ×2, pooled, linear head over the six shape classes; randomized BN."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
                          nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(32, 6))
    return randomize_bn(model, input_shape=(4, *INPUT_SHAPE[1:]))
