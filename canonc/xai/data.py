"""Evaluation data with ground-truth localisation: one entry point, :func:`load_data`.

``load_data(spec)`` understands

- ``shapes:N`` / ``shapes:N:SEED`` — the synthetic shapes benchmark (:func:`shapes_benchmark`,
  default seed :data:`TEST_SEED`, the held-out split), 64 px unless ``size`` is given;
- ``PATH`` — a Pascal-VOC root with segmentation masks (``PATH:SPLIT`` picks the image list,
  default ``val``), or an ImageNet-style folder of class folders with VOC XML boxes;
  both are resized to ``size`` (default 224).
"""

from __future__ import annotations

from pathlib import Path

from ..errors import InputError
from .data_benchmark import IMAGENET_MEAN, IMAGENET_STD, Benchmark, box_mask, normalise
from .data_folders import image_folder_benchmark
from .data_shapes import SHAPE_CLASSES, TEST_SEED, shapes_benchmark
from .data_voc import VOC_CLASSES, is_voc_root, voc_segmentation_benchmark

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "SHAPE_CLASSES", "TEST_SEED", "VOC_CLASSES", "Benchmark", "box_mask",
           "load_data", "normalise", "shapes_benchmark"]

SHAPES_SIZE = 64
FOLDER_SIZE = 224


def _shapes(spec: str, size: int | None) -> Benchmark:
    parts = spec.split(":")[1:]
    try:
        if not 1 <= len(parts) <= 2:
            raise ValueError
        n, seed = int(parts[0]), int(parts[1]) if len(parts) == 2 else TEST_SEED
    except ValueError:
        raise InputError(f"data '{spec}': write shapes:N or shapes:N:SEED with whole numbers, e.g. shapes:256") from None
    return shapes_benchmark(n, size=size or SHAPES_SIZE, seed=seed)


def load_data(spec: str, *, size: int | None = None) -> Benchmark:
    """The benchmark named by ``spec`` (see the module docstring).

    Parameters
    ----------
    spec : str
        ``shapes:N[:SEED]``, a VOC root (``PATH[:SPLIT]``) or an image folder.
    size : int, optional
        Image side in pixels (default 64 for shapes, 224 for folders).

    Returns
    -------
    Benchmark
    """
    if size is not None and size < 16:
        raise InputError(f"image size {size} is too small; use at least 16 pixels")
    if spec.startswith("shapes:"):
        return _shapes(spec, size)
    path, split = Path(spec), None
    if not path.exists() and ":" in spec:
        head, split = spec.rsplit(":", 1)
        path = Path(head)
    if not path.is_dir():
        raise InputError(f"data '{spec}': not shapes:N[:SEED] and no such folder; "
                         "give shapes:256, a VOC root or a folder of class folders")
    if is_voc_root(path):
        return voc_segmentation_benchmark(path, size or FOLDER_SIZE, split)
    if split is not None:
        raise InputError(f"data '{spec}': ':{split}' selects a list of a VOC root, but {path} has no "
                         "JPEGImages/ and SegmentationClass/")
    return image_folder_benchmark(path, size or FOLDER_SIZE)
