"""Pascal-VOC segmentation data (``JPEGImages`` + ``SegmentationClass`` + an image list) → a :class:`Benchmark`.

Each listed image's label is the VOC class that covers the most pixels of its palette
PNG (index ``k`` is ``VOC_CLASSES[k - 1]``; 0 background and 255 void are no class);
its mask is that class's pixels. The box mask is the union of that class's boxes in
``Annotations/NAME.xml`` when the file exists, else the bounding box of the mask.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from ..errors import InputError
from .data_benchmark import Benchmark, box_mask, normalise
from .data_folders import boxes_mask, class_boxes, read_image, voc_boxes

VOC_CLASSES = ("aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
               "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
               "train", "tvmonitor")
SEGMENTATION = "SegmentationClass"


def is_voc_root(path: Path) -> bool:
    """Whether ``path`` looks like a VOC root with segmentation masks."""
    return (path / SEGMENTATION).is_dir() and (path / "JPEGImages").is_dir()


def _image_list(root: Path, split: str | None) -> list[str]:
    lists = root / "ImageSets" / "Segmentation"
    available = sorted(p.stem for p in lists.glob("*.txt"))
    if split is None:
        split = "val" if "val" in available else (available[0] if len(available) == 1 else None)
    if split is None or split not in available:
        raise InputError(f"{root}: choose a segmentation list as PATH:SPLIT, one of: {', '.join(available) or 'none'} "
                         f"(ImageSets/Segmentation/*.txt)")
    names = [line.split()[0] for line in (lists / f"{split}.txt").read_text().splitlines() if line.strip()]
    if not names:
        raise InputError(f"{lists / f'{split}.txt'} lists no images")
    return names


def _segmentation(path: Path) -> np.ndarray:
    try:
        with Image.open(path) as im:
            if im.mode not in ("P", "L"):
                raise InputError(f"{path} is a {im.mode} image; a VOC segmentation mask is a palette (P) PNG")
            return np.asarray(im)
    except FileNotFoundError as exc:
        raise InputError(f"missing segmentation mask {path}") from exc
    except (OSError, UnidentifiedImageError) as exc:
        raise InputError(f"cannot read segmentation mask {path}: {exc}") from exc


def voc_segmentation_benchmark(root: Path, size: int = 224, split: str | None = None) -> Benchmark:
    """Load the images of ``ImageSets/Segmentation/SPLIT.txt`` (default ``val``) with their masks."""
    pixels, masks, boxes, labels = [], [], [], []
    for name in _image_list(root, split):
        image, original = read_image(root / "JPEGImages" / f"{name}.jpg", size)
        seg = _segmentation(root / SEGMENTATION / f"{name}.png")
        if seg.shape[::-1] != original:
            raise InputError(f"mask of {name} is {seg.shape[1]}x{seg.shape[0]}, its image {original[0]}x{original[1]}")
        counts = np.bincount(seg.ravel(), minlength=256)[1:len(VOC_CLASSES) + 1]
        if counts.max() == 0:
            raise InputError(f"the mask of {name} holds no VOC class pixel; remove it from the list")
        cls = int(counts.argmax()) + 1
        resized = Image.fromarray((seg == cls).astype(np.uint8)).resize((size, size), Image.NEAREST)
        mask = torch.from_numpy(np.asarray(resized) > 0)[None]
        xml = root / "Annotations" / f"{name}.xml"
        if xml.is_file():
            _, objects = voc_boxes(xml)
            box = boxes_mask(class_boxes(objects, VOC_CLASSES[cls - 1]), original, size)
        else:
            box = box_mask(mask[None])[0]
        pixels.append(image)
        masks.append(mask)
        boxes.append(box)
        labels.append(cls - 1)
    return Benchmark(normalise(torch.stack(pixels)), torch.tensor(labels, dtype=torch.long), torch.stack(masks),
                     torch.stack(boxes), list(VOC_CLASSES), str(root))
