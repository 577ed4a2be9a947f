"""``canonc zoo timm|torchvision``: canonize a collection of models and print a coverage table.

Each model gets random weights with randomized norms (:mod:`canonc.zoo`); a model that
cannot be built or canonized is a row with its reason, never a traceback.
Exit codes: 0 every model verified, 3 some did not, 2 bad usage.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from .codegen import atomic_write
from .errors import InputError
from .zoo import SMALL, survey, timm_names, torchvision_names

SOURCES = {"timm": timm_names, "torchvision": torchvision_names}


def build_parser() -> argparse.ArgumentParser:
    """Argument parser of ``canonc zoo``."""
    p = argparse.ArgumentParser(prog="canonc zoo",
                                description="Canonize every model of a collection (random weights) and print a table.")
    p.add_argument("source", choices=sorted(SOURCES), help="the model collection")
    p.add_argument("--filter", default="*", help="shell pattern(s) of model names, comma-separated (default: all)")
    p.add_argument("--input-size", type=int, default=SMALL,
                   help=f"input side in pixels (default {SMALL}; models that fix their size use theirs)")
    p.add_argument("--limit", type=int, help="canonize at most this many models")
    p.add_argument("--json", help="also write the rows to this JSON file")
    p.add_argument("--unpack-mha", action="store_true", help="unpack nn.MultiheadAttention (see canonc --help)")
    p.add_argument("--bn-as-layer", action="store_true", help="a BN no layer can absorb becomes a per-channel conv (see canonc --help)")
    return p


def _count(before: object, after: object) -> str:
    return "–" if before is None else f"{before} → {'–' if after is None else after}"


def _error(row: dict) -> str:
    err = row.get("max_rel_error_fp64")
    return "–" if err is None else f"{err:.1e}"


def table_rows(rows: list[dict]) -> list[list[str]]:
    """The printed cells of each row: model, params, BN, LN affine, fp64 error, time, status / reason."""
    return [[r["model"], f"{r['params'] / 1e6:.2f}M" if "params" in r else "–",
             _count(r.get("bn_before"), r.get("bn_after")), _count(r.get("ln_affine_before"), r.get("ln_affine_after")),
             _error(r), f"{r['time_s']:.1f}" if "time_s" in r else "–",
             r["status"] + (f": {r['reason']}" if r["reason"] else "")] for r in rows]


def _print_table(rows: list[dict]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{sum(r['status'] == 'verified' for r in rows)} of {len(rows)} verified")
    for column in ("model", "params", "BN before → after", "LN affine before → after", "fp64 rel. error", "time (s)",
                   "status / reason"):
        table.add_column(column, overflow="fold")
    for cells in table_rows(rows):
        table.add_row(*cells)
    Console().print(table)


def run(args: argparse.Namespace) -> int:
    """Canonize the selected models, print the table, write ``--json``; return the exit code."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    if args.input_size < 8:
        raise InputError(f"--input-size {args.input_size} is too small; use at least 8 pixels")
    if args.limit is not None and args.limit < 1:
        raise InputError(f"--limit {args.limit} must be at least 1")
    if args.json and Path(args.json).suffix != ".json":
        raise InputError(f"--json {args.json}: use a path ending in .json")
    names = SOURCES[args.source](args.filter)[: args.limit]
    if not names:
        raise InputError(f"no {args.source} model matches --filter '{args.filter}'")
    rows: list[dict] = []
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, transient=True) as progress:
        task = progress.add_task("canonizing", total=len(names))
        for name in names:
            progress.update(task, description=name)
            rows.append(survey(args.source, name, args.input_size, {"unpack_mha": args.unpack_mha, "bn_as_layer": args.bn_as_layer}))
            progress.advance(task)
    _print_table(rows)
    if args.json:
        atomic_write(Path(args.json), lambda tmp: Path(tmp).write_text(json.dumps(rows, indent=1)))
    return 0 if all(r["status"] == "verified" for r in rows) else 3
