"""ONNX export of a canonized module, checked by ``onnx.checker`` and ONNX Runtime.

The torch dynamo exporter runs with ``optimize=False`` (the legacy exporter, the
fallback, with ``do_constant_folding=False`` and ``TrainingMode.PRESERVE``), so no
exporter-side BN folding hides a BN that canonc left. The exported graph must hold
only standard ONNX ops and no ``BatchNormalization``, and must match the float32 torch
module in ONNX Runtime (graph optimisation off) on batch sizes not used at export:
``max|Δ| ≤ 1e-4·(1 + max|y|)`` (widened for ill-conditioned modules, see :func:`verify_ort`).
"""

from __future__ import annotations

import copy
import io
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import torch
from torch import nn

from .codegen import atomic_write
from .errors import InputError, RefusedError, VerificationError
from .verify import outputs

OPSET = 18
EXPORTERS = ("auto", "dynamo", "legacy")
ONNX_TOL = 1e-4
COND_FACTOR = 10.0
EXPORT_BATCH = 2
CHECK_BATCHES = (1, 3)
PROTOBUF_LIMIT = 2**31 - 1  # bytes: one ONNX file is one protobuf message
_STANDARD_DOMAINS = ("", "ai.onnx")


def providers() -> list:
    """ONNX Runtime execution providers: CUDA (TF32 off) when available, else CPU."""
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        return [("CUDAExecutionProvider", {"use_tf32": "0"}), "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


def session(model: onnx.ModelProto | bytes | str | Path, *, optimize: bool = False):
    """An ``onnxruntime.InferenceSession``; graph optimisation is off unless ``optimize``."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    if not optimize:
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    if isinstance(model, onnx.ModelProto):
        model = model.SerializeToString()
    elif isinstance(model, Path):
        model = str(model)
    return ort.InferenceSession(model, opts, providers=providers())


def run_session(sess, inputs: tuple[torch.Tensor, ...]) -> list[np.ndarray]:
    """Run ``sess`` on float32 copies of ``inputs`` (fed to the graph inputs in order)."""
    names = [i.name for i in sess.get_inputs()]
    feed = {n: t.detach().cpu().float().numpy() for n, t in zip(names, inputs)}
    return sess.run(None, feed)


def op_counts(model: onnx.ModelProto) -> dict[str, int]:
    """Number of nodes per op type (``domain::Op`` outside the standard domain), functions included."""
    counts: Counter[str] = Counter()
    graphs = [model.graph.node] + [f.node for f in model.functions]
    for nodes in graphs:
        for node in nodes:
            key = node.op_type if node.domain in _STANDARD_DOMAINS else f"{node.domain}::{node.op_type}"
            counts[key] += 1
    return dict(sorted(counts.items()))


def _batched(example: tuple[torch.Tensor, ...], batch: int, seed: int) -> tuple[torch.Tensor, ...]:
    gen = torch.Generator().manual_seed(seed)
    out = []
    for t in example:
        shape = (batch, *t.shape[1:])
        out.append(torch.randn(shape, generator=gen) if t.is_floating_point() else t[:1].expand(shape).clone())
    return tuple(out)


def _export_dynamo(module: nn.Module, args: tuple[torch.Tensor, ...], opset: int) -> onnx.ModelProto:
    from torch.export import Dim

    batch = Dim("batch")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            module, args, dynamo=True, optimize=False, opset_version=opset,
            dynamic_shapes=tuple({0: batch} for _ in args), verbose=False,
        )
    return program.model_proto


def _export_legacy(module: nn.Module, args: tuple[torch.Tensor, ...], opset: int) -> onnx.ModelProto:
    names = [f"input_{i}" for i in range(len(args))]
    n_out = len(outputs(module, args))
    out_names = [f"output_{i}" for i in range(n_out)]
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module, args, buf, dynamo=False, opset_version=opset, do_constant_folding=False,
            training=torch.onnx.TrainingMode.PRESERVE, input_names=names, output_names=out_names,
            dynamic_axes={n: {0: "batch"} for n in names + out_names},
        )
    return onnx.load_from_string(buf.getvalue())


def to_onnx(module: nn.Module, example: tuple[torch.Tensor, ...], *, opset: int = OPSET,
            exporter: str = "auto") -> tuple[onnx.ModelProto, str]:
    """Export a float32 copy of ``module`` with a dynamic batch axis; return the model and exporter used.

    ``exporter="auto"`` tries dynamo first and falls back to the legacy exporter.
    """
    if exporter not in EXPORTERS:
        raise InputError(f"unknown ONNX exporter '{exporter}'; choose one of {', '.join(EXPORTERS)}")
    if opset < OPSET:
        raise InputError(f"ONNX opset {opset} is too old; canonc exports opset {OPSET} or newer")
    weights = sum(4 * t.numel() for t in (*module.parameters(), *module.buffers()) if t.is_floating_point())
    if weights > PROTOBUF_LIMIT:
        raise RefusedError(f"the float32 weights take {weights / 1e9:.2f} GB, more than one ONNX file can hold "
                           "(2 GB, protobuf's limit); canonc does not write ONNX external data: save with -o model.pt")
    module32 = copy.deepcopy(module).float().eval()
    args = _batched(example, EXPORT_BATCH, seed=1)
    errors = []
    for name, fn in (("dynamo", _export_dynamo), ("legacy", _export_legacy)):
        if exporter not in ("auto", name):
            continue
        try:
            return fn(module32, args, opset), name
        except Exception as exc:  # noqa: BLE001 - try the next exporter, report all on failure
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            errors.append(f"{name}: {first}")
    raise VerificationError(f"ONNX export failed ({'; '.join(errors)}); save with -o model.pt instead")


def check_structure(model: onnx.ModelProto) -> dict[str, int]:
    """Full ``onnx.checker`` check; only standard ops and no ``BatchNormalization``.

    Returns the op counts; raises ``VerificationError`` otherwise.
    """
    try:
        onnx.checker.check_model(model, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        first = str(exc).strip().splitlines()[0]
        raise VerificationError(f"exported ONNX fails onnx.checker ({first}); nothing was written") from exc
    counts = op_counts(model)
    custom = sorted(k for k in counts if "::" in k)
    if custom:
        raise VerificationError(f"exported ONNX holds non-standard ops ({', '.join(custom)}); nothing was written")
    if counts.get("BatchNormalization"):
        raise VerificationError(
            f"exported ONNX holds {counts['BatchNormalization']} BatchNormalization node(s) that canonc should have "
            "merged; nothing was written"
        )
    return counts


def _max_err(a: list[np.ndarray], b: list[np.ndarray]) -> tuple[float, float]:
    """Max abs difference of ``a`` and ``b`` (inf on a shape mismatch or NaN) and max|b|."""
    if len(a) != len(b) or any(x.shape != y.shape for x, y in zip(a, b)):
        return float("inf"), 0.0
    err = max((float(np.abs(x.astype(np.float64) - y.astype(np.float64)).max()) for x, y in zip(a, b) if x.size),
              default=0.0)
    mag = max((float(np.abs(y.astype(np.float64)).max()) for y in b if y.size), default=0.0)
    return (err if err == err else float("inf")), mag


def _fixed_batch(sess) -> int | None:
    dim = sess.get_inputs()[0].shape[0] if sess.get_inputs() and sess.get_inputs()[0].shape else None
    return dim if isinstance(dim, int) else None


def verify_ort(model: onnx.ModelProto, module: nn.Module, example: tuple[torch.Tensor, ...], *,
               reference: onnx.ModelProto | str | Path | None = None, seed: int = 0) -> dict:
    """Run ``model`` in ORT (optimisation off) against the float32 ``module`` and, if given, ``reference``.

    Batch sizes 1 and 3 are used (export used 2); a reference file with a fixed batch size
    is compared at that size only. The tolerance is ``1e-4·(1 + max|y|)``, widened to
    ``10·err32`` for an ill-conditioned module whose own float32 evaluation is that far
    from its float64 one (two float32 runtimes cannot agree better than that).
    Raises ``VerificationError`` above the tolerance.
    """
    module32 = copy.deepcopy(module).float().eval()
    module64 = copy.deepcopy(module).double().eval()
    sess = session(model)
    ref_sess = session(reference) if reference is not None else None
    ref_batch = _fixed_batch(ref_sess) if ref_sess is not None else None
    worst, worst_ref, worst_tol, worst_mag = 0.0, None, 0.0, 0.0
    for i, batch in enumerate(CHECK_BATCHES if ref_batch is None else sorted({*CHECK_BATCHES, ref_batch})):
        x = _batched(example, batch, seed=seed + 10 + i)
        y_ort = run_session(sess, x)
        y32 = [t.numpy() for t in outputs(module32, x)]
        err32, mag = _max_err(y32, [t.numpy() for t in outputs(module64, tuple(t.double() for t in x))])
        tol = max(ONNX_TOL * (1.0 + mag), COND_FACTOR * err32)
        worst_tol, worst_mag = max(worst_tol, tol), max(worst_mag, mag)
        err, _ = _max_err(y_ort, y32)
        if not err <= tol:
            raise VerificationError(
                f"ONNX Runtime output differs from the torch module at batch {batch} (max abs error {err:.3g} > "
                f"{tol:.3g}); nothing was written"
            )
        worst = max(worst, err)
        if ref_sess is not None and ref_batch in (None, batch):
            err, _ = _max_err(y_ort, run_session(ref_sess, x))
            if not err <= tol:
                raise VerificationError(
                    f"canonized ONNX differs from the input ONNX in ONNX Runtime at batch {batch} (max abs error "
                    f"{err:.3g} > {tol:.3g}); nothing was written"
                )
            worst_ref = max(worst_ref or 0.0, err)
    return {
        "onnx_max_abs_error": worst,
        "onnx_reference_error": worst_ref,
        "onnx_tolerance": worst_tol,
        "onnx_output_max": worst_mag,
        "onnx_provider": sess.get_providers()[0],
    }


def build_onnx(module: nn.Module, example_input: torch.Tensor | tuple[torch.Tensor, ...], *, opset: int = OPSET,
               exporter: str = "auto", optimize: bool = False,
               reference: onnx.ModelProto | str | Path | None = None) -> tuple[bytes, dict]:
    """Export, check and verify ``module``; return the ONNX bytes and the report entries (nothing written).

    With ``optimize`` the checked graph is then optimised by onnxscript and verified again.
    """
    example = (example_input,) if isinstance(example_input, torch.Tensor) else tuple(example_input)
    model, used = to_onnx(module, example, opset=opset, exporter=exporter)
    counts = check_structure(model)
    info = verify_ort(model, module, example, reference=reference)
    if optimize:
        import onnxscript.optimizer

        model = onnxscript.optimizer.optimize(model)
        counts = check_structure(model)
        info = verify_ort(model, module, example, reference=reference)
    opsets = {o.domain: o.version for o in model.opset_import}
    info.update(onnx_opset=opsets.get("", opsets.get("ai.onnx")), onnx_op_counts=counts, onnx_exporter=used,
                onnx_verified=True)
    return model.SerializeToString(), info


def export_onnx(module: nn.Module, example_input: torch.Tensor | tuple[torch.Tensor, ...], path: str | Path, *,
                opset: int = OPSET, exporter: str = "auto", optimize: bool = False,
                reference: onnx.ModelProto | str | Path | None = None) -> dict:
    """Export ``module`` to ``path`` as ONNX, checked and verified in ONNX Runtime (atomic write).

    Parameters
    ----------
    module : nn.Module
        The (canonized) module; exported as a float32 copy in eval mode.
    example_input : Tensor or tuple of Tensor
        An input of the right shape; the batch axis is exported as dynamic.
    path : str or Path
        Output ``.onnx`` file; written only when every check passed.
    opset : int
        ONNX opset (18 or newer).
    exporter : {"auto", "dynamo", "legacy"}
        Which torch exporter to use ("auto": dynamo, legacy as fallback).
    optimize : bool
        Optimise the checked graph with onnxscript and verify it again.
    reference : ModelProto or path, optional
        An ONNX model computing the same function (e.g. the input file) to compare in ORT.

    Returns
    -------
    dict
        Report entries: ``onnx_path``, ``onnx_opset``, ``onnx_op_counts``, ``onnx_max_abs_error``,
        ``onnx_reference_error``, ``onnx_tolerance``, ``onnx_output_max``, ``onnx_provider``, ``onnx_exporter``,
        ``onnx_verified``.
    """
    data, info = build_onnx(module, example_input, opset=opset, exporter=exporter, optimize=optimize,
                            reference=reference)
    write_onnx(data, Path(path))
    return {"onnx_path": str(path), **info}


def write_onnx(data: bytes, path: Path) -> None:
    """Write serialized ONNX ``data`` to ``path`` atomically."""
    atomic_write(Path(path), lambda tmp: tmp.write_bytes(data))
