"""``canonc explain MODEL --method M --image IMG --target T -o heat.png``: heatmaps from the CLI.

The model is canonized first (``canonc.canonize``) unless it already is canonical (a
saved canonized module). ``--image`` may be a folder: then ``-o`` is a folder and one
PNG per image is written. ``--compare-uncanonized`` writes the heatmap of the original
model (left) next to that of the canonized one (right).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch import fx, nn

from ..core import canonize, model_dtype
from ..errors import InputError
from ..lint import lint
from ..load import load, parse_shape
from .explain import Explainer
from .groups import DEFAULT_GROUPS
from .heatmap import heatmap_image, save_png, side_by_side
from .methods import METHODS

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def build_explain_parser() -> argparse.ArgumentParser:
    """Argument parser of ``canonc explain``."""
    p = argparse.ArgumentParser(prog="canonc explain", description="Explain a model's predictions as heatmap PNGs.")
    p.add_argument("model", help="torchvision:NAME, timm:NAME, models:NAME, file.py:factory, or a .pt/.pth file")
    p.add_argument("--image", required=True, help="an image file, or a folder of images")
    p.add_argument("-o", "--output", required=True, help="heatmap .png (a folder when --image is a folder)")
    p.add_argument("--method", default="lrp-epsilon-plus", choices=list(METHODS), help="attribution method")
    p.add_argument("--target", type=int, help="class index to explain (default: the predicted class)")
    p.add_argument("--gamma", help="lrp-gamma: one value, or GROUP=VALUE pairs like conv1-3=0.25,classifier=0")
    p.add_argument("--groups", default=None, help=f"lrp-gamma layer groups, e.g. 3,4,3,classifier (default {DEFAULT_GROUPS})")
    p.add_argument("--epsilon", type=float, help="epsilon of the dense-layer rule (lrp-* methods)")
    p.add_argument("--compare-uncanonized", action="store_true", help="put the original model's heatmap on the left")
    p.add_argument("--no-normalize", action="store_true", help="feed pixels in [0, 1] instead of ImageNet-normalized ones")
    p.add_argument("--input-shape", help="model input shape, e.g. 1,3,224,224 (default: the source's own)")
    p.add_argument("--arch", help="architecture source for a state-dict file, e.g. torchvision:resnet50")
    p.add_argument("--weights", help="state-dict file to load into a torchvision:/timm: architecture")
    p.add_argument("--trust-pickle", action="store_true", help="allow unpickling a full model (runs code from the file)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    p.add_argument("--batch-size", type=int, default=8, help="images per attribution batch (default 8)")
    p.add_argument("--quiet", action="store_true", help="print only errors")
    return p


def method_params(args: argparse.Namespace) -> dict[str, object]:
    """Method parameters given on the command line."""
    params: dict[str, object] = {}
    if args.epsilon is not None:
        params["epsilon"] = args.epsilon
    if args.groups is not None:
        params["groups"] = args.groups
    if args.gamma is not None:
        if "=" not in args.gamma:
            try:
                params["gamma"] = float(args.gamma)
            except ValueError as exc:
                raise InputError(f"--gamma '{args.gamma}': give a number or GROUP=VALUE pairs") from exc
        else:
            pairs = [item.split("=", 1) for item in args.gamma.split(",") if item]
            try:
                params["gamma"] = {k.strip(): float(v) for k, v in pairs}
            except ValueError as exc:
                raise InputError(f"--gamma '{args.gamma}': write GROUP=VALUE pairs like conv1-3=0.25,classifier=0") from exc
    return params


def image_files(path: Path) -> list[Path]:
    """The image at ``path``, or the images in the folder ``path`` (sorted by name)."""
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise InputError(f"{path} holds no images ({', '.join(IMAGE_SUFFIXES)})")
        return files
    if not path.is_file():
        raise InputError(f"no such image or folder: {path}")
    return [path]


def load_image(path: Path, shape: tuple[int, ...], normalize: bool) -> torch.Tensor:
    """``(C, H, W)`` float tensor of the image resized to ``shape[-2:]``."""
    channels, height, width = shape[1], shape[-2], shape[-1]
    try:
        with Image.open(path) as im:
            im = im.convert("L" if channels == 1 else "RGB").resize((width, height), Image.BILINEAR)
            array = np.asarray(im, dtype=np.float32) / 255.0
    except (UnidentifiedImageError, OSError) as exc:
        raise InputError(f"{path} is not a readable image ({exc}); pass a PNG or JPEG file") from exc
    x = torch.from_numpy(array.copy()).reshape(height, width, -1).permute(2, 0, 1)
    if normalize and channels == 3:
        x = (x - torch.tensor(IMAGENET_MEAN)[:, None, None]) / torch.tensor(IMAGENET_STD)[:, None, None]
    return x


def is_canonical(model: nn.Module) -> bool:
    """A saved canonized module: a GraphModule with nothing left for the canonicality lint."""
    return isinstance(model, fx.GraphModule) and not lint(model)


def _outputs(files: list[Path], args: argparse.Namespace) -> list[Path]:
    out = Path(args.output)
    if Path(args.image).is_dir():
        if out.suffix:
            raise InputError(f"-o {out}: --image is a folder, so -o must be a folder (it is created if missing)")
        if not out.parent.is_dir():
            raise InputError(f"output directory {out.parent} does not exist; create it first")
        out.mkdir(exist_ok=True)
        return [out / f"{f.stem}.png" for f in files]
    if out.suffix.lower() != ".png":
        raise InputError(f"-o {out}: heatmaps are written as PNG; use a path ending in .png")
    return [out]


def run_explain(args: argparse.Namespace) -> int:
    """Load, canonize, explain every image, write the heatmaps; return the exit code."""
    files = image_files(Path(args.image))
    outputs = _outputs(files, args)
    if args.batch_size < 1:
        raise InputError("--batch-size must be at least 1")
    params = method_params(args)
    loaded = load(args.model, arch=args.arch, weights=args.weights, trust_pickle=args.trust_pickle)
    shape = parse_shape(args.input_shape) if args.input_shape else loaded.input_shape
    if shape is None or len(shape) != 4:
        raise InputError(f"cannot tell the image input shape of {loaded.name}; pass --input-shape 1,3,H,W")
    try:
        device = torch.device(args.device)
    except RuntimeError as exc:
        raise InputError(f"--device {args.device}: not a device; use cpu or cuda") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"--device {args.device}: no CUDA GPU is available here; use --device cpu")
    original = loaded.model.eval()
    if is_canonical(original):
        if args.compare_uncanonized:
            raise InputError(f"{loaded.name} is already canonical: there is no uncanonized model to compare; "
                             "drop --compare-uncanonized or pass the original model")
        canonical = original
    else:
        example = torch.randn(shape, generator=torch.Generator().manual_seed(0), dtype=model_dtype(original))
        result = canonize(original, example, name=loaded.name)
        canonical = result.module
        if not args.quiet:
            print(result.report.summary())
    models = [canonical.to(device)]
    if args.compare_uncanonized:
        models.insert(0, original.to(device))
    explainers = [Explainer(m, args.method, strict=m is canonical, **params) for m in models]
    try:
        for start in range(0, len(files), args.batch_size):
            chunk = files[start:start + args.batch_size]
            x = torch.stack([load_image(f, shape, not args.no_normalize) for f in chunk]).to(device)
            if args.target is not None:
                targets = torch.full((len(chunk),), args.target, dtype=torch.long)
            else:
                with torch.no_grad():
                    targets = canonical(x.to(model_dtype(canonical))).argmax(1)
            maps = [explainer(x, targets) for explainer in explainers]
            for i, path in enumerate(outputs[start:start + args.batch_size]):
                save_png(side_by_side([heatmap_image(r[i]) for r in maps]), path)
                if not args.quiet:
                    print(f"  wrote         {path} (target {int(targets[i])}, {args.method})")
    finally:
        for explainer in explainers:
            explainer.close()
    return 0
