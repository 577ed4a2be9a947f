"""The :class:`Benchmark` container: images with labels and ground-truth localisation masks.

Images are stored normalised with the ImageNet mean and standard deviation, the input
convention of canonc's zoo and of ``canonc explain``; :meth:`Benchmark.pixels` undoes it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ..errors import InputError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _mean_std() -> tuple[torch.Tensor, torch.Tensor]:
    return torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)


def normalise(pixels: torch.Tensor) -> torch.Tensor:
    """``(N, 3, H, W)`` pixels in ``[0, 1]`` → float32 model inputs (ImageNet mean/std)."""
    mean, std = _mean_std()
    return ((pixels.float() - mean) / std).contiguous()


def box_mask(mask: torch.Tensor) -> torch.Tensor:
    """The bounding box of each ``(N, 1, H, W)`` bool mask as a bool mask (empty stays empty)."""
    rows, cols = mask.any(-1, keepdim=True), mask.any(-2, keepdim=True)
    within_rows = (rows.cumsum(-2) > 0) & (rows.flip(-2).cumsum(-2).flip(-2) > 0)
    within_cols = (cols.cumsum(-1) > 0) & (cols.flip(-1).cumsum(-1).flip(-1) > 0)
    return within_rows & within_cols


@dataclass
class Benchmark:
    """Images, class labels and ground-truth masks of the class-defining object.

    Attributes
    ----------
    images : Tensor
        ``(N, 3, H, W)`` float32, normalised with the ImageNet mean and std.
    labels : Tensor
        ``(N,)`` long class indices into ``classes``.
    masks : Tensor
        ``(N, 1, H, W)`` bool segmentation of the class-defining object (the box where
        only boxes are annotated).
    boxes : Tensor
        ``(N, 1, H, W)`` bool bounding-box mask of that object.
    classes : list of str
        Class names.
    name : str
        Where the data came from, e.g. ``"shapes:256:7"``.
    """

    images: torch.Tensor
    labels: torch.Tensor
    masks: torch.Tensor
    boxes: torch.Tensor
    classes: list[str]
    name: str = ""

    def __post_init__(self) -> None:
        n, _, h, w = self.images.shape
        if self.labels.shape != (n,):
            raise InputError(f"benchmark has {n} images but labels of shape {tuple(self.labels.shape)}")
        for field_name in ("masks", "boxes"):
            if getattr(self, field_name).shape != (n, 1, h, w):
                raise InputError(f"benchmark {field_name} have shape {tuple(getattr(self, field_name).shape)}, "
                                 f"expected {(n, 1, h, w)}")

    def __len__(self) -> int:
        return self.images.shape[0]

    def subset(self, idx: Sequence[int] | slice | torch.Tensor) -> Benchmark:
        """The samples at ``idx`` (indices, a slice or a bool mask) as a new benchmark."""
        if isinstance(idx, slice):
            index = torch.arange(len(self))[idx]
        else:
            index = torch.as_tensor(idx)
            index = index.nonzero().flatten() if index.dtype == torch.bool else index.long().flatten()
        return Benchmark(self.images[index], self.labels[index], self.masks[index], self.boxes[index],
                         list(self.classes), self.name)

    def pixels(self) -> torch.Tensor:
        """The images as ``(N, 3, H, W)`` pixels in ``[0, 1]`` (for display)."""
        mean, std = _mean_std()
        return (self.images * std + mean).clamp(0, 1)
