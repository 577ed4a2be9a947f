"""``make demo``: canonize a bundled model and print its verified report, then the evaluation table
of the trained DenseNet-121 topology, uncanonized and canonized, on the shapes benchmark."""

from __future__ import annotations

import sys
from pathlib import Path

from canonc.cli import main

OUT = Path("out/demo")
DEMO_DATA = "shapes:32"
# Pahde et al.'s Region Perturbation (14 px patches, 50 regions at 224 px) scaled to 64 px.
POSTER_SETTINGS = ["--set", "region-perturbation.patch_size=4", "--set", "region-perturbation.regions=50"]


def run() -> int:
    """Canonize the bundled ResNet-18 into ``out/demo/``, then evaluate ``models:densenet121-shapes``."""
    OUT.mkdir(parents=True, exist_ok=True)
    rc = main([
        "models:resnet18", "--input-shape", "1,3,64,64",
        "-o", str(OUT / "resnet18_canon.pt"),
        "--emit-dir", str(OUT / "resnet18_canon"),
        "--report", str(OUT / "resnet18_report.json"),
    ])
    if rc:
        return rc
    print(f"\nEvaluation of models:densenet121-shapes on {DEMO_DATA} (EB, LRP-α2β1, LRP-ε+; canonized no/yes; "
          "the poster's six metrics):", flush=True)
    return main(["evaluate", "models:densenet121-shapes", "--data", DEMO_DATA, *POSTER_SETTINGS,
                 "-o", str(OUT / "evaluate")])


if __name__ == "__main__":
    sys.exit(run())
