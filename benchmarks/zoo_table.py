"""Canonize every torchvision classifier and write the zoo table (Markdown + JSON).

Each model runs in its own process (a crash or out-of-memory in one model does not stop
the sweep, and memory goes back after each). Random weights, calibrated and randomized
BN (``models.torchvision_zoo``), small inputs.

Usage::

    python benchmarks/zoo_table.py                       # all models
    python benchmarks/zoo_table.py --models resnet18,densenet121 --out /tmp/zoo
    python benchmarks/zoo_table.py --merge a.json b.json     # combine partial sweeps
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
STEM = "zoo_torchvision"
TIMEOUT_S = 3600


def _bn_reason(report: dict) -> str:
    """The most common reason a BN was left, shortened to its first clause."""
    reasons = Counter(item["reason"].split(";")[0] for item in report["lint"] if item["kind"] == "batchnorm-left")
    return reasons.most_common(1)[0][0] if reasons else ""


def run_one(name: str) -> dict:
    """Canonize ``name`` and return its table row (runs in the child process)."""
    import torch

    from canonc import canonize
    from canonc.errors import CanoncError, VerificationError
    from models.torchvision_zoo import build, memory_shortfall

    why = memory_shortfall(name)
    if why:
        return {"model": name, "status": "skipped", "error": why}
    torch.set_num_threads(1)
    model, example = build(name)
    row: dict = {"model": name, "input": list(example.shape), "status": "verified", "error": ""}
    try:
        report = canonize(model, example, name=name).report.to_dict()
    except VerificationError as exc:
        report, row["status"], row["error"] = exc.report.to_dict(), "failed", str(exc)
    except CanoncError as exc:
        return {**row, "status": "refused", "error": str(exc)}
    timings = report["timings_s"]
    kinds = Counter(item["kind"] for item in report["lint"])
    row.update(
        bn_before=report["bn_before"],
        bn_after=report["bn_after"],
        params_before=report["params_before"],
        params_after=report["params_after"],
        max_rel_error_fp64=report["max_rel_error_fp64"],
        max_abs_error_fp64=report["max_abs_error_fp64"],
        max_abs_error_fp32=report["max_abs_error_fp32"],
        check_inputs=report["check_inputs"],
        canonize_s=round(timings.get("trace", 0.0) + timings.get("passes", 0.0), 3),
        verify_s=round(timings.get("verify", 0.0), 3),
        lint=dict(sorted(kinds.items())),
        bn_reason=_bn_reason(report),
        rewrites=len(report["rewrites"]),
    )
    if row["status"] == "verified" and row["bn_after"]:
        row["status"] = "BN left"
    return row


def _child(name: str, timeout: float) -> dict:
    """Run :func:`run_one` for ``name`` in a fresh interpreter."""
    start = time.perf_counter()
    try:
        proc = subprocess.run([sys.executable, __file__, "--one", name], capture_output=True, text=True,
                              timeout=timeout, cwd=ROOT)
    except subprocess.TimeoutExpired:
        return {"model": name, "status": "error", "error": f"timed out after {timeout:.0f} s"}
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr.strip().splitlines() or [f"exit code {proc.returncode}"])[-1]
        return {"model": name, "status": "error", "error": tail[:300]}
    row = json.loads(lines[-1])
    row["wall_s"] = round(time.perf_counter() - start, 1)
    return row


def _fmt_int(n: int | None) -> str:
    return "–" if n is None else f"{n / 1e6:.2f}M"


def _left(row: dict) -> str:
    """What the lint still lists, with the reason BN was left (if any)."""
    parts = []
    if row.get("bn_after"):
        parts.append(f"{row['bn_after']} BN: {row['bn_reason']}")
    parts += [f"{k} ×{v}" for k, v in row.get("lint", {}).items() if k != "batchnorm-left"]
    return "; ".join(parts) or "nothing"


def markdown(rows: list[dict]) -> str:
    """The zoo table as Markdown, with a one-line summary on top."""
    counts = Counter(r["status"] for r in rows)
    errs = [r["max_rel_error_fp64"] for r in rows if r.get("max_rel_error_fp64") is not None]
    lines = [
        f"{len(rows)} torchvision classifiers: " + ", ".join(f"{v} {k}" for k, v in sorted(counts.items()))
        + (f"; worst fp64 relative error {max(errs):.1e}." if errs else "."),
        "Random weights, calibrated and randomized BN; canonize = trace + passes, wall clock, one thread "
        "(the fp64 gate's time is not included).",
        "",
        "| model | input | BN before → after | params before → after | fp64 rel. error | canonize (s) | status | left in graph (lint) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if r["status"] in ("error", "refused", "skipped"):
            lines.append(f"| {r['model']} | | | | | | {r['status']} | {r['error']} |")
            continue
        side = "×".join(str(d) for d in r["input"][2:])
        lines.append(
            f"| {r['model']} | {side} | {r['bn_before']} → {r['bn_after']} "
            f"| {_fmt_int(r['params_before'])} → {_fmt_int(r['params_after'])} "
            f"| {r['max_rel_error_fp64']:.1e} | {r['canonize_s']:.2f} | {r['status']} | {_left(r)} |"
        )
    return "\n".join(lines) + "\n"


def sweep(names: list[str], out: Path, timeout: float) -> list[dict]:
    """Run every model in ``names`` with a progress bar; write JSON and Markdown as it goes."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    out.mkdir(parents=True, exist_ok=True)
    rows: list[dict] = []
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns) as progress:
        task = progress.add_task("zoo", total=len(names))
        for name in names:
            progress.update(task, description=f"{name:<22}")
            row = _child(name, timeout)
            rows.append(row)
            progress.console.print(f"{name:<22} {row['status']:<9} rel {row.get('max_rel_error_fp64') or 0:.1e}  "
                                   f"BN {row.get('bn_before', '-')}→{row.get('bn_after', '-')}  {row.get('error', '')[:80]}")
            (out / f"{STEM}.json").write_text(json.dumps(rows, indent=1))
            (out / f"{STEM}.md").write_text(markdown(rows))
            progress.advance(task)
    return rows


def merge(paths: list[Path], names: list[str]) -> list[dict]:
    """Rows of several partial sweeps (JSON files), one per model, in ``names`` order."""
    by_name = {row["model"]: row for path in paths for row in json.loads(path.read_text())}
    return [by_name[n] for n in names if n in by_name]


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, run the sweep (or one model with ``--one``), print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", help="comma-separated subset (default: every torchvision classifier)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="folder for the .md and .json")
    parser.add_argument("--timeout", type=float, default=TIMEOUT_S, help="seconds per model")
    parser.add_argument("--merge", type=Path, nargs="+", help="combine these JSON results instead of running")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    if args.one:
        print(json.dumps(run_one(args.one)))
        return 0
    from models.torchvision_zoo import names as all_names

    names = args.models.split(",") if args.models else all_names()
    if args.merge:
        rows = merge(args.merge, names)
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / f"{STEM}.json").write_text(json.dumps(rows, indent=1))
        (args.out / f"{STEM}.md").write_text(markdown(rows))
    else:
        rows = sweep(names, args.out, args.timeout)
    print(markdown(rows))
    return 0 if all(r["status"] in ("verified", "BN left") for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
