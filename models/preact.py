"""A small hand-made pre-activation network (BN → ReLU → conv after every residual add).

Its pre-activation BNs cannot merge into a preceding layer, and the convs they feed
are zero-padded (padding 1 and 2), strided, dilated and grouped: canonization needs
ThreshReLU, merge-right and bias maps. One block pads with ``reflect``, which commutes
with a per-channel affine map and needs no bias map.
"""

from __future__ import annotations

import torch
from torch import nn

from .zoo import randomize_bn


class PreActBlock(nn.Module):
    """``x + conv2(relu(norm2(conv1(relu(norm1(x))))))`` with a 1×1 shortcut when the shape changes."""

    def __init__(self, cin: int, cout: int, stride: int = 1, dilation: int = 1, groups: int = 1,
                 padding_mode: str = "zeros") -> None:
        super().__init__()
        self.norm1 = nn.BatchNorm2d(cin)
        self.relu1 = nn.ReLU()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, padding=dilation, dilation=dilation, groups=groups,
                               bias=False, padding_mode=padding_mode)
        self.norm2 = nn.BatchNorm2d(cout)
        self.relu2 = nn.ReLU()
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.shortcut = nn.Conv2d(cin, cout, 1, stride, bias=False) if stride != 1 or cin != cout else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu1(self.norm1(x))
        shortcut = self.shortcut(out) if self.shortcut is not None else x
        out = self.conv2(self.relu2(self.norm2(self.conv1(out))))
        return out + shortcut


class PreActNet(nn.Module):
    """Stem conv → max-pool → four pre-activation blocks → BN → ReLU → avg-pool → Linear."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, padding=1)
        self.pool = nn.MaxPool2d(2)
        self.blocks = nn.Sequential(
            PreActBlock(16, 16),                      # padding 1
            PreActBlock(16, 32, stride=2, groups=4),  # stride 2, groups 4
            PreActBlock(32, 32, dilation=2),          # padding 2, dilation 2
            PreActBlock(32, 32, padding_mode="reflect"),
        )
        self.norm = nn.BatchNorm2d(32)
        self.relu = nn.ReLU()
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(32, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks(self.pool(self.stem(x)))
        return self.fc(torch.flatten(self.avgpool(self.relu(self.norm(x))), 1))


def preact_net(seed: int = 0) -> nn.Module:
    """:class:`PreActNet` with random weights and randomized, calibrated BN statistics (eval mode)."""
    torch.manual_seed(seed)
    return randomize_bn(PreActNet(), seed=seed, input_shape=(4, 3, 32, 32))


def wild_bn(bn: nn.modules.batchnorm._BatchNorm, seed: int, zeros: int = 1) -> nn.modules.batchnorm._BatchNorm:
    """Give ``bn`` wild statistics (DESIGN.md §5) in place and return it in eval mode.

    ``mean ~ N(0, 1)``, ``var ~ LogUniform(1e-2, 10)``, ``eps ∈ {1e-5, 1e-3}``,
    ``|gamma| ~ U(0.2, 2)`` with random signs and the first ``zeros`` gammas exactly 0
    (half of them with ``beta <= 0``, the case that made the paper's ThreshReLU NaN),
    ``beta ~ N(0, 1)``.
    """
    gen = torch.Generator().manual_seed(seed)
    n = bn.num_features
    with torch.no_grad():
        bn.running_mean.copy_(torch.randn(n, generator=gen))
        bn.running_var.copy_(torch.exp(torch.empty(n).uniform_(-4.6, 2.3, generator=gen)))
        bn.eps = (1e-5, 1e-3)[int(torch.randint(2, (1,), generator=gen))]
        if bn.affine:
            gamma = torch.empty(n).uniform_(0.2, 2.0, generator=gen)
            gamma *= torch.where(torch.rand(n, generator=gen) < 0.5, -1.0, 1.0)
            gamma[:zeros] = 0.0
            beta = torch.randn(n, generator=gen)
            beta[: zeros // 2 + zeros % 2] = -beta[: zeros // 2 + zeros % 2].abs()
            bn.weight.copy_(gamma)
            bn.bias.copy_(beta)
    return bn.eval()
