"""``canonc evaluate MODEL --data shapes:256 -o OUTDIR``: the poster's evaluation table from the command line.

Parses the options, loads the model and the data, calls :func:`canonc.xai.evaluate.evaluate`
and writes ``table.md``, ``table.csv``, ``results.json`` and ``heatmaps.png`` into OUTDIR
(each file atomically, all of them only after every score is computed).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from ..codegen import atomic_write
from ..errors import InputError
from ..load import load
from .data import load_data
from .evaluate import DEFAULT_METHODS, MASK_KINDS, check_choices, evaluate
from .evaluate_plot import heatmap_grid
from .metrics import METRICS, POSTER_METRICS

OUTPUTS = ("table.md", "table.csv", "results.json", "heatmaps.png")


def build_parser() -> argparse.ArgumentParser:
    """Argument parser of ``canonc evaluate``."""
    p = argparse.ArgumentParser(prog="canonc evaluate",
                                description="Score explanation methods on a model, uncanonized and canonized.")
    p.add_argument("model", help="torchvision:NAME, timm:NAME, models:NAME, file.py:factory, or a .pt/.pth file")
    p.add_argument("--data", required=True, help="shapes:N[:SEED], a VOC root (PATH[:SPLIT]) or a folder of class "
                                                 "folders with VOC XML boxes")
    p.add_argument("-o", "--output", required=True, help="output folder (created if missing)")
    p.add_argument("--methods", default=",".join(DEFAULT_METHODS), help="comma-separated methods (default %(default)s)")
    p.add_argument("--metrics", default="poster", help="poster (the six of the poster), all, or comma-separated names")
    p.add_argument("--canonized", default="no,yes", help="no, yes or no,yes (default %(default)s)")
    p.add_argument("--set", action="append", default=[], metavar="METRIC.SETTING=VALUE",
                   help="a metric setting, e.g. region-perturbation.patch_size=4 (repeatable)")
    p.add_argument("--mask", default="segmentation", choices=MASK_KINDS, help="ground truth of the localisation metrics")
    p.add_argument("--size", type=int, help="image side in pixels (default: the model's input size, else 64 / 224)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    p.add_argument("--seed", type=int, default=0, help="seed of every random draw of the metrics (default 0)")
    p.add_argument("--batch-size", type=int, default=32, help="images per forward or explanation call (default 32)")
    p.add_argument("--examples", type=int, default=4, help="images in heatmaps.png (default 4)")
    p.add_argument("--arch", help="architecture source for a state-dict file, e.g. torchvision:resnet50")
    p.add_argument("--weights", help="state-dict file to load into a torchvision:/timm: architecture")
    p.add_argument("--trust-pickle", action="store_true", help="allow unpickling a full model (runs code from the file)")
    p.add_argument("--quiet", action="store_true", help="print only errors")
    return p


def _names(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def metric_names(text: str) -> list[str]:
    """``poster``, ``all`` or a comma-separated list → metric names."""
    if text == "poster":
        return list(POSTER_METRICS)
    if text == "all":
        return list(METRICS)
    return _names(text)


def _value(text: str) -> object:
    for convert in (int, float):
        try:
            return convert(text)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(text.lower(), text)


def metric_settings(items: list[str]) -> dict[str, dict[str, object]]:
    """``["region-perturbation.patch_size=4", ...]`` → ``{"region-perturbation": {"patch_size": 4}}``."""
    settings: dict[str, dict[str, object]] = {}
    for item in items:
        key, eq, value = item.partition("=")
        metric, dot, name = key.partition(".")
        if not (eq and dot and metric and name and value):
            raise InputError(f"--set {item}: write METRIC.SETTING=VALUE, e.g. region-perturbation.patch_size=4")
        settings.setdefault(metric.strip(), {})[name.strip()] = _value(value.strip())
    return settings


def _device(name: str) -> torch.device:
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise InputError(f"--device {name}: not a device; use cpu or cuda") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"--device {name}: no CUDA device is available here; use --device cpu")
    return device


def _output_dir(path: str) -> Path:
    out = Path(path)
    if out.exists() and not out.is_dir():
        raise InputError(f"-o {out}: exists and is not a folder; give a folder for the four result files")
    if not out.parent.is_dir():
        raise InputError(f"-o {out}: its parent folder {out.parent} does not exist; create it first")
    return out


def run(args: argparse.Namespace) -> int:
    """Run ``canonc evaluate``; returns the exit code."""
    out = _output_dir(args.output)
    device = _device(args.device)
    if args.batch_size < 1 or args.examples < 0:
        raise InputError("--batch-size must be at least 1 and --examples at least 0")
    methods, canonized, metrics = _names(args.methods), _names(args.canonized), metric_names(args.metrics)
    check_choices(methods, canonized, metrics, args.mask)
    settings = metric_settings(args.set)
    loaded = load(args.model, arch=args.arch, weights=args.weights, trust_pickle=args.trust_pickle)
    size = args.size or (loaded.input_shape[-1] if loaded.input_shape else None)
    data = load_data(args.data, size=size)
    result = evaluate(loaded.model, data, methods=methods, canonized=canonized, metrics=metrics, settings=settings,
                      mask=args.mask, seed=args.seed, batch_size=args.batch_size, device=device, examples=args.examples,
                      progress=not args.quiet, model_name=args.model)
    out.mkdir(exist_ok=True)
    atomic_write(out / "table.md", lambda tmp: tmp.write_text(result.to_markdown()))
    atomic_write(out / "table.csv", lambda tmp: tmp.write_text(result.to_csv()))
    atomic_write(out / "results.json", lambda tmp: tmp.write_text(json.dumps(result.to_dict(), indent=1) + "\n"))
    if args.examples:
        heatmap_grid(result, data, out / "heatmaps.png", mask=args.mask)
    if not args.quiet:
        print(result.to_markdown(), end="")
        print(f"wrote {', '.join(OUTPUTS if args.examples else OUTPUTS[:3])} to {out}/")
    return 0
