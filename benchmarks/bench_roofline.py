"""How far any exact metrics framework can beat quantus on this machine: floating-point work and the CPU's peak.

``bench_metrics.py`` measures canonc against quantus; this script asks what the arithmetic
allows. For a case of ``bench_metrics.py`` (same model, images and settings, fewer images by
default) it

- counts the floating-point operations of canonc's and of quantus's run of the six metrics:
  every aten op that has a FLOP formula in ``torch.utils.flop_counter`` (convolutions and their
  backward, matrix products), counted by a dispatch mode, on runs that are not timed;
- counts those of one LRP-ε+ explanation per input (the forward pass, the z+ pass and its
  transpose: three convolutions of the layer's size, each needed for the exact relevance);
- measures the machine's float32 peak: the best rate of a 4096³ matrix product and a VGG-sized
  convolution (:func:`peak_gflops`);
- times both sides in the same process, without the counter.

It prints ``name: value`` lines: GFLOP per image of each side and their ratio, each side's
achieved rate as a share of the peak, the measured time ratio, and two bounds on that ratio,
quantus's measured seconds over canonc's seconds if canonc ran (a) all its operations,
(b) only its 12 unavoidable explained inputs per image (1 base, 10 Avg-Sensitivity, 1 Random
Logit), at the peak. Bound (b) is the most any exact implementation of these metrics can
reach on this machine against this quantus run; where it is below 10, the 10× target cannot be
met here by making the metrics framework faster.

Run: ``python benchmarks/bench_roofline.py [--case NAME] [--images N] [--quantus-explain canonc,zennit] [--json PATH]``.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import flop_registry

sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parents[1])]

from bench_metrics import CASES, METHOD, QUANTUS_CHUNK, _timed, prepare, run_canonc, run_quantus  # noqa: E402

from canonc.xai import explain  # noqa: E402

EXPLAINED_PER_IMAGE = 12  # base, 10 Avg-Sensitivity noise draws, 1 Random Logit class
PEAK_SIZE, PEAK_REPS = 4096, 5  # matrix side, timed repetitions of each kernel


class FlopCount(TorchDispatchMode):
    """Floating-point operations of every aten op with a formula in ``torch.utils.flop_counter``, by op.

    Unlike ``FlopCounterMode`` it tracks no modules, so it also counts inside ``autograd.grad``
    with backward hooks (zennit's and canonc's rules).
    """

    def __init__(self) -> None:
        super().__init__()
        self.by_op: Counter[str] = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        formula = flop_registry.get(func._overloadpacket)
        if formula is not None:
            self.by_op[str(func._overloadpacket)] += formula(*args, **kwargs, out_val=out)
        return out

    @property
    def total(self) -> int:
        """All counted operations."""
        return sum(self.by_op.values())


def counted(fn: Callable[[], object]) -> FlopCount:
    """The operations of one call of ``fn``."""
    with FlopCount() as count:
        fn()
    return count


def _best_rate(flop: int, fn: Callable[[], object]) -> float:
    """Best GFLOP/s of ``PEAK_REPS`` timed calls of ``fn`` (after one warm-up), which does ``flop`` operations."""
    fn()
    return flop / min(_timed(fn)[1] for _ in range(PEAK_REPS)) / 1e9


def peak_gflops() -> dict[str, float]:
    """float32 rates of the kernels LRP runs on, in GFLOP/s on the current torch threads.

    A 4096³ matrix product (MKL) and a VGG-sized 3×3 convolution, 256 → 256 channels at 56²,
    batch 16 (oneDNN), contiguous and channels-last; ``"peak"`` is the best of them.
    """
    gen = torch.Generator().manual_seed(0)
    a, b = torch.randn(PEAK_SIZE, PEAK_SIZE, generator=gen), torch.randn(PEAK_SIZE, PEAK_SIZE, generator=gen)
    x, w = torch.randn(16, 256, 56, 56, generator=gen), torch.randn(256, 256, 3, 3, generator=gen)
    x_cl, conv_flop = x.contiguous(memory_format=torch.channels_last), 2 * 16 * 256 * 256 * 9 * 56 * 56
    rates = {"matmul": _best_rate(2 * PEAK_SIZE ** 3, lambda: torch.mm(a, b)),
             "conv": _best_rate(conv_flop, lambda: torch.nn.functional.conv2d(x, w, padding=1)),
             "conv_channels_last": _best_rate(conv_flop, lambda: torch.nn.functional.conv2d(x_cl, w, padding=1))}
    return {**rates, "peak": max(rates.values())}


def cpu_name() -> str:
    """The CPU's model name from ``/proc/cpuinfo`` (``platform.processor()`` where there is none)."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return platform.processor()
    return next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), platform.processor())


def bench(case: str, args: argparse.Namespace) -> dict:
    """One case: operation counts, rates and bounds; printed and returned as a dict."""
    c = prepare(case, args)
    n = len(c.x)
    rates = peak_gflops()
    peak = rates["peak"]
    print(f"{case}_peak_gflops: {peak:.1f}  (best float32 kernel, {torch.get_num_threads()} threads: "
          + ", ".join(f"{k} {v:.1f}" for k, v in rates.items() if k != "peak") + ")", flush=True)
    xb, yb = c.x[:c.batch].to(args.device), c.y[:c.batch].to(args.device)
    per_explained = counted(lambda: explain(c.model, xb, yb, METHOD)).total / len(xb)
    with torch.no_grad():
        per_forward = counted(lambda: c.model(xb)).total / len(xb)
    print(f"{case}_gflop_per_input: forward {per_forward / 1e9:.3f}, LRP-ε+ explanation {per_explained / 1e9:.3f} "
          f"({per_explained / per_forward:.2f} forwards)")
    canonc_run = lambda: run_canonc(c.model, c.x, c.y, c.masks, args.device, c.patch, c.batch)  # noqa: E731
    c_ops = counted(canonc_run)
    *_, c_wall, _ = canonc_run()
    floor = EXPLAINED_PER_IMAGE * per_explained
    print(f"{case}_canonc_gflop_per_image: {c_ops.total / n / 1e9:.2f}  (its {EXPLAINED_PER_IMAGE} explained inputs: "
          f"{floor / 1e9:.2f}, {floor * n / c_ops.total:.0%})")
    print(f"{case}_canonc_s_per_image: {c_wall / n:.3f}  (rate {c_ops.total / c_wall / 1e9:.1f} GFLOP/s, "
          f"{c_ops.total / c_wall / 1e9 / peak:.0%} of peak)")
    result = {"case": case, "cpu": cpu_name(), "images": n, "size": c.size, "model": c.what, "threads": torch.get_num_threads(),
              "kernel_gflops": rates, "gflop_per_forward_input": per_forward / 1e9,
              "gflop_per_explained_input": per_explained / 1e9, "canonc_gflop": c_ops.total / 1e9,
              "canonc_gflop_by_op": {k: v / 1e9 for k, v in c_ops.by_op.items()}, "canonc_s": c_wall, "quantus": {}}
    for kind in args.quantus_explain:
        quantus_run = lambda k=kind: run_quantus(c.model, c.x, c.y, c.masks, args.device, c.num_classes,  # noqa: E731
                                                 c.patch, c.batch, args.chunk, k)
        q_ops = counted(quantus_run)
        _, q_parts, _, _ = quantus_run()
        q_wall = sum(w for w, _ in q_parts.values())
        tag = f"{case}_quantus[{kind}]"
        bound_all, bound_floor = q_wall * peak * 1e9 / c_ops.total, q_wall * peak * 1e9 / (floor * n)
        print(f"{tag}_gflop_per_image: {q_ops.total / n / 1e9:.2f}  (quantus / canonc {q_ops.total / c_ops.total:.2f})")
        print(f"{tag}_s_per_image: {q_wall / n:.3f}  (rate {q_ops.total / q_wall / 1e9:.1f} GFLOP/s, "
              f"{q_ops.total / q_wall / 1e9 / peak:.0%} of peak)")
        print(f"{tag}_ratio_measured: {q_wall / c_wall:.2f}")
        print(f"{tag}_ratio_bound_canonc_at_peak: {bound_all:.2f}  (canonc's operations at the peak)")
        print(f"{tag}_ratio_bound_explanations_at_peak: {bound_floor:.2f}  (only its {EXPLAINED_PER_IMAGE} explained "
              "inputs per image, at the peak: the most any exact implementation reaches here; target >= 10)")
        result["quantus"][kind] = {"gflop": q_ops.total / 1e9, "gflop_by_op": {k: v / 1e9 for k, v in q_ops.by_op.items()},
                                   "s": q_wall, "ratio_measured": q_wall / c_wall,
                                   "ratio_bound_canonc_at_peak": bound_all,
                                   "ratio_bound_explanations_at_peak": bound_floor}
    return result


def main() -> None:
    """Run the chosen cases and print ``name: value`` lines."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", choices=[*CASES, "all"], default="all")
    parser.add_argument("--images", type=int, help="number of images (default the case's quick count)")
    parser.add_argument("--quantus-explain", type=lambda v: v.split(","), default=["canonc", "zennit"],
                        help="quantus's explain function(s), comma-separated: canonc, zennit (default both)")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args()
    args.device, args.quick, args.batch, args.chunk = "cpu", True, None, QUANTUS_CHUNK  # what bench_metrics.prepare reads
    results = [bench(case, args) for case in (CASES if args.case == "all" else [args.case])]
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
