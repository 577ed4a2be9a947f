"""Shared test helpers: wild BatchNorm statistics for small unit graphs (DESIGN.md §5)."""

from __future__ import annotations

import pytest
import torch
from torch import nn


def _wild_bn(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give every BN wild statistics in place and return ``model`` in eval mode.

    ``mean ~ N(0, 1)``, ``var ~ LogUniform(1e-2, 10)``, ``gamma ~ ±U(0.2, 2)`` with about
    10 % exact zeros, ``beta ~ N(0, 0.5)``; ``eps`` stays as constructed.
    """
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if not isinstance(m, nn.modules.batchnorm._BatchNorm):
                continue
            n = m.num_features
            if m.track_running_stats:
                m.running_mean.copy_(torch.randn(n, generator=gen))
                m.running_var.copy_(torch.exp(torch.empty(n).uniform_(-4.6, 2.3, generator=gen)))
            if m.affine:
                gamma = torch.empty(n).uniform_(0.2, 2.0, generator=gen)
                gamma *= torch.where(torch.rand(n, generator=gen) < 0.5, -1.0, 1.0)
                gamma[torch.rand(n, generator=gen) < 0.1] = 0.0
                m.weight.copy_(gamma)
                m.bias.copy_(torch.randn(n, generator=gen) * 0.5)
    return model.eval()


@pytest.fixture
def wild_bn():
    """The function ``wild_bn(model, seed=0)`` (see :func:`_wild_bn`)."""
    return _wild_bn


@pytest.fixture
def one_thread():
    """Run the test on one torch thread (small models; the CI machine has 2 shared cores)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
