"""Shared test helpers: wild BatchNorm statistics for small unit graphs (DESIGN.md §5)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from canonc.fuzz import wild_bn_stats


def _wild_bn(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give every BN wild statistics in place and return ``model`` in eval mode.

    ``mean ~ N(0, 1)``, ``var ~ LogUniform(1e-2, 10)``, ``gamma ~ ±U(0.2, 2)`` with about
    10 % exact zeros, ``beta ~ N(0, 0.5)``; ``eps`` stays as constructed.
    """
    gen = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            wild_bn_stats(m, gen)
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
