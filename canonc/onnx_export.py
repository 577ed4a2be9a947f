"""ONNX export of a canonized module, checked by ``onnx.checker`` and ONNX Runtime.

The torch dynamo exporter runs with ``optimize=False`` (the legacy exporter, the
fallback, with ``do_constant_folding=False`` and ``TrainingMode.PRESERVE``), so no
exporter-side BN folding hides a BN that canonc left. The exported graph must hold
only standard ONNX ops and no ``BatchNormalization``, and must match the float32 torch
module in ONNX Runtime (graph optimisation off) on batch sizes not used at export:
``max|Δ| ≤ 1e-4·(1 + max|y|)`` (widened for ill-conditioned modules, see :func:`verify_ort`).

One ONNX file is one protobuf message, which cannot exceed 2 GB. A module whose float32
weights take more than :data:`EXTERNAL_DATA_BYTES` is therefore checked and written with its
weights in an external data file beside it (``canon.onnx`` + ``canon.onnx.data``, the ONNX
external-data format that ONNX Runtime and ``onnx.load`` read). It is staged in a hidden folder
next to the output, checked by ``onnx.checker`` and ONNX Runtime from there, and moved into place
only when every check passed.
"""

from __future__ import annotations

import copy
import io
import shutil
import tempfile
import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import torch
from torch import nn

from .codegen import atomic_write
from .errors import InputError, VerificationError
from .onnx_import import location_entries
from .verify import outputs

OPSET = 18
EXPORTERS = ("auto", "dynamo", "legacy")
ONNX_TOL = 1e-4
COND_FACTOR = 10.0
EXPORT_BATCH = 2
CHECK_BATCHES = (1, 3)
EXTERNAL_DATA_BYTES = 2**30  # float32 weights above this go to an external data file (one file must stay < 2 GB)
STAGED_NAME = "model.onnx"
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


def _floating(module: nn.Module) -> list[torch.Tensor]:
    """The floating-point parameters and buffers of ``module`` (its ONNX weights)."""
    return [t for t in (*module.parameters(), *module.buffers()) if t.is_floating_point()]


def _float32_eval(module: nn.Module) -> nn.Module:
    """``module`` itself when it is float32 and in eval mode already (a large model's weights are
    not duplicated; export and inference leave it unchanged), else a float32 eval-mode copy."""
    if not any(m.training for m in module.modules()) and all(t.dtype == torch.float32 for t in _floating(module)):
        return module
    return copy.deepcopy(module).float().eval()


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
    module32 = _float32_eval(module)
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


def float32_bytes(module: nn.Module) -> int:
    """Bytes of ``module``'s floating-point parameters and buffers in float32 (its ONNX weights)."""
    return sum(4 * t.numel() for t in _floating(module))


def check_structure(model: onnx.ModelProto, path: Path | None = None) -> dict[str, int]:
    """Full ``onnx.checker`` check; only standard ops and no ``BatchNormalization``.

    ``path``: the same model saved with external data, which the checker reads instead
    (a model over 2 GB cannot be checked in memory). Returns the op counts; raises
    ``VerificationError`` otherwise.
    """
    try:
        onnx.checker.check_model(model if path is None else str(path), full_check=True)
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


def verify_ort(model: onnx.ModelProto | Path, module: nn.Module, example: tuple[torch.Tensor, ...], *,
               reference: onnx.ModelProto | str | Path | None = None, seed: int = 0) -> dict:
    """Run ``model`` in ORT (optimisation off) against the float32 ``module`` and, if given, ``reference``.

    Batch sizes 1 and 3 are used (export used 2); a reference file with a fixed batch size
    is compared at that size only. The tolerance is ``1e-4·(1 + max|y|)``, widened to
    ``10·err32`` for an ill-conditioned module whose own float32 evaluation is that far
    from its float64 one (two float32 runtimes cannot agree better than that).
    Raises ``VerificationError`` above the tolerance.
    """
    module32 = _float32_eval(module)
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


@dataclass
class OnnxArtifact:
    """A checked and verified ONNX model, ready to be written.

    Either ``data``, the serialized model, or ``staged``, a model file in a hidden staging
    folder with its weights in the external data file ``model.onnx.data`` beside it.
    """

    data: bytes | None = None
    staged: Path | None = None

    def write(self, path: Path) -> list[Path]:
        """Write the model to ``path`` (and its weights to ``path.data`` when external); return the files."""
        path = Path(path)
        if self.staged is None:
            atomic_write(path, lambda tmp: tmp.write_bytes(self.data))
            return [path]
        data_path = path.with_name(path.name + ".data")
        atomic_write(data_path, lambda tmp: shutil.copyfile(self.staged.with_name(STAGED_NAME + ".data"), tmp))
        model = onnx.load(str(self.staged), load_external_data=False)
        for entry in location_entries(model):
            entry.value = data_path.name
        try:
            atomic_write(path, lambda tmp: onnx.save_model(model, str(tmp)))
        except BaseException:
            data_path.unlink(missing_ok=True)  # no weights file without its model
            raise
        return [path, data_path]

    def discard(self) -> None:
        """Remove the staging folder, if any."""
        if self.staged is not None:
            shutil.rmtree(self.staged.parent, ignore_errors=True)
            self.staged = None


def _stage(model: onnx.ModelProto, folder: Path) -> Path:
    """Save ``model`` into ``folder`` with every tensor over 1 KiB in ``model.onnx.data``; return the model file.

    The tensors of ``model`` are turned into references to that file (in place).
    """
    path = folder / STAGED_NAME
    path.with_name(STAGED_NAME + ".data").unlink(missing_ok=True)  # onnx appends to an existing data file
    onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                    location=STAGED_NAME + ".data", size_threshold=1024)
    return path


def _staging_folder(where: Path | None) -> Path:
    where = Path(where) if where is not None else Path(tempfile.gettempdir())
    try:
        return Path(tempfile.mkdtemp(prefix=".canonc-onnx-", dir=where))
    except OSError as exc:
        raise InputError(f"cannot stage the ONNX file in {where} ({exc.strerror}); choose another output path") from exc


def build_onnx(module: nn.Module, example_input: torch.Tensor | tuple[torch.Tensor, ...], *, opset: int = OPSET,
               exporter: str = "auto", optimize: bool = False,
               reference: onnx.ModelProto | str | Path | None = None,
               stage_in: Path | None = None) -> tuple[OnnxArtifact, dict]:
    """Export, check and verify ``module``; return the artifact to write and the report entries.

    With ``optimize`` the checked graph is then optimised by onnxscript and verified again.
    Weights over :data:`EXTERNAL_DATA_BYTES` are staged with external data in a hidden folder
    under ``stage_in`` (default: the system's temporary folder; pass the output's folder so the
    write is a copy on one disk). The caller writes the artifact and then calls its ``discard``.
    """
    example = (example_input,) if isinstance(example_input, torch.Tensor) else tuple(example_input)
    model, used = to_onnx(module, example, opset=opset, exporter=exporter)
    folder = _staging_folder(stage_in) if float32_bytes(module) > EXTERNAL_DATA_BYTES else None

    def checked(model: onnx.ModelProto) -> tuple[Path | None, dict[str, int], dict]:
        path = None if folder is None else _stage(model, folder)
        return path, check_structure(model, path), verify_ort(path or model, module, example, reference=reference)

    try:
        path, counts, info = checked(model)
        if optimize:
            import onnxscript.optimizer

            if folder is not None:
                onnx.load_external_data_for_model(model, str(folder))
            model = onnxscript.optimizer.optimize(model)
            path, counts, info = checked(model)
    except BaseException:
        if folder is not None:
            shutil.rmtree(folder, ignore_errors=True)
        raise
    opsets = {o.domain: o.version for o in model.opset_import}
    info.update(onnx_opset=opsets.get("", opsets.get("ai.onnx")), onnx_op_counts=counts, onnx_exporter=used,
                onnx_verified=True, onnx_external_data=path is not None)
    return OnnxArtifact(staged=path) if path is not None else OnnxArtifact(data=model.SerializeToString()), info


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
        Output ``.onnx`` file; written only when every check passed (with ``path.data`` beside it
        when the weights are external).
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
        ``onnx_verified``, ``onnx_external_data`` (weights in ``path.data``: over 1 GiB of float32 weights).
    """
    artifact, info = build_onnx(module, example_input, opset=opset, exporter=exporter, optimize=optimize,
                                reference=reference, stage_in=Path(path).parent)
    try:
        artifact.write(Path(path))
    finally:
        artifact.discard()
    return {"onnx_path": str(path), **info}
