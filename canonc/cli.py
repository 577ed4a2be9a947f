"""The ``canonc`` command: a thin layer over the library API.

Exit codes: 0 ok, 2 bad input or usage, 3 refused or verification failed.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from pathlib import Path

import torch

from .codegen import atomic_write, emit_dir, save_module
from .core import STRATEGIES, canonize
from .errors import CanoncError, InputError, VerificationError
from .invariance import invariance
from .load import load, parse_shape
from .onnx_export import OnnxArtifact, build_onnx
from .onnx_import import external_data_files
from .report_formats import check_report_path, render, wants_profile
from .xai.cli import build_explain_parser, run_explain


def build_parser() -> argparse.ArgumentParser:
    """Argument parser of ``canonc MODEL -o OUT``."""
    p = argparse.ArgumentParser(
        prog="canonc",
        description="Rewrite a PyTorch model into canonical form for XAI and prove it computes the same function.",
    )
    p.add_argument("model", help="torchvision:NAME, timm:NAME, models:NAME, file.py:factory, or a .pt/.pth/.safetensors/.onnx file")
    p.add_argument("-o", "--output", help="where to write the canonized model (.pt: torch.save; .onnx: ONNX checked in ONNX Runtime)")
    p.add_argument("--onnx", help="also export the canonized model to this .onnx path, checked in ONNX Runtime")
    p.add_argument("--emit-dir", help="also write readable model.py + weights.safetensors into this directory")
    p.add_argument("--report", help="write the report to this path: .json, .md or .html (with graphs and per-layer error)")
    p.add_argument("--arch", help="architecture source for a state-dict file, e.g. torchvision:resnet50")
    p.add_argument("--weights", help="state-dict file to load into a torchvision:/timm: architecture")
    p.add_argument("--input-shape", help="example input shape, e.g. 1,3,224,224 (default: the source's own)")
    p.add_argument("--trust-pickle", action="store_true", help="allow unpickling a full model (runs code from the file)")
    p.add_argument("--strategy", default="auto", choices=STRATEGIES, help="what to do with BN that cannot merge left")
    p.add_argument("--leaf", action="append", default=[], help="qualified module name to keep opaque when tracing")
    p.add_argument("--no-fuse-chains", action="store_true", help="keep adjacent linear layers (Linear→Linear, conv chains) unfused")
    p.add_argument("--max-chain-growth", type=float, default=1.0,
                   help="fuse two linear layers only if the result has at most this times their parameters (default 1.0)")
    p.add_argument("--fuse-pooling", action="store_true", help="also fold an AvgPool feeding a Linear into the Linear")
    p.add_argument("--no-bias-map", action="store_true",
                   help="refuse to merge a BN right into a zero-padded or transposed conv (it needs a border bias map)")
    p.add_argument("--bn-as-layer", action="store_true",
                   help="turn a BN that no layer can absorb into a per-channel 1x1 conv (default: keep it, with its reason)")
    p.add_argument("--max-param-growth", type=float, default=6.0,
                   help="--strategy untangle clones producers only while parameters stay within this factor (default 6)")
    p.add_argument("--unpack-mha", action="store_true",
                   help="unpack nn.MultiheadAttention into q/k/v Linear layers and attention modules")
    p.add_argument("--quiet", action="store_true", help="print only errors")
    return p


def _inputs_of(args: argparse.Namespace) -> list[Path]:
    files = [Path(a) for a in (args.model, args.weights) if a and Path(a).exists()]
    if ":" in args.model and not Path(args.model).exists():
        files.append(Path(args.model.partition(":")[0]))
    files += [data for f in files if f.suffix == ".onnx" for data in external_data_files(f)]
    return [f.resolve() for f in files if f.exists()]


def _check_outputs(args: argparse.Namespace) -> None:
    if not args.output and not args.emit_dir and not args.onnx:
        raise InputError("no output given; pass -o canon.pt (and/or --emit-dir DIR, --onnx canon.onnx)")
    inputs = _inputs_of(args)
    emitted = [Path(args.emit_dir) / name for name in ("model.py", "weights.safetensors")] if args.emit_dir else []
    onnx_data = [f"{out}.data" for out in (args.output, args.onnx) if out and Path(out).suffix == ".onnx"]
    for out in (args.output, args.report, args.onnx, *emitted, *onnx_data):
        if out and Path(out).resolve() in inputs:
            raise InputError(f"output path {out} is an input file; canonc never overwrites its input, choose another path")
    if args.report:
        check_report_path(args.report)
    if args.output and Path(args.output).suffix not in (".pt", ".pth", ".onnx"):
        raise InputError(f"-o {args.output}: unsupported output type; use a .pt, .pth or .onnx path (or --emit-dir)")
    if args.onnx and Path(args.onnx).suffix != ".onnx":
        raise InputError(f"--onnx {args.onnx}: use a path ending in .onnx")


def pass_options(args: argparse.Namespace) -> dict:
    """The pass options (``ctx.options``) the command line asks for."""
    return {"fuse_chains": not args.no_fuse_chains, "max_chain_growth": args.max_chain_growth,
            "fuse_pooling": args.fuse_pooling, "bias_map": not args.no_bias_map,
            "max_param_growth": args.max_param_growth, "unpack_mha": args.unpack_mha, "bn_as_layer": args.bn_as_layer}


def run_canonize(args: argparse.Namespace) -> int:
    """Load, canonize, verify, write; return the exit code."""
    _check_outputs(args)
    loaded = load(args.model, arch=args.arch, weights=args.weights, trust_pickle=args.trust_pickle)
    shape = parse_shape(args.input_shape) if args.input_shape else loaded.input_shape
    if shape is None:
        raise InputError(f"cannot tell the input shape of {loaded.name}; pass --input-shape N,C,H,W")
    example = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    try:
        result = canonize(loaded.model, example, strategy=args.strategy, leaves=args.leaf, name=loaded.name,
                          options=pass_options(args), profile=wants_profile(args.report))
    except VerificationError as exc:
        if args.report and exc.report is not None:
            text = render(exc.report, args.report)
            atomic_write(Path(args.report), lambda p: p.write_text(text))
        raise
    onnx_paths = [Path(p) for p in (args.output, args.onnx) if p and Path(p).suffix == ".onnx"]
    artifact = OnnxArtifact()
    if onnx_paths:  # exported and verified before anything is written
        reference = loaded.path if loaded.path is not None and loaded.path.suffix == ".onnx" else None
        artifact, info = build_onnx(result.module, example, reference=reference, stage_in=onnx_paths[0].parent)
        for key, value in {"onnx_path": ", ".join(map(str, onnx_paths)), **info}.items():
            setattr(result.report, key, value)
    written: list[Path] = []
    try:
        if args.emit_dir:
            emit_dir(result.module, Path(args.emit_dir), (example,), loaded.name)
        if args.output and Path(args.output).suffix != ".onnx":
            save_module(result.module, Path(args.output))
        for path in onnx_paths:
            written += artifact.write(path)
    finally:
        artifact.discard()
    if args.report:
        atomic_write(Path(args.report), lambda p: p.write_text(render(result.report, args.report)))
    if not args.quiet:
        print(result.report.summary())
        data_files = [p for p in written if p.suffix == ".data"]
        for path in (args.output, args.onnx, args.emit_dir, args.report, *data_files):
            if path:
                print(f"  wrote         {path}")
    return 0


def build_invariance_parser() -> argparse.ArgumentParser:
    """Argument parser of ``canonc invariance A B``."""
    p = argparse.ArgumentParser(
        prog="canonc invariance",
        description="Explain two implementations of one function (EpsilonPlusFlat, fp64) before and after "
                    "canonizing both, and print how much their explanations differ.",
    )
    p.add_argument("model_a", help="first model source (same forms as 'canonc MODEL')")
    p.add_argument("model_b", help="second model source, computing the same function")
    p.add_argument("--input-shape", help="input shape, e.g. 1,3,64,64 (default: model A's own)")
    p.add_argument("--target", type=int, help="output index to explain (default: model A's top class)")
    p.add_argument("--strategy", default="auto", choices=STRATEGIES, help="canonization strategy for both models")
    p.add_argument("--no-bias-map", action="store_true", help="as for 'canonc MODEL'")
    p.add_argument("--trust-pickle", action="store_true", help="allow unpickling full models (runs code from the file)")
    return p


def run_invariance(args: argparse.Namespace) -> int:
    """Load both models, measure the explanation difference before and after canonization, print it."""
    a = load(args.model_a, trust_pickle=args.trust_pickle)
    b = load(args.model_b, trust_pickle=args.trust_pickle)
    shape = parse_shape(args.input_shape) if args.input_shape else a.input_shape
    if shape is None:
        raise InputError(f"cannot tell the input shape of {a.name}; pass --input-shape N,C,H,W")
    x = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    result = invariance(a.model, b.model, x, target=args.target, strategy=args.strategy,
                        options={"bias_map": not args.no_bias_map})
    print(result.summary())
    return 0


# Subcommands: name → (parser builder, runner). ``canonc NAME ...`` dispatches here;
# anything else is the default ``canonc MODEL -o OUT`` command.
SUBCOMMANDS: dict[str, tuple] = {}
SUBCOMMANDS["explain"] = (build_explain_parser, run_explain)
SUBCOMMANDS["invariance"] = (build_invariance_parser, run_invariance)

# Subcommands with heavy imports (metrics, Optuna, timm), loaded only when called:
# name → module exposing ``build_parser()`` and ``run(args) -> int``.
LAZY_SUBCOMMANDS: dict[str, str] = {
    "evaluate": "canonc.xai.evaluate_cli",
    "search": "canonc.search.cli",
    "zoo": "canonc.zoo_cli",
}


def subcommand(name: str) -> tuple | None:
    """``(parser builder, runner)`` of subcommand ``name``, or ``None`` for the default command."""
    if name in SUBCOMMANDS:
        return SUBCOMMANDS[name]
    if name in LAZY_SUBCOMMANDS:
        module = importlib.import_module(LAZY_SUBCOMMANDS[name])
        return module.build_parser, module.run
    return None


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``canonc`` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    build, runner = (build_parser, run_canonize)
    found = subcommand(argv[0]) if argv else None
    if found:
        build, runner = found
        argv = argv[1:]
    parser = build()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return 2 if exc.code else 0
    try:
        return runner(args)
    except CanoncError as exc:
        print(f"canonc: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("canonc: interrupted; nothing was written", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - never a traceback for the user
        if os.environ.get("CANONC_DEBUG"):
            raise
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        print(f"canonc: internal error: {type(exc).__name__}: {first} (set CANONC_DEBUG=1 for a traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
