"""Invariance pairs: two models that compute the same function but are written down differently.

Rule-based explanations (LRP) of the two differ; after canonization they must agree.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from .zoo import randomize_bn


def split_conv(model: nn.Module, name: str) -> nn.Module:
    """Copy of ``model`` whose conv ``name`` becomes that conv (without bias) → an identity 1×1 conv.

    The 1×1 conv has identity weights and carries the original bias, so the copy computes
    exactly the same function with one more linear layer.
    """
    new = copy.deepcopy(model)
    conv = new.get_submodule(name)
    if not isinstance(conv, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
        raise TypeError(f"{name} is a {type(conv).__name__}, not a Conv")
    first = copy.deepcopy(conv)
    first.bias = None
    n, dims = conv.out_channels, len(conv.kernel_size)
    second = type(conv)(n, n, 1, bias=conv.bias is not None, dtype=conv.weight.dtype)
    with torch.no_grad():
        second.weight.copy_(torch.eye(n, dtype=conv.weight.dtype).reshape((n, n) + (1,) * dims))
        if conv.bias is not None:
            second.bias.copy_(conv.bias)
    parent_name, _, leaf = name.rpartition(".")
    new.get_submodule(parent_name).add_module(leaf, nn.Sequential(first, second))
    return new


def vgg16_bn_split_pair(seed: int = 0, layer: str = "features.10",
                        input_shape: tuple[int, ...] = (4, 3, 32, 32)) -> tuple[nn.Module, nn.Module]:
    """torchvision VGG-16-BN (randomized, calibrated BN) and the same model with ``layer`` split in two.

    Returns
    -------
    original, split
        Both in eval mode; ``split`` is :func:`split_conv` of ``original``.
    """
    import torchvision

    torch.manual_seed(seed)
    model = randomize_bn(torchvision.models.vgg16_bn(weights=None), seed=seed, input_shape=input_shape)
    return model, split_conv(model, layer).eval()


def densenet_prefolded_pair(name: str = "densenet121", seed: int = 0,
                            input_shape: tuple[int, ...] = (2, 3, 32, 32)) -> tuple[nn.Module, nn.Module]:
    """torchvision DenseNet (randomized, calibrated BN) and a copy with every ``norm2`` folded into ``conv1`` by hand.

    ``conv1 → norm2`` is ``s·conv1(x) + t`` per channel: the copy's ``conv1`` gets weights
    ``s[o]·W[o]`` and bias ``t``, and ``norm2`` becomes the identity.

    Returns
    -------
    original, prefolded
        Both in eval mode and float64 (folding in float32 would change the function by ~1e-6).
    """
    import torchvision

    torch.manual_seed(seed)
    model = randomize_bn(torchvision.models.get_model(name, weights=None), seed=seed, input_shape=input_shape)
    model = model.double()
    folded = copy.deepcopy(model)
    for layer in folded.modules():
        if not (hasattr(layer, "conv1") and hasattr(layer, "norm2")):
            continue
        bn, conv = layer.norm2, layer.conv1
        s = bn.weight.detach() / torch.sqrt(bn.running_var + bn.eps)
        t = bn.bias.detach() - bn.running_mean * s
        new = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding, bias=True,
                        dtype=torch.float64)
        with torch.no_grad():
            new.weight.copy_(conv.weight * s.reshape(-1, 1, 1, 1))
            new.bias.copy_(t)
        layer.conv1, layer.norm2 = new, nn.Identity()
    return model, folded.eval()
