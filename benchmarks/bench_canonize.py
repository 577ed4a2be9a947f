"""canonc speed, side by side with torch's own BN fuser, in one process.

Prints ``name: value`` lines:

- ``canonize_s/<model>``: trace + passes (``canonc.core.build`` on the float64 copy, no
  gate) at 224 px, best of ``--repeats``, wall clock and process CPU time
  (target: resnet50 < 0.5 s on 2 cores);
- ``forward_ratio/<model>``: forward time of the canonized model divided by that of
  ``torch.fx.experimental.optimization.fuse`` (BN folded into conv, nothing else changed),
  batch 8, 224 px, float32; repetitions interleaved, medians compared, each model in a fresh
  process (target ≤ 1.05).
  ``forward_cpu_ratio`` is the same with process CPU time, steadier on a loaded machine.

Large activations (canonc's stacked residuals exceed glibc's 32 MB mmap threshold) pay
page faults on every allocation; torch's ``THP_MEM_ALLOC_ENABLE=1`` backs them with huge
pages. The first line says whether it is set.
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
import torchvision
from torch import nn
from torch.fx.experimental.optimization import fuse

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import canonc  # noqa: E402
from canonc.core import build  # noqa: E402
from models.zoo import randomize_bn  # noqa: E402

SIDE = 224


def zoo_model(name: str) -> nn.Module:
    """Random-weight torchvision ``name`` with randomized BN (calibrated at 64 px: timing only)."""
    torch.manual_seed(0)
    return randomize_bn(torchvision.models.get_model(name, weights=None), input_shape=(4, 3, 64, 64))


def canonize_seconds(model: nn.Module, repeats: int) -> tuple[float, float]:
    """Best wall-clock and CPU seconds of trace + passes at 224 px."""
    model64 = copy.deepcopy(model).double().eval()
    x = (torch.randn(1, 3, SIDE, SIDE, dtype=torch.float64),)
    best_wall = best_cpu = float("inf")
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        build(model64, x, {"strategy": "auto"})
        best_wall = min(best_wall, time.perf_counter() - wall)
        best_cpu = min(best_cpu, time.process_time() - cpu)
    return best_wall, best_cpu


def _time(module: nn.Module, x: torch.Tensor) -> tuple[float, float]:
    """Wall-clock and process CPU seconds of one forward."""
    wall, cpu = time.perf_counter(), time.process_time()
    module(x)
    return time.perf_counter() - wall, time.process_time() - cpu


def forward_times(model: nn.Module, batch: int, repeats: int) -> dict[str, float]:
    """Median wall and CPU forward seconds of canonized and fx-fused ``model``, and their max |Δ|/max|y|."""
    x = torch.randn(batch, 3, SIDE, SIDE)
    canon = canonc.canonize(model, x[:1], verify=False).module
    fused = fuse(model)
    times: dict[str, list[tuple[float, float]]] = {"canonc": [], "fx_fuse": []}
    with torch.no_grad():
        y = fused(x)  # also the warm-ups
        rel = ((canon(x) - y).abs().max() / y.abs().max()).item()
        for r in range(repeats):
            order = [("canonc", canon), ("fx_fuse", fused)]
            for key, module in order if r % 2 == 0 else order[::-1]:
                times[key].append(_time(module, x))
    out = {"rel_diff": rel}
    for key, pairs in times.items():
        out[f"{key}_wall"] = statistics.median(p[0] for p in pairs)
        out[f"{key}_cpu"] = statistics.median(p[1] for p in pairs)
    return out


def print_forward(name: str, batch: int, repeats: int) -> None:
    """Print the forward lines of ``name``."""
    t = forward_times(zoo_model(name), batch, repeats)
    for clock in ("wall", "cpu"):
        print(f"forward_{clock}_s/{name}: canonc {t[f'canonc_{clock}']:.3f}  fx_fuse {t[f'fx_fuse_{clock}']:.3f}")
    print(f"forward_ratio/{name}: {t['canonc_wall'] / t['fx_fuse_wall']:.3f}")
    print(f"forward_cpu_ratio/{name}: {t['canonc_cpu'] / t['fx_fuse_cpu']:.3f}"
          f"  (outputs differ by {t['rel_diff']:.1g} of max |y|: fp32 rounding of the folds)", flush=True)


def main(argv: list[str] | None = None) -> int:
    """Run both benchmarks and print ``name: value`` lines."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="canonize runs (best) and forward pairs (median)")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--forward-only", metavar="MODEL", help=argparse.SUPPRESS)  # one comparison, this process
    args = parser.parse_args(argv)
    if args.forward_only:
        print_forward(args.forward_only, args.batch, args.repeats)
        return 0
    thp = os.environ.get("THP_MEM_ALLOC_ENABLE", "0")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, THP_MEM_ALLOC_ENABLE={thp}")
    # Each forward comparison runs in a fresh process: large earlier allocations (float64 builds,
    # another model's activations) leave glibc's heap in a state that slows whichever side
    # allocates differently by up to 13 %, so in one process the ratio depends on the order.
    for name in ("resnet50", "vgg16_bn"):
        cmd = [sys.executable, __file__, "--forward-only", name, "--batch", str(args.batch), "--repeats", str(args.repeats)]
        print(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout, end="", flush=True)
    for name in ("resnet50", "efficientnet_b0"):
        wall, cpu = canonize_seconds(zoo_model(name), args.repeats)
        print(f"canonize_s/{name}: {wall:.3f}  (cpu {cpu:.3f})", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
