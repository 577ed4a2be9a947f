"""Compare the canonization effects of ``canonc evaluate`` runs with the poster's table.

The poster (Pahde et al., ILSVRC2017, computed with quantus) reports each metric for EB,
LRP-α2β1 and LRP-ε+ on VGG-16, ResNet-18, EfficientNet-B0 and DenseNet-121, uncanonized and
canonized. For every (model, method, metric) this script sets the poster's direction of
``canonized − uncanonized`` beside ours (the paired mean ± 2 standard errors over images that
``canonc evaluate`` writes to ``results.json``) and counts where they agree. An effect of ours
within 2 standard errors (or 5e-4) of zero is "n.s."; a poster difference of 0.00 is "=".

Usage::

    python benchmarks/poster_directions.py vgg16=out/vgg13_bn/results.json resnet18=... \
        efficientnet_b0=... densenet121=... [--markdown PATH]
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

METRICS = ("sparseness", "region-perturbation", "rra", "rma", "avg-sensitivity", "random-logit")
METHODS = ("eb", "lrp-alpha2beta1", "lrp-epsilon-plus")
LABELS = {"eb": "EB", "lrp-alpha2beta1": "LRP-α2β1", "lrp-epsilon-plus": "LRP-ε+"}
# The poster's table: model → method → (no, yes) per metric, in METRICS order.
POSTER = {
    "vgg16": {"eb": ((.57, .59), (.35, .36), (.70, .71), (.68, .70), (.22, .18), (1.00, 1.00)),
              "lrp-alpha2beta1": ((.70, .84), (.38, .39), (.63, .67), (.65, .77), (.31, .34), (.59, .66)),
              "lrp-epsilon-plus": ((.51, .62), (.36, .39), (.69, .71), (.64, .71), (.19, .21), (.57, .54))},
    "resnet18": {"eb": ((.55, .57), (.29, .29), (.68, .69), (.66, .67), (.16, .14), (.97, .97)),
                 "lrp-alpha2beta1": ((.67, .76), (.32, .32), (.65, .67), (.69, .75), (.21, .26), (.65, .61)),
                 "lrp-epsilon-plus": ((.51, .58), (.30, .30), (.69, .70), (.65, .69), (.14, .15), (.70, .70))},
    "efficientnet_b0": {"eb": ((.85, .70), (.24, .27), (.73, .67), (.79, .72), (.42, .33), (.99, 1.00)),
                        "lrp-alpha2beta1": ((.75, .77), (.29, .20), (.72, .65), (.79, .73), (.48, .49), (.57, .51)),
                        "lrp-epsilon-plus": ((.50, .73), (.28, .30), (.75, .75), (.69, .79), (.12, .21), (.61, .65))},
    "densenet121": {"eb": ((.66, .62), (.15, .31), (.58, .72), (.53, .73), (.57, .17), (.75, .89)),
                    "lrp-alpha2beta1": ((.82, .81), (.25, .33), (.64, .71), (.68, .81), (.65, .28), (.40, .44)),
                    "lrp-epsilon-plus": ((.67, .66), (.26, .33), (.70, .74), (.71, .77), (.63, .19), (.39, .48))},
}


def _sign(value: float, noise: float = 0.0) -> int:
    return 0 if abs(value) <= noise else (1 if value > 0 else -1)


def compare(results: dict[str, dict]) -> tuple[list[dict], Counter]:
    """One row per (model, method, metric) with both effects and the verdict, and the verdict counts."""
    rows, verdicts = [], Counter()
    for model, result in results.items():
        effects = {(e["method"], e["metric"]): e for e in result["effects"]}
        for method in METHODS:
            for metric, (no, yes) in zip(METRICS, POSTER[model][method]):
                ours = effects.get((method, metric))
                if ours is None:
                    continue
                theirs = _sign(round(yes - no, 2))
                mine = _sign(ours["mean"], max(2 * ours["se"], 5e-4))  # below 5e-4: printed as ±0.000
                verdict = ("n.s." if mine == 0 and theirs != 0 else "agree" if mine == theirs
                           else "poster =" if theirs == 0 else "opposite")
                verdicts[verdict] += 1
                rows.append({"model": model, "method": method, "metric": metric, "poster": yes - no,
                             "ours": ours["mean"], "ours_2se": 2 * ours["se"], "verdict": verdict})
    return rows, verdicts


def markdown(rows: list[dict], verdicts: Counter) -> str:
    """A table per model (methods × metrics: poster Δ / our Δ ± 2 SE, verdict) and the counts."""
    out = []
    for model in dict.fromkeys(r["model"] for r in rows):
        out += [f"**{model}** (Δ = canonized − uncanonized: poster / ours ± 2 SE)", "",
                "| method | " + " | ".join(METRICS) + " |", "|---" * (len(METRICS) + 1) + "|"]
        for method in METHODS:
            cells = {r["metric"]: r for r in rows if r["model"] == model and r["method"] == method}
            out.append(f"| {LABELS[method]} | " + " | ".join(
                f"{c['poster']:+.2f} / {c['ours']:+.3f} ± {c['ours_2se']:.3f} {c['verdict']}" if (c := cells.get(m)) else "–"
                for m in METRICS) + " |")
        out.append("")
    total = sum(verdicts.values())
    out.append(f"{total} comparisons: " + ", ".join(f"{k} {v}" for k, v in verdicts.most_common()))
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Read ``MODEL=results.json`` pairs, print (and optionally write) the comparison."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help=f"MODEL=PATH with MODEL one of {', '.join(POSTER)}")
    parser.add_argument("--markdown", type=Path, help="also write the comparison here")
    args = parser.parse_args(argv)
    results = {}
    for run in args.runs:
        model, _, path = run.partition("=")
        if model not in POSTER or not path:
            parser.error(f"expected MODEL=PATH with MODEL one of {', '.join(POSTER)}, got {run!r}")
        results[model] = json.loads(Path(path).read_text())
    text = markdown(*compare(results))
    print(text, end="")
    if args.markdown:
        args.markdown.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
