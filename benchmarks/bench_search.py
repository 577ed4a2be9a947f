"""Grid search vs multi-objective samplers with a fifth of its budget, on the trained VGG-13-BN topology.

The reduced poster grid — γ ∈ {0, 0.25, 1, 10} for each layer group (Conv 1–3, 4–7, 8–10,
Classifier) × canonization {no, yes} = 512 configurations — is measured once by
``canonc search --worker`` processes sharing one SQLite study. Its per-sample metric
values stay in that database (``out/bench_search/search.db``, the search's metric cache),
so a rerun measures nothing again. Then NSGA-II, TPE and random search each run with 20 %
of that budget (102 distinct configurations; a configuration a sampler proposes again is
told its values from the study and uses no budget) from several sampler seeds, over the
same space: every configuration they pick is a grid point, so their values come from the
cache too.

Hypervolume: every objective is normalised by the grid's range (0 = the grid's best
value, 1 = its worst; :func:`canonc.search.pareto.normalised_losses`), the reference
point is 1.1 in every objective, and each sampler's hypervolume is divided by the full
grid's. Prints ``name: value`` lines; writes ``benchmarks/results/search_benchmark.json``,
the grid's report (``out/bench_search/report/``; ``report.md``, ``trials.csv`` and two figures
copied to ``benchmarks/results/search_vgg13_bn/``), ``docs/search-gamma.png``
(the poster's figure) and ``docs/search-hypervolume.png``.

Benchmark: 32 shapes images at 64 px (``shapes:32``, the held-out seed), the poster's six
objectives (faithfulness, localization-rra, localization-rma, robustness, complexity,
randomisation), cheap metric settings (``SETTINGS``), one torch thread per process.

Run: ``nice python benchmarks/bench_search.py [--workers 2] [--seeds 5]``.
The poster's full grid (6 γ values, 2 × 6⁴ = 2,592 configurations), same benchmark:
``canonc search models:vgg13_bn-shapes --data shapes:32 --set region-perturbation.regions=16 --set avg-sensitivity.n_samples=2 -o out/poster-grid``
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import optuna
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from canonc.load import load  # noqa: E402
from canonc.search import resolve_objectives, search, summarise, write_report  # noqa: E402
from canonc.search.pareto import hypervolume, hypervolume_history, normalised_losses, value_ranges  # noqa: E402
from canonc.search.plots import plot_hypervolume  # noqa: E402
from canonc.search.space import parse_floats  # noqa: E402
from canonc.search.study import delete_study  # noqa: E402
from canonc.xai.data import load_data  # noqa: E402

MODEL = "models:vgg13_bn-shapes"
DATA = "shapes:32"
GAMMAS = (0.0, 0.25, 1.0, 10.0)
OBJECTIVES = "faithfulness,localization-rra,localization-rma,robustness,complexity,randomisation"
SETTINGS = {"region-perturbation": {"regions": 16}, "avg-sensitivity": {"n_samples": 2}}
SAMPLERS = ("nsga2", "tpe", "random")
WORK = ROOT / "out" / "bench_search"
RESULTS = ROOT / "benchmarks" / "results"
DOCS = ROOT / "docs"
KEPT = ("report.md", "trials.csv", "gamma.png", "hypervolume.png")
"""Files of the grid's report kept in the repository (the rest stays in the work folder)."""


def _setting_flags() -> list[str]:
    return [f for metric, values in SETTINGS.items() for k, v in values.items()
            for f in ("--set", f"{metric}.{k}={v}")]


def measure_grid(args: argparse.Namespace, storage: str) -> float:
    """Run ``args.workers`` ``canonc search --worker`` processes over the grid; return the wall time."""
    cmd = [sys.executable, "-m", "canonc.cli", "search", args.model, "--data", args.data, "--objectives", OBJECTIVES,
           "--gammas", args.gammas, "--sampler", "grid", "--storage", storage,
           "--study", "grid", "--worker", *_setting_flags()]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    start = time.perf_counter()
    procs = [subprocess.Popen(cmd + ([] if k == 0 else ["--quiet"]), cwd=ROOT, env=env) for k in range(args.workers)]
    codes = [p.wait() for p in procs]
    if any(codes):
        raise SystemExit(f"a grid worker failed (exit codes {codes})")
    return time.perf_counter() - start


def main() -> None:
    """Measure (or reuse) the grid, run the samplers from the cache, print and write the figures."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workers", type=int, default=2, help="grid worker processes (default 2)")
    p.add_argument("--seeds", type=int, default=5, help="sampler seeds per sampler (default 5)")
    p.add_argument("--model", default=MODEL, help=f"model source (default {MODEL})")
    p.add_argument("--data", default=DATA, help=f"benchmark (default {DATA})")
    p.add_argument("--gammas", default=",".join(f"{g:g}" for g in GAMMAS), help="γ values per group (default 0,0.25,1,10)")
    p.add_argument("--work", type=Path, default=WORK, help=f"where the study and cache live (default {WORK})")
    p.add_argument("--results", type=Path, default=RESULTS, help="where the figures go (default benchmarks/results, docs)")
    args = p.parse_args()
    torch.set_num_threads(1)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    args.work.mkdir(parents=True, exist_ok=True)
    storage = f"sqlite:///{args.work / 'search.db'}"

    run_wall = measure_grid(args, storage)
    loaded = load(args.model)
    data = load_data(args.data, size=loaded.input_shape[-1])
    objectives = resolve_objectives(OBJECTIVES)
    common = {"storage": storage, "masks": data.masks, "gammas": parse_floats(args.gammas, "--gammas"),
              "settings": SETTINGS, "names": {"model": loaded.name, "data": args.data}}
    grid_run = search(loaded.model, data.images, data.labels, objectives, study="grid", mode="resume", **common)
    grid = summarise(grid_run.study)
    measured = grid_run.study.completed()
    trial_s = sum((t.datetime_complete - t.datetime_start).total_seconds() for t in measured)
    span_s = (max(t.datetime_complete for t in measured) - min(t.datetime_start for t in measured)).total_seconds()
    higher = [o.higher_is_better for o in objectives]
    ranges = value_ranges(grid.values)
    grid_losses = normalised_losses(grid.values, higher, ranges)
    grid_hv = hypervolume(grid_losses)
    by_slot = np.argsort([t.slot for t in grid.trials])
    histories = {"grid (fixed shuffle)": hypervolume_history(grid_losses[by_slot])}
    budget = int(0.2 * len(grid.trials))
    figures: dict[str, object] = {
        "configurations": len(grid.trials), "grid_trial_s": round(trial_s), "grid_span_s": round(span_s),
        "grid_workers_this_run_s": round(run_wall, 1), "grid_hypervolume": grid_hv,
        "grid_front": int(grid.front.sum()), "budget": budget, "reference": 1.1, "objectives": OBJECTIVES,
        "model": loaded.name, "data": args.data, "settings": SETTINGS, "samplers": {}}
    print(f"search grid configurations: {len(grid.trials)} (front {int(grid.front.sum())}; measured in {trial_s:.0f} s "
          f"of trial time, first start to last completion {span_s:.0f} s; workers this run {run_wall:.0f} s)")
    print(f"search grid hypervolume: {grid_hv:.4f}")
    for sampler in SAMPLERS:
        ratios, computed, repeats, runs = [], 0, 0, []
        for seed in range(args.seeds):
            name = f"{sampler}-{seed}"
            delete_study(storage, name)
            run = search(loaded.model, data.images, data.labels, objectives, study=name, sampler=sampler,
                         trials=budget, sampler_seed=seed, **common)
            computed += run.computed
            repeats += sum("repeat_of" in t.user_attrs for t in run.study.study.get_trials())
            losses = normalised_losses(summarise(run.study).values, higher, ranges)
            ratios.append(hypervolume(losses) / grid_hv)
            runs.append(hypervolume_history(losses))
        histories[f"{sampler} (mean of {args.seeds} seeds)"] = np.mean(runs, axis=0)
        figures["samplers"][sampler] = {"ratios": ratios, "mean": float(np.mean(ratios)), "min": float(np.min(ratios)),
                                        "computed": computed, "repeats": repeats}
        print(f"search {sampler} hypervolume ratio ({budget} configurations, {args.seeds} seeds): "
              f"mean {np.mean(ratios):.4f}, min {np.min(ratios):.4f} (computed: {computed}; "
              f"repeated proposals told from the study: {repeats})")

    info = {"study": "grid", "model": loaded.name, "data": args.data, "sampler": "grid", "objectives": OBJECTIVES,
            "settings": json.dumps(SETTINGS)}
    docs = DOCS if args.results == RESULTS else args.results
    report = args.work / "report"
    write_report(grid, grid_run.study.space, report, info)
    kept = args.results / "search_vgg13_bn"
    kept.mkdir(parents=True, exist_ok=True)
    for name in KEPT:
        shutil.copyfile(report / name, kept / name)
    shutil.copyfile(report / "gamma.png", docs / "search-gamma.png")
    plot_hypervolume(histories, docs / "search-hypervolume.png",
                     title=f"{loaded.name} on {args.data}: grid {grid_hv:.3f} after {len(grid.trials)} evaluations")
    (args.results / "search_benchmark.json").write_text(json.dumps(figures, indent=1) + "\n")


if __name__ == "__main__":
    main()
