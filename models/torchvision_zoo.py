"""Every torchvision classifier at a small input size, with randomized BN (zoo tests, zoo table)."""

from __future__ import annotations

import torch
import torchvision
from torch import nn

from canonc.zoo import randomize_zero_weights

from .zoo import randomize_bn

SMALL = 64
# Models whose architecture fixes or bounds the input size: name prefix → (side, constructor kwargs).
_SIZES: dict[str, tuple[int, dict]] = {
    "inception_v3": (128, {}),
    "vit_h_14": (56, {"image_size": 56}),
    "vit_": (64, {"image_size": 64}),
    "maxvit_t": (224, {}),
}
# BN calibration runs in train mode, where some models run heads that eval skips and that
# need a larger input (inception_v3's auxiliary classifier needs 299 px).
_CALIBRATION_SIDE = {"inception_v3": 299}


def names() -> list[str]:
    """All torchvision classification model names."""
    return torchvision.models.list_models(module=torchvision.models)


# Peak bytes per parameter of one canonization: fp32 original, fp64 private copy, fp64
# rewritten layers, fp32 artifact.
BYTES_PER_PARAM = 24


def param_count(name: str) -> int:
    """Number of parameters of ``name``, counted on the meta device where its builder allows."""
    kwargs = next((k for prefix, (_, k) in _SIZES.items() if name.startswith(prefix)), {})
    try:
        with torch.device("meta"):
            model = torchvision.models.get_model(name, weights=None, **kwargs)
    except NotImplementedError:  # RegNet computes its widths with real tensors
        model = torchvision.models.get_model(name, weights=None, **kwargs)
    return sum(p.numel() for p in model.parameters())


def memory_shortfall(name: str) -> str:
    """Why ``name`` cannot be canonized in the memory available now, or ``''`` if it can."""
    need = param_count(name) * BYTES_PER_PARAM
    try:
        with open("/proc/meminfo") as f:
            info = dict(line.split(":", 1) for line in f)
        free = int(info["MemAvailable"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        return ""
    if need <= free:
        return ""
    return f"needs ~{need / 2**30:.0f} GiB of memory, {free / 2**30:.0f} GiB available"


def input_shape(name: str, batch: int = 1) -> tuple[int, int, int, int]:
    """The small input shape ``name`` is tested at."""
    side = next((s for prefix, (s, _) in _SIZES.items() if name.startswith(prefix)), SMALL)
    return (batch, 3, side, side)


def build(name: str, seed: int = 0) -> tuple[nn.Module, torch.Tensor]:
    """Random-weight ``name`` with calibrated, randomized BN, and an example input.

    Parameters
    ----------
    name : str
        A torchvision classification model name.
    seed : int
        Seed of the weights, the BN statistics and the example input.

    Returns
    -------
    model, example
        The model in eval mode and a ``(1, 3, H, W)`` float32 input.
    """
    kwargs = next((k for prefix, (_, k) in _SIZES.items() if name.startswith(prefix)), {})
    torch.manual_seed(seed)
    model = torchvision.models.get_model(name, weights=None, **kwargs)
    randomize_zero_weights(model, torch.Generator().manual_seed(seed))  # the ViTs' zero heads: else outputs are 0
    shape = input_shape(name)
    side = _CALIBRATION_SIDE.get(name, shape[-1])
    randomize_bn(model, seed=seed, input_shape=(4, 3, side, side))
    example = torch.randn(shape, generator=torch.Generator().manual_seed(seed))
    return model, example
