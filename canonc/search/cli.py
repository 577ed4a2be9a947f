"""``canonc search MODEL --data shapes:128 --objectives ... -o OUTDIR``: the hyperparameter search command.

A thin layer over :func:`canonc.search.search` and :func:`canonc.search.report.write_report`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import optuna
import torch

from ..errors import InputError
from ..load import load
from ..xai.data import load_data
from ..xai.evaluate_cli import metric_settings as parse_set_options
from ..xai.groups import DEFAULT_GROUPS, layer_groups
from .db import redact
from .objectives import OBJECTIVE_METRICS, metric_settings, resolve_objectives
from .report import write_report
from .results import summarise
from .runner import search
from .space import POSTER_GAMMAS, SEARCHABLE_METHODS, parse_canonized, parse_floats, parse_methods
from .study import MAX_ATTEMPTS, SAMPLERS


def build_parser() -> argparse.ArgumentParser:
    """Argument parser of ``canonc search``."""
    p = argparse.ArgumentParser(
        prog="canonc search",
        description="Multi-objective XAI hyperparameter search: LRP-γ per layer group × canonization, "
                    "scored by explanation metrics; resumable, shareable by several workers.")
    p.add_argument("model", help="torchvision:NAME, timm:NAME, models:NAME, file.py:factory, or a .pt/.pth file")
    p.add_argument("--data", required=True, help="benchmark, e.g. shapes:128 (synthetic, N images) or an image folder")
    p.add_argument("--objectives", default=",".join(OBJECTIVE_METRICS),
                   help=f"comma-separated: {', '.join(OBJECTIVE_METRICS)} or metric names (default: all six)")
    p.add_argument("--sampler", default="grid", choices=SAMPLERS, help="grid (every point once), an Optuna "
                   "multi-objective sampler (nsga2, tpe) or random (default grid)")
    p.add_argument("--trials", type=int, help="trials of the whole study (grid default: every point)")
    p.add_argument("--timeout", type=float, help="stop starting trials after this many seconds (this process)")
    p.add_argument("--gammas", default=",".join(f"{g:g}" for g in POSTER_GAMMAS),
                   help="γ values per layer group (default the poster's 0,0.1,0.25,0.5,1,10)")
    p.add_argument("--groups", default=DEFAULT_GROUPS, help=f"layer groups, e.g. auto:4 or 3,4,3,classifier (default {DEFAULT_GROUPS})")
    p.add_argument("--canonized", default="no,yes", help="canonization options: no, yes or no,yes (default)")
    p.add_argument("--methods", default="lrp-gamma",
                   help=f"method family to search, comma-separated from {', '.join(SEARCHABLE_METHODS)} (default lrp-gamma)")
    p.add_argument("--epsilons", help="ε values for methods with a dense-layer ε (default: the method's)")
    p.add_argument("--set", action="append", default=[], metavar="METRIC.SETTING=VALUE",
                   help="metric setting by metric or objective name, e.g. region-perturbation.regions=20 (repeatable)")
    p.add_argument("--storage", help="SQLAlchemy URL of the study (default sqlite:///OUTDIR/study.db)")
    p.add_argument("--study", default="canonc-search", help="study name (default canonc-search)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--resume", action="store_true", help="continue an existing study")
    mode.add_argument("--worker", action="store_true", help="join the study (create it if missing) and run trials")
    p.add_argument("--seed", type=int, default=0, help="seed of the metrics' random draws (default 0)")
    p.add_argument("--sampler-seed", type=int, default=0, help="seed of the Optuna sampler (default 0)")
    p.add_argument("--heartbeat", type=int, default=10,
                   help="seconds between a trial's heartbeats; a trial silent 3x as long is failed as dead (default 10)")
    p.add_argument("--batch-size", type=int, default=32, help="images per explanation batch (default 32)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    p.add_argument("--trust-pickle", action="store_true", help="allow unpickling a full model (runs code from the file)")
    p.add_argument("--quiet", action="store_true", help="print only errors")
    p.add_argument("-o", "--output", help="report folder (Markdown, CSV, JSON, PNG); optional for --worker")
    return p


def _check(args: argparse.Namespace) -> str:
    """Validate the budget and outputs; return the storage URL."""
    if args.trials is not None and args.trials < 1:
        raise InputError(f"--trials {args.trials}: give at least 1")
    if args.timeout is not None and args.timeout <= 0:
        raise InputError(f"--timeout {args.timeout}: give a positive number of seconds")
    if args.sampler != "grid" and args.trials is None:
        raise InputError(f"--sampler {args.sampler} needs a budget: pass --trials N (--timeout may stop it earlier)")
    if args.device != "cpu" and not (args.device.startswith("cuda") and torch.cuda.is_available()):
        raise InputError(f"--device {args.device}: use cpu, or cuda on a machine with a CUDA device")
    if args.batch_size < 1:
        raise InputError(f"--batch-size {args.batch_size}: give at least 1")
    if not args.output and not args.worker:
        raise InputError("no output given; pass -o OUTDIR (only --worker runs without one)")
    if args.output and Path(args.output).exists() and not Path(args.output).is_dir():
        raise InputError(f"-o {args.output} is a file; give a folder for the report")
    if args.storage:
        return args.storage
    if not args.output:
        raise InputError("--worker needs --storage URL (the study the workers share) or -o OUTDIR")
    return f"sqlite:///{Path(args.output).resolve() / 'study.db'}"


def run(args: argparse.Namespace) -> int:
    """Run the search and write the report; 0 when the budget is complete (or the timeout ended it)."""
    storage = _check(args)
    space_options = {"gammas": parse_floats(args.gammas, "--gammas"), "canonized": parse_canonized(args.canonized),
                     "methods": parse_methods(args.methods),
                     "epsilons": parse_floats(args.epsilons, "--epsilons") if args.epsilons else ()}
    objectives = resolve_objectives(args.objectives)
    settings = metric_settings(parse_set_options(args.set), objectives)
    loaded = load(args.model, trust_pickle=args.trust_pickle)
    layer_groups(loaded.model, args.groups)  # a spec that does not fit the model is refused before anything is written
    size = loaded.input_shape[-1] if loaded.input_shape else None
    data = load_data(args.data, size=size)
    if args.output and storage.startswith("sqlite:///") and not args.storage:
        Path(args.output).mkdir(parents=True, exist_ok=True)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    names = {"model": loaded.name, "data": args.data}
    done = search(loaded.model, data.images, data.labels, objectives, storage=storage, masks=data.masks,
                  study=args.study, sampler=args.sampler, trials=args.trials, timeout_s=args.timeout,
                  groups=args.groups, settings=settings, seed=args.seed, sampler_seed=args.sampler_seed,
                  mode="resume" if args.resume else "worker" if args.worker else "new", heartbeat_s=args.heartbeat,
                  batch_size=args.batch_size, device=args.device, progress=not args.quiet, names=names,
                  **space_options)
    slots = done.slots
    say = (lambda *a: None) if args.quiet else (lambda *a: print(*a, file=sys.stderr))
    say(f"canonc search: {len(slots['complete'])} of {sum(map(len, slots.values()))} budget trials complete; "
        f"this process measured {done.evaluated} configurations ({done.computed} computed, "
        f"{done.evaluated - done.computed} from the cache)")
    if slots["given_up"]:
        say(f"canonc search: warning: {len(slots['given_up'])} configurations failed {MAX_ATTEMPTS} times and were given up")
    if args.output:
        info = {"study": args.study, "model": loaded.name, "data": args.data, "sampler": args.sampler,
                "storage": redact(storage),
                "objectives": args.objectives, "budget": sum(map(len, slots.values()))}
        paths = write_report(summarise(done.study), done.study.space, Path(args.output), info)
        say(f"canonc search: report in {args.output} ({', '.join(p.name for p in paths)})")
    return 0
