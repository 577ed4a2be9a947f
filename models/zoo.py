"""Zoo models with randomized BatchNorm statistics (a fresh BN is the identity and hides bugs)."""

from __future__ import annotations

import torch
from torch import nn

_BN = nn.modules.batchnorm._BatchNorm


def randomize_bn(model: nn.Module, *, seed: int = 0, input_shape: tuple[int, ...] = (4, 3, 64, 64),
                 calibrate: bool = True) -> nn.Module:
    """Give every BN realistic statistics, in place, and return ``model`` in eval mode.

    Calibrate (reset running stats, ``momentum=None``, two train-mode forwards on random
    inputs), then draw ``gamma ~ U(0.2, 2)`` with a random sign and about 5 % exact zeros,
    and ``beta ~ N(0, 0.5)`` (DESIGN.md §5).
    """
    gen = torch.Generator().manual_seed(seed)
    bns = [m for m in model.modules() if isinstance(m, _BN) and m.track_running_stats]
    if calibrate and bns:
        for m in bns:
            m.reset_running_stats()
            m.momentum = None
        model.train()
        with torch.no_grad():
            for _ in range(2):
                model(torch.randn(input_shape, generator=gen))
    model.eval()
    with torch.no_grad():
        for m in bns:
            if not m.affine:
                continue
            n = m.num_features
            gamma = torch.empty(n).uniform_(0.2, 2.0, generator=gen)
            gamma *= torch.where(torch.rand(n, generator=gen) < 0.5, -1.0, 1.0)
            gamma[torch.rand(n, generator=gen) < 0.05] = 0.0
            m.weight.copy_(gamma)
            m.bias.copy_(torch.randn(n, generator=gen) * 0.5)
    return model


def load(name: str) -> tuple[nn.Module, tuple[int, ...]]:
    """A bundled model by name: ``NAME`` is a torchvision classifier with randomized BN."""
    import torchvision

    if name not in torchvision.models.list_models(module=torchvision.models):
        raise KeyError(name)
    torch.manual_seed(0)
    model = torchvision.models.get_model(name, weights=None)
    return randomize_bn(model), (1, 3, 224, 224)
