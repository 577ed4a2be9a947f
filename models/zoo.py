"""Zoo models with randomized BatchNorm statistics (a fresh BN is the identity and hides bugs)."""

from __future__ import annotations

import torch
from torch import nn

from canonc.errors import InputError
from canonc.zoo import calibrate_bn

_BN = nn.modules.batchnorm._BatchNorm


def randomize_bn(model: nn.Module, *, seed: int = 0, input_shape: tuple[int, ...] = (4, 3, 64, 64),
                 calibrate: bool = True, draw_first: bool = True) -> nn.Module:
    """Give every BN realistic statistics, in place, and return ``model`` in eval mode.

    Draw ``gamma ~ U(0.2, 2)`` with a random sign and about 5 % exact zeros, and
    ``beta ~ N(0, 0.5)``; calibrate (reset running stats, ``momentum=None``, two train-mode
    forwards on random inputs) so the statistics match what each BN really gets (DESIGN.md §5).

    ``draw_first=True`` (default) draws, then calibrates: every BN normalises what the
    randomized layers before it produce, so activations stay near unit scale at any depth
    (regnet_y_128gf verifies at 1e-13). ``draw_first=False`` calibrates, then draws (the
    order DESIGN.md §5 gives): activations then grow with depth (regnet_y_128gf outputs
    reach 1e8 and exact rewrites verify only near 1e-9), but LRP relevances stay small.
    """
    gen = torch.Generator().manual_seed(seed)
    bns = [m for m in model.modules() if isinstance(m, _BN) and m.track_running_stats]
    if draw_first:
        _draw_affine(bns, gen)
    if calibrate:
        calibrate_bn(model, bns, input_shape, gen)
    if not draw_first:
        _draw_affine(bns, gen)
    return model.eval()


def _draw_affine(bns: list[nn.Module], gen: torch.Generator) -> None:
    """``gamma ~ ±U(0.2, 2)`` with about 5 % exact zeros and ``beta ~ N(0, 0.5)`` for each affine BN."""
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


def load(name: str) -> tuple[nn.Module, tuple[int, ...]]:
    """A bundled model by name and its input shape.

    ``NAME-shapes`` (e.g. ``densenet121-shapes``) is a narrow topology trained on the shapes
    benchmark (:mod:`models.shapes`); any other ``NAME`` is a torchvision classifier with
    random weights and randomized BN.
    """
    import torchvision

    from .shapes import ARCHITECTURES, load_shapes

    if name in ARCHITECTURES:
        return load_shapes(name)
    if name not in torchvision.models.list_models(module=torchvision.models):
        raise InputError(f"models:{name} is not a bundled model; use a torchvision classifier name "
                         f"or one of {', '.join(ARCHITECTURES)}")
    torch.manual_seed(0)
    model = torchvision.models.get_model(name, weights=None)
    return randomize_bn(model), (1, 3, 224, 224)
