"""ImageNet-style image folders with Pascal-VOC XML box annotations → a :class:`Benchmark`.

Layout: ``ROOT/CLASS/NAME.jpg`` (any of :data:`IMAGE_SUFFIXES`), one folder per class,
labels in sorted folder order (torchvision's ``ImageFolder`` convention). The boxes of
``NAME`` are read from ``ROOT/CLASS/NAME.xml`` or ``ROOT/Annotations/CLASS/NAME.xml``;
the objects whose ``<name>`` is the class folder's name are the class's boxes (all
objects when none is named so). Only boxes are annotated, so the mask is the box mask.
Images are resized to ``size × size`` (no crop), box corners scaled with them.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from ..errors import InputError
from .data_benchmark import Benchmark, normalise

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
ANNOTATIONS = "Annotations"


def read_image(path: Path, size: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """RGB pixels ``(3, size, size)`` in ``[0, 1]`` (bilinear resize) and the original ``(width, height)``."""
    try:
        with Image.open(path) as im:
            rgb = im.convert("RGB")
    except (OSError, UnidentifiedImageError) as exc:
        raise InputError(f"cannot read image {path}: {exc}; remove or replace the file") from exc
    original = rgb.size
    resized = np.asarray(rgb.resize((size, size), Image.BILINEAR), dtype=np.float32) / 255.0
    return torch.from_numpy(resized).permute(2, 0, 1), original


def voc_boxes(path: Path) -> tuple[tuple[int, int], list[tuple[str, float, float, float, float]]]:
    """The image ``(width, height)`` and ``(name, xmin, ymin, xmax, ymax)`` objects of a VOC XML file."""
    try:
        root = ET.parse(path).getroot()
        width, height = (int(root.findtext(f"size/{k}")) for k in ("width", "height"))
        objects = [(obj.findtext("name").strip(), *(float(obj.findtext(f"bndbox/{k}"))
                                                    for k in ("xmin", "ymin", "xmax", "ymax")))
                   for obj in root.iter("object")]
    except (ET.ParseError, TypeError, ValueError, AttributeError) as exc:
        raise InputError(f"{path} is not a Pascal-VOC annotation with size and object/bndbox entries ({exc})") from exc
    return (width, height), objects


def boxes_mask(boxes: list[tuple[float, float, float, float]], image_size: tuple[int, int], size: int) -> torch.Tensor:
    """``(1, size, size)`` bool union of VOC boxes (1-based, inclusive pixel corners) scaled to ``size``."""
    width, height = image_size
    mask = torch.zeros(1, size, size, dtype=torch.bool)
    for xmin, ymin, xmax, ymax in boxes:
        x0, x1 = int(np.floor((xmin - 1) * size / width)), int(np.ceil(xmax * size / width))
        y0, y1 = int(np.floor((ymin - 1) * size / height)), int(np.ceil(ymax * size / height))
        mask[0, max(y0, 0):min(y1, size), max(x0, 0):min(x1, size)] = True
    return mask


def class_boxes(objects: list[tuple[str, float, float, float, float]], name: str) -> list[tuple[float, ...]]:
    """The boxes of the objects called ``name``; all boxes when no object is called so."""
    named = [o[1:] for o in objects if o[0] == name]
    return named or [o[1:] for o in objects]


def _annotation(root: Path, image: Path) -> Path:
    for candidate in (image.with_suffix(".xml"), root / ANNOTATIONS / image.parent.name / f"{image.stem}.xml"):
        if candidate.is_file():
            return candidate
    raise InputError(f"{image} has no box annotation; put {image.stem}.xml next to it or under "
                     f"{root / ANNOTATIONS / image.parent.name}/")


def image_folder_benchmark(root: Path, size: int = 224) -> Benchmark:
    """Load an ImageNet-style folder with VOC XML boxes (see the module docstring)."""
    classes = sorted(d.name for d in root.iterdir() if d.is_dir() and d.name != ANNOTATIONS)
    files = [(label, f) for label, c in enumerate(classes) for f in sorted((root / c).iterdir())
             if f.suffix.lower() in IMAGE_SUFFIXES]
    if not files:
        raise InputError(f"{root} holds no class folders with images ({', '.join(IMAGE_SUFFIXES)}); "
                         "expected ROOT/CLASS/IMAGE with a VOC XML per image")
    pixels, boxes = [], []
    for label, path in files:
        image, original = read_image(path, size)
        (width, height), objects = voc_boxes(_annotation(root, path))
        if (width, height) != original:
            raise InputError(f"{path} is {original[0]}x{original[1]} but its annotation says {width}x{height}")
        if not objects:
            raise InputError(f"the annotation of {path} has no <object> box; annotate the object or remove the image")
        pixels.append(image)
        boxes.append(boxes_mask(class_boxes(objects, classes[label]), original, size))
    box = torch.stack(boxes)
    labels = torch.tensor([label for label, _ in files], dtype=torch.long)
    return Benchmark(normalise(torch.stack(pixels)), labels, box, box.clone(), classes, str(root))
