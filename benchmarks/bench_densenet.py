"""DenseNet-121 canonization cost, in one process.

Prints ``name: value`` lines:

- ``canonize_s/<strategy>``: trace + passes of ``canonize(verify=False)``, best of
  ``--repeats`` (target for ``auto``: < 1.0 s on 2 cores), and ``canonize_cpu_s``: the
  CPU time of the whole call (copy + trace + passes + artifact), which a loaded machine
  inflates less than wall time;
- ``forward_ratio/<strategy>``: forward time of the canonized model over the original's,
  batch 1, ``--side`` px, float32; repetitions interleaved, medians compared
  (target for ``auto``: <= 1.0);
- ``param_ratio/<strategy>``, ``flops_ratio/<strategy>``: parameters and FLOPs of the
  canonized model over the original's.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import torchvision
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import canonc  # noqa: E402
from models.zoo import randomize_bn  # noqa: E402


def forward_medians(models: dict[str, nn.Module], x: torch.Tensor, repeats: int) -> dict[str, float]:
    """Median forward time of each model, repetitions interleaved so load hits all alike."""
    times: dict[str, list[float]] = {k: [] for k in models}
    with torch.no_grad():
        for m in models.values():
            m(x)
        for _ in range(repeats):
            for k, m in models.items():
                start = time.perf_counter()
                m(x)
                times[k].append(time.perf_counter() - start)
    return {k: statistics.median(v) for k, v in times.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--side", type=int, default=224)
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args()
    torch.manual_seed(0)
    model = randomize_bn(torchvision.models.densenet121(weights=None), input_shape=(4, 3, 64, 64))
    x = torch.randn(1, 3, args.side, args.side)
    models: dict[str, nn.Module] = {"original": model}
    for strategy in ("auto", "untangle"):
        best, best_cpu = float("inf"), float("inf")
        for _ in range(args.repeats if strategy == "auto" else 1):
            cpu = time.process_time()
            res = canonc.canonize(model, x, strategy=strategy, verify=False)
            best_cpu = min(best_cpu, time.process_time() - cpu)
            best = min(best, res.report.timings_s["trace"] + res.report.timings_s["passes"])
        print(f"canonize_s/{strategy}: {best:.3f}")
        print(f"canonize_cpu_s/{strategy}: {best_cpu:.3f}")
        print(f"param_ratio/{strategy}: {res.report.params_after / res.report.params_before:.3f}")
        print(f"flops_ratio/{strategy}: {res.report.flops_after / res.report.flops_before:.3f}")
        models[strategy] = res.module
    medians = forward_medians(models, x, args.repeats)
    for strategy in ("auto", "untangle"):
        print(f"forward_ratio/{strategy}: {medians[strategy] / medians['original']:.3f}")
    print(f"forward_s/original: {medians['original']:.4f}")


if __name__ == "__main__":
    main()
