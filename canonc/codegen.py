"""Write a canonized module: ``torch.save`` (``-o X.pt``) or readable source + safetensors.

``emit_dir`` writes ``model.py`` (plain torch: explicit submodules, the forward as code,
canonc's modules copied in) and ``weights.safetensors``; the directory loads in a fresh
process with ``model = load(DIR)`` and no pickle. Every write is atomic.
"""

from __future__ import annotations

import copy
import importlib.util
import inspect
import math
import os
import pickle
import re
import tempfile
import textwrap
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import fx, nn

from . import nn as cnn
from .errors import InputError, RefusedError
from .verify import outputs

_SKIP_ARGS = {"self", "device", "dtype", "args", "kwargs"}


def atomic_write(path: Path, write) -> None:
    """Call ``write(tmp_path)`` then rename onto ``path``; nothing is left on failure."""
    path = Path(path)
    directory = path.parent if str(path.parent) else Path(".")
    if not directory.is_dir():
        raise InputError(f"output directory {directory} does not exist; create it first")
    if not os.access(directory, os.W_OK):
        raise InputError(f"output directory {directory} is not writable; choose another -o path")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    except OSError as exc:
        raise InputError(f"cannot write into {directory} ({exc.strerror}); choose another output path") from exc
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    try:
        write(Path(tmp))
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; give the file the usual permissions
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise InputError(f"cannot write {path} ({exc.strerror or exc}); choose another output path") from exc
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_module(module: nn.Module, path: Path) -> None:
    """``torch.save`` the whole module (a convenience; loading it needs ``weights_only=False``)."""
    try:
        atomic_write(Path(path), lambda tmp: torch.save(module, tmp))
    except (pickle.PicklingError, AttributeError, TypeError) as exc:  # a class pickle cannot find by name
        raise RefusedError(f"cannot save the canonized model with torch.save ({exc}); "
                           "define its module classes in an importable file") from exc


def _literal(value: object) -> str | None:
    if isinstance(value, float) and not math.isfinite(value):
        return f"float('{value}')"
    if value is None or isinstance(value, (bool, int, float, str)):
        return repr(value)
    if isinstance(value, (tuple, list)):
        items = [_literal(v) for v in value]
        if any(i is None for i in items):
            return None
        inner = ", ".join(items) + ("," if isinstance(value, tuple) and len(items) == 1 else "")
        return f"({inner})" if isinstance(value, tuple) else f"[{inner}]"
    return None


def constructor(module: nn.Module) -> str:
    """Python source that builds a fresh ``module`` (weights aside)."""
    cls = type(module)
    if cls.__module__ == cnn.__name__:
        prefix = ""
    elif cls.__module__.startswith("torch.nn.modules") and getattr(nn, cls.__name__, None) is cls:
        prefix = "nn."
    else:
        raise RefusedError(
            f"cannot emit source for {cls.__module__}.{cls.__name__} (an opaque leaf); save with -o model.pt instead"
        )
    args = []
    for name, param in inspect.signature(cls.__init__).parameters.items():
        if name in _SKIP_ARGS or param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        if not hasattr(module, name):
            if param.default is param.empty:
                raise RefusedError(f"cannot emit source for {cls.__name__}: no attribute '{name}'")
            continue
        value = getattr(module, name)
        if isinstance(value, torch.Tensor) or (value is None and name == "bias"):
            value = value is not None
        text = _literal(value)
        if text is None:
            raise RefusedError(f"cannot emit source for {cls.__name__}: argument {name}={value!r}")
        args.append(f"{name}={text}")
    return f"{prefix}{cls.__name__}({', '.join(args)})"


def _global_line(name: str, obj: object) -> str:
    if obj is type(None):
        return f"{name} = type(None)"
    if inspect.ismodule(obj):
        return f"import {obj.__name__} as {name}" if obj.__name__ != name else f"import {name}"
    if isinstance(obj, (torch.dtype, torch.device, torch.memory_format, torch.layout)):
        return f"{name} = {obj!r}" if "torch." in repr(obj) else f"{name} = torch.{obj}"
    if isinstance(obj, float):
        return f"{name} = {_literal(obj)}"
    module = getattr(obj, "__module__", None)
    qual = getattr(obj, "__qualname__", None)
    if module == cnn.__name__ and getattr(cnn, qual or "", None) is obj:  # defined in the inlined canonc.nn
        return f"{name} = {qual}"
    if module and qual and "." not in qual:
        try:
            if getattr(importlib.import_module(module), qual) is obj:
                return f"from {module} import {qual} as {name}"
        except (ImportError, AttributeError):
            pass
    if module == "builtins":
        return f"{name} = {qual}"
    raise RefusedError(f"cannot emit source for the global '{name}' ({obj!r}); save with -o model.pt instead")


_RUNTIME = '''

def _install(root: nn.Module, path: str, value) -> None:
    """Register ``value`` (module, parameter or buffer) at dotted ``path`` under ``root``."""
    *parents, leaf = path.split(".")
    for atom in parents:
        if not hasattr(root, atom):
            root.add_module(atom, nn.Module())
        root = getattr(root, atom)
    if isinstance(value, nn.Module):
        root.add_module(leaf, value)
    elif isinstance(value, nn.Parameter):
        root.register_parameter(leaf, value)
    else:
        root.register_buffer(leaf, value)
'''

_LOADER = '''

def load(directory: str | None = None) -> CanonicalModel:
    """Build the model and load ``weights.safetensors`` from ``directory`` (default: here)."""
    from pathlib import Path

    from safetensors.torch import load_file

    folder = Path(directory) if directory else Path(__file__).resolve().parent
    model = CanonicalModel()
    model.load_state_dict(load_file(str(folder / "weights.safetensors")))
    return model.eval()
'''


def python_source(gm: fx.GraphModule, title: str) -> str:
    """The text of a self-contained ``model.py`` for ``gm``."""
    nn_src = inspect.getsource(cnn)
    nn_body = nn_src.split('"""', 2)[2].lstrip("\n")  # drop the docstring, keep the future import first
    graph = copy.deepcopy(gm.graph)
    for node in graph.nodes:  # annotations (strings under `from __future__ import annotations`) are not code
        node.type = None
    code = graph.python_code(root_module="self")
    header = [f'"""Canonical model emitted by canonc from {title}. Load it with ``load(DIR)``."""', "", nn_body]
    used = {k: v for k, v in code.globals.items() if k not in ("torch", "nn") and re.search(rf"\b{k}\b", code.src)}
    globals_ = [_global_line(k, v) for k, v in sorted(used.items())]
    init = ["class CanonicalModel(nn.Module):", '    """The canonized model (eval mode after ``load``)."""', "",
            "    def __init__(self) -> None:", "        super().__init__()"]
    called = {n.target for n in gm.graph.nodes if n.op == "call_module"}
    for name, module in gm.named_modules():
        if name in called:
            init.append(f"        _install(self, {name!r}, {constructor(module)})")
    for node in gm.graph.nodes:
        if node.op == "get_attr":
            t = gm.get_parameter(node.target) if _is_param(gm, node.target) else gm.get_buffer(node.target)
            kind = "nn.Parameter(torch.empty" if isinstance(t, nn.Parameter) else "(torch.empty"
            init.append(f"        _install(self, {node.target!r}, {kind}({tuple(t.shape)!r}, dtype={t.dtype!r})))")
    forward = textwrap.indent(textwrap.dedent(code.src).strip("\n"), "    ")
    body = "\n".join(header) + "\n" + "\n".join(globals_) + _RUNTIME + "\n\n" + "\n".join(init) + "\n\n" + forward + "\n" + _LOADER
    return body.replace("\n\n\n\n", "\n\n\n")


def _is_param(gm: fx.GraphModule, target: str) -> bool:
    try:
        gm.get_parameter(target)
        return True
    except AttributeError:
        return False


def _state(gm: fx.GraphModule) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().contiguous().clone() for k, v in gm.state_dict().items()}


def _import_emitted(path: Path):
    spec = importlib.util.spec_from_file_location(f"canonc_emitted_{abs(hash(str(path)))}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def emit_dir(gm: fx.GraphModule, directory: Path, example: tuple[torch.Tensor, ...], title: str) -> None:
    """Write ``model.py`` + ``weights.safetensors`` into ``directory`` and check they reload.

    The emitted source is imported, its weights loaded and its output compared with
    ``gm`` on ``example`` before anything is moved into place.
    """
    directory = Path(directory)
    src = python_source(gm, title)
    state = _state(gm)
    with tempfile.TemporaryDirectory(prefix=".canonc-emit-") as tmp:
        tmp_dir = Path(tmp)
        (tmp_dir / "model.py").write_text(src)
        save_file(state, str(tmp_dir / "weights.safetensors"))
        emitted = _import_emitted(tmp_dir / "model.py").load(str(tmp_dir))
        x = tuple(t.to(next(iter(state.values())).dtype) if t.is_floating_point() else t for t in example)
        got, want = outputs(emitted, x), outputs(gm, x)
        worst = max(((a - b).abs().max().item() for a, b in zip(got, want)), default=0.0)
        scale = 1.0 + max((b.abs().max().item() for b in want), default=0.0)
        if len(got) != len(want) or not worst <= 1e-5 * scale:
            raise RefusedError(f"emitted model.py does not reproduce the canonized model (error {worst:.3g}); use -o model.pt")
        directory.mkdir(parents=True, exist_ok=True)
        for name in ("weights.safetensors", "model.py"):
            atomic_write(directory / name, lambda p, n=name: p.write_bytes((tmp_dir / n).read_bytes()))
