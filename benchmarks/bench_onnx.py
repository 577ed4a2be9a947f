"""ONNX Runtime inference time of the canonized model vs the original, in one process.

Both are exported the same way (torch dynamo exporter, ``optimize=False``, dynamic batch);
the original keeps its BatchNorm nodes. ORT runs with its default graph optimisation
(which fuses Conv+BN by itself), CPU provider, batch 8, 224 px; repetitions are
interleaved and medians compared. Prints ``name: ratio`` lines, ratio = canonized /
original time (informative; the goal is ≤ 1.05: canonization must not make ORT slower).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import canonc  # noqa: E402
from canonc.onnx_export import check_structure, op_counts, session, to_onnx  # noqa: E402
from models.zoo import randomize_bn  # noqa: E402

SIDE = 224
TARGET = 1.05


def sessions(name: str) -> tuple[object, object, dict[str, int], dict[str, int]]:
    """ORT sessions (default optimisation) of the original and the canonized ``name``, and their op counts."""
    import torchvision

    torch.manual_seed(0)
    model = randomize_bn(torchvision.models.get_model(name, weights=None), input_shape=(4, 3, 64, 64))
    example = torch.randn(1, 3, SIDE, SIDE)
    canon = canonc.canonize(model, example[..., :64, :64], name=name).module  # gate at 64 px: timing only
    original, _ = to_onnx(model, (example,))
    canonical, _ = to_onnx(canon, (example,))
    counts = check_structure(canonical)
    return session(original, optimize=True), session(canonical, optimize=True), op_counts(original), counts


def timed(sess, feed: dict[str, np.ndarray]) -> tuple[float, np.ndarray]:
    """Seconds of one ``sess.run`` and its first output."""
    start = time.perf_counter()
    y = sess.run(None, feed)[0]
    return time.perf_counter() - start, y


def main(argv: list[str] | None = None) -> None:
    """Print ``onnx_ort_ratio/<model>: ratio`` for each model."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="resnet50,densenet121")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--repeats", type=int, default=15)
    args = p.parse_args(argv)
    x = np.random.default_rng(0).standard_normal((args.batch, 3, SIDE, SIDE)).astype(np.float32)
    for name in args.models.split(","):
        orig, canon, orig_ops, canon_ops = sessions(name)
        feeds = [{s.get_inputs()[0].name: x} for s in (orig, canon)]
        for sess, feed in zip((orig, canon), feeds):  # warm-up
            timed(sess, feed)
        times: dict[str, list[float]] = {"original": [], "canonized": []}
        for _ in range(args.repeats):
            t, y_orig = timed(orig, feeds[0])
            times["original"].append(t)
            t, y_canon = timed(canon, feeds[1])
            times["canonized"].append(t)
        med = {k: statistics.median(v) for k, v in times.items()}
        ratio = med["canonized"] / med["original"]
        err = float(np.abs(y_orig - y_canon).max())
        print(f"# {name}: original {med['original'] * 1e3:.1f} ms ({orig_ops.get('BatchNormalization', 0)} BN, "
              f"{sum(orig_ops.values())} nodes), canonized {med['canonized'] * 1e3:.1f} ms "
              f"({sum(canon_ops.values())} nodes), max |Δ| {err:.3g} (max |y| {float(np.abs(y_orig).max()):.3g})")
        print(f"onnx_ort_ratio/{name}: {ratio:.3f}{'' if ratio <= TARGET else f'  (above {TARGET})'}")


if __name__ == "__main__":
    main()
