"""The search report: Markdown, CSV and JSON tables plus PNG figures in one folder.

Files: ``report.md`` (Pareto front, best configuration per objective, hypervolume,
figures), ``trials.csv`` (every completed trial), ``results.json`` (all of it),
``gamma.png`` (every metric against γ per group, the poster's figure),
``gamma-<objective>.png`` (one metric each) and ``hypervolume.png``. Every file is
written atomically (temp file + rename).
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Mapping
from pathlib import Path

from ..codegen import atomic_write
from ..errors import InputError
from .pareto import REFERENCE
from .plots import plot_gamma, plot_gamma_overview, plot_hypervolume
from .results import SearchResults, TrialResult
from .space import GAMMA_METHOD, SearchSpace


def _fmt(value: float) -> str:
    return "nan" if value != value else f"{value:.4f}"


def config_columns(space: SearchSpace) -> list[str]:
    """Column names of a configuration: method (when searched), canonized, γ per group, ε (when searched)."""
    return ((["method"] if len(space.methods) > 1 else []) + ["canonized"] + [f"γ {g}" for g in space.groups]
            + (["ε"] if space.epsilons else []))


def config_cells(trial: TrialResult, space: SearchSpace) -> list[str]:
    """The cells of :func:`config_columns` for one trial (``-`` where a parameter does not apply)."""
    c, gammas = trial.config, dict(trial.config.gammas)
    cells = [c.method] if len(space.methods) > 1 else []
    cells.append("yes" if c.canonized else "no")
    cells += [f"{gammas[g]:g}" if g in gammas else "-" for g in space.groups]
    if space.epsilons:
        cells.append("-" if c.epsilon is None else f"{c.epsilon:g}")
    return cells


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header), *("| " + " | ".join(r) + " |" for r in rows)]


def objective_header(results: SearchResults) -> list[str]:
    """``name ↑`` per objective."""
    return [f"{o.name} {o.arrow}" for o in results.objectives]


def markdown(results: SearchResults, space: SearchSpace, info: Mapping[str, object]) -> str:
    """The Markdown report (``info``: study, model, data, sampler, budget lines)."""
    lines = [f"# canonc search: {info.get('study', '')}", ""]
    lines += [f"- {k}: {v}" for k, v in info.items() if k != "study"]
    lines += [f"- completed trials: {len(results.trials)}", ""]
    front = [t for t, on in zip(results.trials, results.front) if on]
    lines += [f"## Pareto front ({len(front)} of {len(results.trials)} configurations)", ""]
    header = ["trial", *config_columns(space), *objective_header(results)]
    lines += _table(header, [[str(t.number), *config_cells(t, space), *map(_fmt, t.values)] for t in front])
    lines += ["", "## Best configuration per objective", ""]
    rows = [[f"{o.name} {o.arrow}", _fmt(best.values[j]), str(best.number), best.config.label()]
            for j, (o, best) in enumerate(zip(results.objectives, results.best().values()))]
    lines += _table(["objective", "best value", "trial", "configuration"], rows)
    final = results.hypervolume[-1] if len(results.hypervolume) else 0.0
    lines += ["", "## Hypervolume", "",
              f"{final:.4f} after {len(results.trials)} evaluations (objectives normalised to [0, 1] by this study's "
              f"ranges, 0 best; reference point {REFERENCE} in every objective).", "",
              "![hypervolume](hypervolume.png)", ""]
    if GAMMA_METHOD in space.methods:
        lines += ["## Metrics against γ per layer group", "",
                  "Mean over the configurations that give the group this γ, with a 95 % confidence band.", "",
                  "![metrics against γ](gamma.png)", ""]
    return "\n".join(lines)


def trials_csv(results: SearchResults, space: SearchSpace) -> str:
    """CSV of every completed trial: number, slot, configuration, objective values, on the front."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["trial", "slot", *config_columns(space), *(o.name for o in results.objectives), "pareto"])
    for t, on in zip(results.trials, results.front):
        writer.writerow([t.number, t.slot, *config_cells(t, space), *map(repr, t.values), int(on)])
    return out.getvalue()


def results_json(results: SearchResults, space: SearchSpace, info: Mapping[str, object]) -> dict:
    """Everything as one JSON-able dict."""
    return {
        "info": dict(info), "space": space.as_dict(),
        "objectives": [{"name": o.name, "metric": o.metric, "higher_is_better": o.higher_is_better}
                       for o in results.objectives],
        "trials": [{"trial": t.number, "slot": t.slot, "config": t.config.as_dict(),
                    "values": dict(zip((o.name for o in results.objectives), t.values)), "pareto": bool(on)}
                   for t, on in zip(results.trials, results.front)],
        "best": {name: t.number for name, t in results.best().items()},
        "hypervolume": {"reference": REFERENCE, "history": [float(v) for v in results.hypervolume]},
    }


def write_report(results: SearchResults, space: SearchSpace, outdir: Path, info: Mapping[str, object]) -> list[Path]:
    """Write every report file into ``outdir`` (created if missing); return their paths."""
    if not results.trials:
        raise InputError("the study has no completed trial yet; nothing to report")
    outdir = Path(outdir)
    try:
        outdir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"cannot create -o {outdir} ({exc.strerror}); choose another folder") from exc
    texts = {"report.md": markdown(results, space, info), "trials.csv": trials_csv(results, space),
             "results.json": json.dumps(results_json(results, space, info), indent=1, ensure_ascii=False)}
    written = [outdir / "hypervolume.png"]
    plot_hypervolume({str(info.get("sampler", "search")): results.hypervolume}, written[0])
    if GAMMA_METHOD in space.methods:
        written.append(outdir / "gamma.png")
        plot_gamma_overview(results, space.groups, space.gammas, written[-1])
        for j, o in enumerate(results.objectives):
            written.append(outdir / f"gamma-{o.name}.png")
            plot_gamma(results, j, space.groups, space.gammas, written[-1])
    for name, text in texts.items():  # the tables last: report.md links the figures
        written.append(outdir / name)
        atomic_write(written[-1], lambda tmp, text=text: tmp.write_text(text, encoding="utf-8"))
    return written
