"""The example-heatmap grid of an evaluation: images × (method, canonized), GT mask outlined.

Rows are the example images; the first column shows the image, the others the relevance
of each (method, canonized) row of the table in canonc's diverging colours (red
positive, blue negative, scaled by each map's ``max|R|``), with the ground-truth mask's
outline in black.
"""

from __future__ import annotations

from pathlib import Path

from ..codegen import atomic_write
from .data import Benchmark
from .evaluate import METHOD_LABELS, EvaluationResult
from .heatmap import colorize


def heatmap_grid(result: EvaluationResult, benchmark: Benchmark, path: str | Path, mask: str = "segmentation") -> None:
    """Write the grid of ``result.examples`` as a PNG at ``path`` (atomically)."""
    from matplotlib.figure import Figure

    rows = result.rows()
    index = result.example_index
    masks = (benchmark.masks if mask == "segmentation" else benchmark.boxes)[index, 0].float()
    pixels = benchmark.pixels()[index].permute(0, 2, 3, 1)
    fig = Figure(figsize=(1.6 * (len(rows) + 1), 1.7 * len(index)))
    axes = fig.subplots(len(index), len(rows) + 1, squeeze=False)
    for i, sample in enumerate(index):
        panels = [("image", pixels[i].numpy())]
        panels += [(f"{METHOD_LABELS.get(m, m)}\ncanonized {c}", colorize(result.examples[(m, c)][i])) for m, c in rows]
        for j, (title, picture) in enumerate(panels):
            ax = axes[i, j]
            ax.imshow(picture, interpolation="nearest")
            ax.contour(masks[i].numpy(), levels=[0.5], colors="black", linewidths=0.8)
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(title, fontsize=8)
        axes[i, 0].set_ylabel(benchmark.classes[int(result.labels[sample])], fontsize=8)
    fig.tight_layout()
    atomic_write(Path(path), lambda tmp: fig.savefig(tmp, format="png", dpi=100))

