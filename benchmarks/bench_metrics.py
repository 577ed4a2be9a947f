"""End-to-end time of the poster's six metrics: canonc vs quantus 0.6.0, one process, same settings.

Cases (``--case``):

- ``vgg16_bn-224``: torchvision VGG-16-BN, random weights, BN randomized
  (``models.randomize_bn``), canonized; 64 shapes-benchmark images at 224 px; targets are the
  predicted classes (of 1000).
- ``densenet121-shapes-64``: the trained narrow DenseNet-121 ``models:densenet121-shapes``,
  canonized; 256 images of the shapes test split at 64 px; targets are the labels (of 6).
  Without a committed checkpoint the untrained topology (BN randomized) is used, and said so.
- ``tinyconv-224``: one strided conv, ReLU, pooling and a 1000-class linear layer, random
  weights; 64 images at 224 px. Its forward and LRP passes cost almost nothing, so this case
  shows the frameworks' own overhead, which the real models' compute hides on a CPU.

Both sides explain with ``lrp-epsilon-plus`` on the canonized model. quantus gets an
``explain_func`` and computes its base explanations itself (``a_batch=None``, as the paper's
code: once per metric); canonc computes them once per sample and shares them. Which function
quantus explains with (``--quantus-explain``, one or both, each a run of quantus):

- ``canonc``: the same function as canonc, :func:`canonc.xai.explain`; the ratio then shows
  the metrics frameworks alone.
- ``zennit``: quantus's own ``quantus.explain`` with ``xai_lib="zennit"`` and zennit's
  ``EpsilonPlus`` composite, what a quantus user runs; canonc explains with its own rules
  (the same relevance: the benchmark prints the largest difference on the first batch,
  relative to the largest relevance).

Settings, identical on both sides:

- Sparseness: ``abs``, normalised (both defaults).
- Region Perturbation: MoRF, black baseline, softmax, 50 regions of 14 px (224 px) or 4 px (64 px).
- RRA, RMA: ``abs=True`` (Pahde et al.), normalised.
- Avg-Sensitivity: 10 samples (the paper), ``U(−0.2, 0.2)`` noise, normalised maps. quantus draws
  the noise from numpy's global generator, which its Random Logit reseeds (42) and nothing else
  seeds: it is seeded (0) at the start of each quantus run, so both runs draw the same noise and
  their mean scores agree (a run's mean is heavy-tailed: unseeded, two runs gave 5.2 and 7.7).
- Random Logit: SSIM, ``num_classes`` of the model, seed 42.
- quantus ``batch_size=64`` per chunk (``--chunk``); explanation calls of at most the case's
  batch (``--batch``) inputs on both sides (canonc's ``batch_size``; quantus's ``explain_func``
  splits its chunk the same way). On a GPU, where a small model's call costs its kernel launches
  and zennit's hooks rather than arithmetic, ``--batch 256 --chunk 256`` shows both sides at a
  larger batch.

canonc runs in its default mode (per-sample normalisation and seeds, 2-D SSIM). Prints
``name: value`` lines: wall and process-CPU time of each side, their ratio (quantus / canonc;
target ≥ 10 on CPU), each metric's share of the time, each side's explained inputs and plain
forward inputs (a hook on the model's root; canonc's incremental Region Perturbation passes do
not go through it), the seconds quantus spent inside its explanation calls, each side's mean
score per metric, and the ratio that canonc's own explanations allow: quantus's time over
canonc's 12 explained inputs per image at canonc's measured cost per explained input. On a CPU
with a real model no metrics framework can beat that bound, since each explained input is one
LRP pass of the model.

Run: ``python benchmarks/bench_metrics.py [--case NAME] [--device cuda] [--quick] [--images N] [--batch B]
[--chunk C] [--quantus-explain canonc,zennit] [--json PATH]``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torchvision

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import canonc  # noqa: E402
from canonc.errors import InputError  # noqa: E402
from canonc.load import load  # noqa: E402
from canonc.xai import explain  # noqa: E402
from canonc.xai.data import TEST_SEED, shapes_benchmark  # noqa: E402
from canonc.xai.metrics import POSTER_METRICS, aggregate, evaluate_metrics  # noqa: E402
from models.zoo import randomize_bn  # noqa: E402

METHOD = "lrp-epsilon-plus"
QUANTUS_CHUNK = 64


def _vgg16_bn() -> tuple[torch.nn.Module, str]:
    torch.manual_seed(0)
    return randomize_bn(torchvision.models.vgg16_bn(weights=None), seed=0), "VGG-16-BN, random weights"


def _tiny_conv() -> tuple[torch.nn.Module, str]:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 5, stride=4, padding=2), torch.nn.ReLU(), torch.nn.AvgPool2d(8),
                                torch.nn.Flatten(), torch.nn.Linear(8 * 7 * 7, 1000))
    return model.eval(), "tiny conv net, random weights"


def _densenet_shapes() -> tuple[torch.nn.Module, str]:
    try:
        return load("models:densenet121-shapes").model.eval(), "trained DenseNet-121 topology (models:)"
    except InputError as exc:
        from models.shapes import ARCHITECTURES

        print(f"# {exc}; using the untrained topology", flush=True)
        torch.manual_seed(0)
        return randomize_bn(ARCHITECTURES["densenet121-shapes"](), seed=0), "UNTRAINED DenseNet-121 topology"


CASES = {  # name → (model builder, images, quick images, size, region patch size, explanation batch)
    "vgg16_bn-224": (_vgg16_bn, 64, 4, 224, 14, 16),
    "densenet121-shapes-64": (_densenet_shapes, 256, 32, 64, 4, 64),
    "tinyconv-224": (_tiny_conv, 64, 8, 224, 14, 64),
}


def _timed(fn: Callable[[], object]) -> tuple[object, float, float]:
    """Result, wall-clock and process-CPU seconds of one call."""
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - wall, time.process_time() - cpu


class RowCounter:
    """Counts the input rows of every forward call of a model (a hook on the root module only)."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.rows = 0
        self.handle = model.register_forward_pre_hook(self._count)

    def _count(self, module: torch.nn.Module, args: tuple) -> None:
        self.rows += len(args[0])

    def close(self) -> int:
        self.handle.remove()
        return self.rows


def _quantus_metrics(num_classes: int, patch: int) -> dict[str, object]:
    import quantus

    return {
        "sparseness": quantus.Sparseness(disable_warnings=True),
        "region-perturbation": quantus.RegionPerturbation(patch_size=patch, regions_evaluation=50,
                                                          disable_warnings=True),
        "rra": quantus.RelevanceRankAccuracy(abs=True, disable_warnings=True),
        "rma": quantus.RelevanceMassAccuracy(abs=True, disable_warnings=True),
        "avg-sensitivity": quantus.AvgSensitivity(nr_samples=10, normalise=True, disable_warnings=True),
        "random-logit": quantus.RandomLogit(num_classes=num_classes, seed=42, disable_warnings=True),
    }


def quantus_explain_func(kind: str, device: str, batch: int, explained: list[int]) -> Callable[..., np.ndarray]:
    """quantus's ``explain_func``: canonc's :func:`explain` or quantus's own zennit path, ``batch`` inputs a call."""
    import quantus
    from zennit.composites import EpsilonPlus

    def one_call(model: torch.nn.Module, inputs: np.ndarray, targets: np.ndarray) -> np.ndarray:
        if kind == "zennit":
            return quantus.explain(model, inputs, targets, xai_lib="zennit", composite=EpsilonPlus, device=device)
        xs, ts = torch.as_tensor(inputs, dtype=torch.float32), torch.as_tensor(targets)
        return explain(model, xs.to(device), ts.to(device), METHOD, strict=False).cpu().numpy()

    def explain_func(model: torch.nn.Module, inputs: np.ndarray, targets: np.ndarray, **kwargs: object) -> np.ndarray:
        explained[0] += len(inputs)
        return np.concatenate([one_call(model, inputs[i:i + batch], targets[i:i + batch])
                               for i in range(0, len(inputs), batch)])

    return explain_func


def run_quantus(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, masks: torch.Tensor, device: str,
                num_classes: int, patch: int, batch: int, chunk: int, kind: str) -> tuple[dict, dict, int, float]:
    """quantus's six metrics, each timed; returns per-metric means, seconds, explained inputs and the
    seconds spent in explanation calls."""
    explained, explain_seconds = [0], [0.0]
    timed_func = quantus_explain_func(kind, device, batch, explained)

    def explain_func(*args: object, **kwargs: object) -> np.ndarray:
        out, wall, _ = _timed(lambda: timed_func(*args, **kwargs))
        explain_seconds[0] += wall
        return out

    means, seconds = {}, {}
    np.random.seed(0)  # quantus's Avg-Sensitivity noise: the same draws in every run
    arrays = {"x_batch": x.numpy(), "y_batch": y.numpy(), "s_batch": masks.numpy().astype(np.float32)}
    for name, metric in _quantus_metrics(num_classes, patch).items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            scores, wall, cpu = _timed(lambda m=metric: m(model, a_batch=None, explain_func=explain_func,
                                                          device=device, batch_size=chunk, **arrays))
        scores = np.asarray(scores, dtype=np.float64)
        # Region Perturbation returns curves; the AOPC-like summary is their mean (np.trapz is gone)
        means[name] = float(np.nanmean(scores.mean(1) if scores.ndim == 2 else scores))
        seconds[name] = (wall, cpu)
        print(f"# quantus {name}: {wall:.1f} s wall, {cpu:.1f} s CPU", flush=True)
    return means, seconds, explained[0], explain_seconds[0]


def run_canonc(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, masks: torch.Tensor, device: str,
               patch: int, batch: int) -> tuple[dict, dict, float, float]:
    """canonc's ``evaluate_metrics`` on the six metrics; returns means, per-part seconds, wall and CPU."""
    settings = {"region-perturbation": {"patch_size": patch, "regions": 50},
                "avg-sensitivity": {"n_samples": 10}, "random-logit": {"seed": 42}}
    timings: dict[str, float] = {}
    scores, wall, cpu = _timed(lambda: evaluate_metrics(
        model, x.to(device), y.to(device), method=METHOD, metrics=POSTER_METRICS, masks=masks.to(device),
        batch_size=batch, settings=settings, timings=timings))
    return aggregate(scores), timings, wall, cpu


def _relevance_gap(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, device: str, batch: int) -> float:
    """Largest difference between quantus's zennit path and canonc's explain on one batch, over the largest value."""
    ours = explain(model, x[:batch].to(device), y[:batch].to(device), METHOD).cpu().numpy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # quantus warns that no attributor is named: zennit's Gradient is meant
        theirs = quantus_explain_func("zennit", device, batch, [0])(model, x[:batch].numpy(), y[:batch].numpy())
    return float(np.abs(theirs.reshape(ours.shape) - ours).max() / np.abs(ours).max())


@dataclass
class Case:
    """A case made ready: the canonized model on its device, the images, masks and targets."""

    model: torch.nn.Module
    what: str
    x: torch.Tensor
    y: torch.Tensor
    masks: torch.Tensor
    num_classes: int
    size: int
    patch: int
    batch: int
    per_forward: float  # seconds of one full forward pass per input


def prepare(case: str, args: argparse.Namespace) -> Case:
    """Build, canonize and warm up a case's model; targets are the labels or the predicted classes."""
    build, n_full, n_quick, size, patch, batch = CASES[case]
    n, batch = args.images or (n_quick if args.quick else n_full), args.batch or batch
    model, what = build()
    data = shapes_benchmark(n, size=size, seed=TEST_SEED)
    model = canonc.canonize(model, data.images[:1]).module.to(args.device).eval()
    with torch.no_grad():  # also the forward warm-up
        logits = torch.cat([model(data.images[i:i + batch].to(args.device)).cpu() for i in range(0, n, batch)])
        _, per_forward, _ = _timed(lambda: model(data.images[:batch].to(args.device)).cpu())
    num_classes = logits.shape[1]
    y = data.labels if num_classes == len(data.classes) else logits.argmax(1)
    print(f"# {case}: {n} images at {size} px, {what}, {num_classes} classes, device {args.device}, "
          f"{torch.get_num_threads()} torch threads, explanation batch {batch}, quantus chunk {args.chunk}", flush=True)
    explain(model, data.images[:batch].to(args.device), y[:batch].to(args.device), METHOD)  # warm-up, both sides
    return Case(model, what, data.images, y, data.masks, num_classes, size, patch, batch,
                per_forward / min(batch, n))


def bench(case: str, args: argparse.Namespace) -> list[dict]:
    """One case: canonc, then quantus with each chosen explain function; printed and returned as dicts."""
    c = prepare(case, args)
    n = len(c.x)
    counter = RowCounter(c.model)
    ours, parts, c_wall, c_cpu = run_canonc(c.model, c.x, c.y, c.masks, args.device, c.patch, c.batch)
    c_rows, c_explained = counter.close(), n * (1 + 10 + 1)  # base, 10 noisy, 1 other class: by construction
    per_explained = parts["explanation"] / n  # canonc's base explanations: one call per batch
    print(f"# canonc: {c_wall:.1f} s wall, {c_cpu:.1f} s CPU", flush=True)
    print(f"{case}_canonc_s: {c_wall:.1f}  (CPU {c_cpu:.1f})")
    share = {k: v / sum(parts.values()) for k, v in parts.items()}
    print(f"{case}_canonc_share: " + ", ".join(f"{k} {v:.0%}" for k, v in share.items()))
    print(f"{case}_unit_costs_ms: canonc explained input {1e3 * per_explained:.2f}, "
          f"full forward input {1e3 * c.per_forward:.2f}")
    results = []
    for kind in args.quantus_explain:
        gap = _relevance_gap(c.model, c.x, c.y, args.device, c.batch) if kind == "zennit" else 0.0
        counter = RowCounter(c.model)
        theirs, q_parts, q_explained, q_explain_s = run_quantus(c.model, c.x, c.y, c.masks, args.device,
                                                                c.num_classes, c.patch, c.batch, args.chunk, kind)
        q_rows = counter.close()
        q_wall, q_cpu = sum(w for w, _ in q_parts.values()), sum(cpu for _, cpu in q_parts.values())
        tag = f"{case}_quantus[{kind}]"
        print(f"{tag}_s: {q_wall:.1f}  (CPU {q_cpu:.1f}; explain function: {kind}"
              + (f", relevance gap to canonc {gap:.1e}" if kind == "zennit" else "") + ")")
        print(f"{tag}_ratio_quantus_over_canonc: {q_wall / c_wall:.2f}  (CPU time {q_cpu / c_cpu:.2f}; target >= 10)")
        print(f"{tag}_share: " + ", ".join(f"{k} {w / q_wall:.0%}" for k, (w, _) in q_parts.items()))
        print(f"{tag}_explained_inputs: canonc {c_explained} (by construction), quantus {q_explained}; quantus spent "
              f"{q_explain_s:.1f} s in its explanation calls")
        print(f"{tag}_forward_inputs: canonc {c_rows - c_explained} full passes (Region Perturbation: incremental "
              f"passes where they pay off), quantus {q_rows - q_explained}  (outside explanations)")
        bound = q_wall / (c_explained * per_explained)
        print(f"{tag}_ratio_bound_by_canonc_explanations: {bound:.2f}  (the ratio if canonc's metrics cost nothing "
              "beyond its 12 explained inputs per image)")
        print(f"{tag}_mean_scores: " + ", ".join(f"{k} {ours[k]:.3f}/{theirs[k]:.3f}" for k in POSTER_METRICS)
              + "  (canonc/quantus; region perturbation: AOPC vs mean of quantus's curve, black baselines differ)")
        results.append({
            "case": case, "images": n, "size": c.size, "model": c.what, "device": args.device, "batch": c.batch,
            "quantus_chunk": args.chunk, "quantus_explain": kind, "relevance_gap": gap,
            "threads": torch.get_num_threads(), "canonc_s": c_wall, "canonc_cpu_s": c_cpu, "quantus_s": q_wall,
            "quantus_cpu_s": q_cpu, "ratio": q_wall / c_wall, "canonc_parts_s": parts,
            "quantus_parts_s": {k: w for k, (w, _) in q_parts.items()}, "quantus_explain_calls_s": q_explain_s,
            "canonc_means": ours, "quantus_means": theirs, "quantus_explained_inputs": q_explained,
            "canonc_explained_inputs": c_explained, "canonc_forward_inputs": c_rows - c_explained,
            "quantus_forward_inputs": q_rows - q_explained, "seconds_per_explained_input": per_explained,
            "seconds_per_forward_input": c.per_forward, "ratio_bound_by_canonc_explanations": bound})
    return results


def main() -> None:
    """Run the chosen cases and print ``name: value`` lines."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", choices=[*CASES, "all"], default="all")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--quick", action="store_true", help="few images: a smoke run")
    parser.add_argument("--images", type=int, help="number of images (overrides the case's and --quick)")
    parser.add_argument("--batch", type=int, help="explanation batch on both sides (overrides the case's)")
    parser.add_argument("--chunk", type=int, default=QUANTUS_CHUNK, help=f"quantus batch_size (default {QUANTUS_CHUNK})")
    parser.add_argument("--quantus-explain", type=lambda v: v.split(","), default=["canonc", "zennit"],
                        help="quantus's explain function(s), comma-separated: canonc, zennit (default both)")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args()
    if not set(args.quantus_explain) <= {"canonc", "zennit"}:
        parser.error(f"--quantus-explain takes canonc and/or zennit, got {','.join(args.quantus_explain)}")
    results = [r for case in (CASES if args.case == "all" else [args.case]) for r in bench(case, args)]
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
