"""Sweep ``timm.list_models()``: the fraction of models with BatchNorm or LayerNorm that canonc
canonizes and verifies (target ≥ 95 %); every other model has its reason.

Models run in a fixed random order (seed 0), so a partial sweep is a random sample, in a worker
process that is replaced after a crash, hang or out-of-memory (which cost one row) and every
``RECYCLE`` models. Rows are written after every model to ``benchmarks/results/timm_sweep.json``
and ``.md``; a second run resumes.

Usage::

    nice python benchmarks/bench_timm_sweep.py                     # resume the sweep
    python benchmarks/bench_timm_sweep.py --limit 20 --input-size 32
    nice python benchmarks/bench_timm_sweep.py --workers 2          # two models at a time
    python benchmarks/bench_timm_sweep.py --one resnet18           # one row as JSON
    nice python benchmarks/bench_timm_sweep.py --retry failed,error  # those rows again first, then resume
"""

from __future__ import annotations

import argparse
import json
import queue
import random
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
STEM = "timm_sweep"
BYTES_PER_PARAM = 24  # fp32 original, fp64 copy, fp64 rewritten layers, fp32 artifact
RECYCLE = 20  # models per worker process (bounds leaked memory)


def norm_kind(name: str) -> tuple[str, int]:
    """``("bn" / "ln" / "bn+ln" / "none", parameter count)`` of timm ``name``, built on the meta device."""
    import timm
    import torch
    from torch import nn

    with torch.device("meta"):
        model = timm.create_model(name, pretrained=False)
    bn = any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
    ln = any(isinstance(m, nn.LayerNorm) for m in model.modules())
    kind = "bn+ln" if bn and ln else "bn" if bn else "ln" if ln else "none"
    return kind, sum(p.numel() for p in model.parameters())


def _available_bytes() -> int:
    with open("/proc/meminfo") as f:
        info = dict(line.split(":", 1) for line in f)
    return int(info["MemAvailable"].split()[0]) * 1024


def run_one(name: str, side: int, max_params: float) -> dict:
    """The sweep row of ``name`` (runs in the child process)."""
    import torch

    from canonc.zoo import survey

    torch.set_num_threads(1)
    try:
        kind, params = norm_kind(name)
    except Exception as exc:  # noqa: BLE001 - a model that cannot even be built on meta is a row
        return {"model": name, "norms": "?", "status": "error", "reason": f"cannot build: {type(exc).__name__}: {exc}"[:300]}
    row = {"model": name, "norms": kind, "params": params}
    if kind == "none":
        return {**row, "status": "no-norm", "reason": "no BatchNorm or LayerNorm"}
    if params > max_params or params * BYTES_PER_PARAM > _available_bytes():
        return {**row, "status": "skipped", "reason": f"{params / 1e6:.0f}M parameters: over this run's budget"}
    return {**survey("timm", name, side), "norms": kind}


class Worker:
    """A child process that canonizes the models it is sent, one JSON row per line."""

    def __init__(self, side: int, max_params: float) -> None:
        cmd = [sys.executable, __file__, "--worker", "--input-size", str(side), "--max-params", str(max_params)]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                     text=True, cwd=ROOT, bufsize=1)
        self.lines: queue.Queue[str] = queue.Queue()
        self.done = 0
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.put(line)
        self.lines.put("")

    def run(self, name: str, timeout: float) -> dict | None:
        """The row of ``name``, or None when the worker died or timed out (it is then killed)."""
        start = time.perf_counter()
        self.proc.stdin.write(name + "\n")
        self.proc.stdin.flush()
        self.done += 1
        try:
            line = self.lines.get(timeout=timeout)
        except queue.Empty:
            line = ""
        if not line:
            self.close()
            return None
        row = json.loads(line)
        row["wall_s"] = round(time.perf_counter() - start, 1)
        return row

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()


def summary(rows: list[dict]) -> dict:
    """Counts and the verified fraction over models with BatchNorm or LayerNorm that were run."""
    ran = [r for r in rows if r["status"] not in ("no-norm", "skipped")]
    verified = sum(r["status"] == "verified" for r in ran)
    clean = sum(r["status"] == "verified" and not r.get("bn_after") and not r.get("ln_affine_after") for r in ran)
    return {"models_seen": len(rows), "with_norm_run": len(ran), "verified": verified,
            "verified_fraction": verified / len(ran) if ran else None, "verified_all_folded": clean,
            "statuses": dict(Counter(r["status"] for r in rows))}


def markdown(rows: list[dict]) -> str:
    """The sweep as Markdown: summary line, then one row per model."""
    s = summary(rows)
    frac = "–" if s["verified_fraction"] is None else f"{100 * s['verified_fraction']:.1f} %"
    lines = [f"timm sweep: {s['with_norm_run']} models with BatchNorm/LayerNorm run, {s['verified']} verified ({frac}); "
             f"{s['verified_all_folded']} with every BN merged and LN affine folded. Statuses: "
             + ", ".join(f"{k} {v}" for k, v in sorted(s["statuses"].items())), "",
             "| model | norms | BN before → after | LN affine before → after | fp64 rel. error | status | reason |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        err = r.get("max_rel_error_fp64")
        lines.append(f"| {r['model']} | {r.get('norms', '')} | {r.get('bn_before', '–')} → {r.get('bn_after', '–')} | "
                     f"{r.get('ln_affine_before', '–')} → {r.get('ln_affine_after', '–')} | "
                     f"{'–' if err is None else f'{err:.1e}'} | {r['status']} | {r['reason'].replace('|', '/')[:200]} |")
    return "\n".join(lines) + "\n"


def _save(rows: list[dict], out: Path) -> None:
    for suffix, text in ((".json", json.dumps({"summary": summary(rows), "rows": rows}, indent=1)),
                         (".md", markdown(rows))):
        tmp = out.with_suffix(suffix + ".tmp")
        tmp.write_text(text)
        tmp.replace(out.with_suffix(suffix))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--one", help="run one model and print its row as JSON")
    p.add_argument("--worker", action="store_true", help="read model names from stdin, print one JSON row each")
    p.add_argument("--input-size", type=int, default=64)
    p.add_argument("--max-params", type=float, default=100e6, help="skip larger models (default 100M)")
    p.add_argument("--limit", type=int, help="stop after this many new models")
    p.add_argument("--timeout", type=float, default=900, help="seconds per model")
    p.add_argument("--out", default=str(RESULTS / STEM), help="output stem (.json and .md are written)")
    p.add_argument("--workers", type=int, default=1, help="worker processes run in parallel (one thread each)")
    p.add_argument("--retry", default="", help="comma-separated statuses (e.g. failed,error) to run again first")
    args = p.parse_args()
    if args.one:
        print(json.dumps(run_one(args.one, args.input_size, args.max_params)))
        return
    if args.worker:
        for line in sys.stdin:
            print(json.dumps(run_one(line.strip(), args.input_size, args.max_params)), flush=True)
        return
    import timm

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    rows = json.loads(out.with_suffix(".json").read_text())["rows"] if out.with_suffix(".json").exists() else []
    retry = set(filter(None, args.retry.split(",")))
    again = [r["model"] for r in rows if r["status"] in retry]
    rows = [r for r in rows if r["status"] not in retry]
    done = {r["model"] for r in rows}
    names = timm.list_models()
    random.Random(0).shuffle(names)
    todo = (again + [n for n in names if n not in done and n not in again])[: args.limit]
    pending: queue.Queue[str] = queue.Queue()
    for name in todo:
        pending.put(name)
    lock, counter = threading.Lock(), [0]

    def drive() -> None:  # one worker process, fed until the queue is empty
        worker = None
        while True:
            try:
                name = pending.get_nowait()
            except queue.Empty:
                break
            if worker is None or worker.done >= RECYCLE or worker.proc.poll() is not None:
                if worker is not None:
                    worker.close()
                worker = Worker(args.input_size, args.max_params)
            row = worker.run(name, args.timeout)
            if row is None:
                worker = None
                row = {"model": name, "status": "error", "reason": f"worker died or took over {args.timeout:.0f} s"}
            with lock:
                rows.append(row)
                _save(rows, out)
                counter[0] += 1
                s = summary(rows)
                print(f"[{counter[0]}/{len(todo)}] {name}: {row['status']} {row.get('reason', '')[:120]} | "
                      f"verified {s['verified']}/{s['with_norm_run']}", flush=True)
        if worker is not None:
            worker.close()

    threads = [threading.Thread(target=drive) for _ in range(max(1, args.workers))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    s = summary(rows)
    print(f"timm_sweep_verified_fraction: {s['verified_fraction']}")
    print(f"timm_sweep_models_run: {s['with_norm_run']}")


if __name__ == "__main__":
    main()
