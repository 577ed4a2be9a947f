"""``make demo``: canonize a bundled model and print its verified report."""

from __future__ import annotations

import sys
from pathlib import Path

from canonc.cli import main

OUT = Path("out/demo")


def run() -> int:
    """Canonize the bundled ResNet-18 (randomized BN statistics) into ``out/demo/``."""
    OUT.mkdir(parents=True, exist_ok=True)
    return main([
        "models:resnet18", "--input-shape", "1,3,64,64",
        "-o", str(OUT / "resnet18_canon.pt"),
        "--emit-dir", str(OUT / "resnet18_canon"),
        "--report", str(OUT / "resnet18_report.json"),
    ])


if __name__ == "__main__":
    sys.exit(run())
