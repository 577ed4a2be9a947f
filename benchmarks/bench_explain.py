"""Attribution time of LRP-ε+ on canonized models vs zennit on the originals, one process, CPU.

- ResNet-50: canonc's canonized model vs zennit's ``EpsilonPlus`` with ``ResNetCanonizer``
  on the original (zennit's own canonization, registered once).
- DenseNet-121: canonc's canonized model vs zennit's ``EpsilonPlus`` on the uncanonized
  model (zennit has no DenseNet canonizer).

Batch 8 at 224 px, float32, random weights with randomized BN. Both sides register their
composite once and are timed per attribution (forward + modified backward), interleaved;
the medians of wall-clock time are compared (CPU time is printed too). Prints ``name: ratio``
(canonc time / zennit time; target ≤ 0.9).

Run: ``python benchmarks/bench_explain.py [--reps 7]``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torchvision
from zennit.attribution import Gradient
from zennit.composites import EpsilonPlus
from zennit.torchvision import ResNetCanonizer

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import canonc  # noqa: E402
from canonc.xai import Explainer  # noqa: E402
from models.zoo import randomize_bn  # noqa: E402


def _model(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return randomize_bn(torchvision.models.get_model(name, weights=None), seed=0)


def _time(fn: Callable[[], object]) -> tuple[float, float]:
    """Wall-clock and process CPU time of one call (CPU time is steadier on a busy machine)."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def bench(name: str, canonizers: list, x: torch.Tensor, targets: torch.Tensor, reps: int) -> float:
    """Median time ratio canonc / zennit for one model; prints the medians."""
    original = _model(name)
    canonical = canonc.canonize(original, torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(1))).module
    one_hot = torch.eye(1000)[targets]
    zennit_attr = Gradient(original, EpsilonPlus(canonizers=canonizers))
    with zennit_attr, Explainer(canonical, "lrp-epsilon-plus") as ours:
        run_zennit = lambda: zennit_attr(x, one_hot)  # noqa: E731
        run_ours = lambda: ours(x, targets)  # noqa: E731
        run_zennit(), run_ours()  # warm-up
        t_zennit, t_ours = [], []
        for _ in range(reps):
            t_zennit.append(_time(run_zennit))
            t_ours.append(_time(run_ours))
    (mz, cz), (mo, co) = ([statistics.median(t) for t in zip(*ts)] for ts in (t_zennit, t_ours))
    print(f"# {name}: canonc {mo:.3f}s  zennit {mz:.3f}s wall; canonc {co:.3f}s  zennit {cz:.3f}s CPU; "
          f"CPU-time ratio {co / cz:.3f}  (medians of {reps}, batch {x.shape[0]})", flush=True)
    return mo / mz


def main() -> None:
    """Run both comparisons and print ``name: ratio`` lines."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--models", default="resnet50,densenet121", help="comma-separated subset to run")
    args = parser.parse_args()
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(args.batch, 3, args.size, args.size, generator=gen)
    targets = torch.randint(0, 1000, (args.batch,), generator=gen)
    print(f"# torch {torch.__version__}, {torch.get_num_threads()} threads, CPU", flush=True)
    cases = {  # model → (ratio name, zennit canonizers on the original)
        "resnet50": ("resnet50_epsilon_plus_vs_zennit_resnetcanonizer", [ResNetCanonizer()]),
        "densenet121": ("densenet121_epsilon_plus_vs_uncanonized", []),
    }
    for model in args.models.split(","):
        key, canonizers = cases[model]
        print(f"{key}: {bench(model, canonizers, x, targets, args.reps):.3f}", flush=True)


if __name__ == "__main__":
    main()
