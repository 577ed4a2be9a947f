"""Model sources: ``torchvision:NAME``, ``timm:NAME``, ``file.py:factory``, state dicts
(``.pt``, ``.pth``, ``.safetensors``) with ``arch``, pickled modules with ``trust_pickle``,
``.onnx`` files (imported by :mod:`canonc.onnx_import`).

Loading is safe by default: ``torch.load(weights_only=True)``; unpickling a full module
runs code from the file and needs an explicit ``trust_pickle=True``.
"""

from __future__ import annotations

import importlib
import importlib.util
import pickle
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from .errors import InputError

STATE_DICT_KEYS = ("state_dict", "model_state_dict", "model", "net", "weights")
_DEFAULT_SHAPE = (1, 3, 224, 224)
_TORCHVISION_SHAPES = {"inception_v3": (1, 3, 299, 299)}


@dataclass
class Loaded:
    """A loaded model, its default example shape (or None) and the file it came from."""

    model: nn.Module
    input_shape: tuple[int, ...] | None
    name: str
    path: Path | None = None


def _torchvision(name: str) -> Loaded:
    import torchvision

    if name not in torchvision.models.list_models():
        raise InputError(f"torchvision has no model '{name}'; see torchvision.models.list_models()")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = torchvision.models.get_model(name, weights=None)
    return Loaded(model, _TORCHVISION_SHAPES.get(name, _DEFAULT_SHAPE), f"torchvision:{name}")


def _timm(name: str) -> Loaded:
    try:
        import timm
    except ImportError as exc:
        raise InputError("timm is not installed; pip install 'canonc[zoo]'") from exc
    try:
        model = timm.create_model(name, pretrained=False)
    except RuntimeError as exc:
        raise InputError(f"timm cannot create '{name}': {exc}") from exc
    cfg = getattr(model, "pretrained_cfg", None) or {}
    size = tuple(cfg.get("input_size", (3, 224, 224)))
    return Loaded(model, (1, *size), f"timm:{name}")


def _factory(path_str: str, fn: str) -> Loaded:
    path = Path(path_str)
    if not path.is_file():
        raise InputError(f"no such file: {path}")
    # Registered under the file's own name (when no other module has it) so torch.save can
    # pickle user classes that stay in the canonical model (opaque leaves): ``net.Gate``.
    free = path.stem.isidentifier() and path.stem not in sys.modules and importlib.util.find_spec(path.stem) is None
    name = path.stem if free else f"canonc_user_{path.stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:  # noqa: BLE001 - the user's file failed to import
        del sys.modules[name]
        raise InputError(f"{path} fails to import: {type(exc).__name__}: {exc}") from exc
    factory = getattr(module, fn, None)
    if not callable(factory):
        raise InputError(f"{path} has no callable '{fn}'")
    try:
        model = factory()
    except Exception as exc:  # noqa: BLE001 - the user's factory failed
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise InputError(f"{path}:{fn}() raised {type(exc).__name__}: {first}; fix the factory") from exc
    if not isinstance(model, nn.Module):
        raise InputError(f"{path}:{fn}() returned {type(model).__name__}, not a torch.nn.Module")
    shape = getattr(factory, "input_shape", None) or getattr(module, "INPUT_SHAPE", None)
    return Loaded(model, tuple(shape) if shape else None, f"{path.name}:{fn}", path)


_ZOO_MODULE = "canonc_repository_models"


def _repository_models() -> object:
    """The repository's ``models/`` package, found next to ``canonc/``, whatever the working directory.

    It is imported under a private name, so a user's own ``models`` package (on the path, in
    the working directory) neither hides it nor is replaced by it.
    """
    if _ZOO_MODULE in sys.modules:
        return sys.modules[_ZOO_MODULE]
    init = Path(__file__).resolve().parents[1] / "models" / "__init__.py"
    if not init.is_file():
        raise InputError(f"the 'models:' zoo is the models/ folder of a canonc checkout, and there is none next to "
                         f"{Path(__file__).resolve().parent}; install canonc from its repository with pip install -e")
    spec = importlib.util.spec_from_file_location(_ZOO_MODULE, init, submodule_search_locations=[str(init.parent)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[_ZOO_MODULE] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[_ZOO_MODULE]
        raise
    return module


def _models_zoo(name: str) -> Loaded:
    model, shape = _repository_models().load(name)
    return Loaded(model, shape, f"models:{name}")


def _read_tensors(path: Path, trust_pickle: bool) -> object:
    if not path.is_file():
        raise InputError(f"no such file: {path}")
    if path.stat().st_size == 0:
        raise InputError(f"{path} is empty; pass a saved model or state dict")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device="cpu")
        except Exception as exc:  # noqa: BLE001 - any parse failure is a corrupt file
            raise InputError(f"{path} is not a readable safetensors file ({exc}); re-save it") from exc
    try:
        with warnings.catch_warnings():  # torch warns about foreign pickle protocols: the error below says it all
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=not trust_pickle)
    except pickle.UnpicklingError as exc:
        if not trust_pickle and "weights_only" in str(exc).lower().replace(" ", "_"):
            raise InputError(
                f"{path} holds pickled Python objects (a full model?); loading it runs code from the file: "
                "pass --trust-pickle only if you trust its source, or save model.state_dict() and pass --arch"
            ) from exc
        raise InputError(f"{path} is not a readable PyTorch file ({exc}); re-save it") from exc
    except (RuntimeError, EOFError, ValueError, OSError, AttributeError, ModuleNotFoundError) as exc:
        first = str(exc).strip().split(". ")[0].splitlines()[0] if str(exc).strip() else ""  # torch adds a paragraph
        raise InputError(f"{path} is not a readable PyTorch file ({type(exc).__name__}: {first}); re-save it") from exc


def _state_dict(obj: object, path: Path) -> dict[str, torch.Tensor] | None:
    if isinstance(obj, dict):
        for key in STATE_DICT_KEYS:
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
        if obj and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()):
            prefix = "module."
            if all(k.startswith(prefix) for k in obj):
                obj = {k[len(prefix):]: v for k, v in obj.items()}
            return dict(obj)
    return None


def load_weights(model: nn.Module, state: dict[str, torch.Tensor], path: Path, arch: str) -> None:
    """Load ``state`` into ``model`` strictly, with one clear line on mismatch."""
    try:
        result = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # same keys, other shapes
        detail = next((ln.strip() for ln in str(exc).splitlines() if "size mismatch" in ln), str(exc).splitlines()[0])
        raise InputError(f"{path} does not match --arch {arch}: {detail.rstrip('.')}; pass the architecture it was saved from") from exc
    missing, unexpected = list(result.missing_keys), list(result.unexpected_keys)
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} (e.g. {missing[0]})")
        if unexpected:
            parts.append(f"unexpected {len(unexpected)} (e.g. {unexpected[0]})")
        raise InputError(f"{path} does not match --arch {arch}: {', '.join(parts)}; pass the architecture it was saved from")


def load(spec: str, *, arch: str | None = None, weights: str | None = None, trust_pickle: bool = False) -> Loaded:
    """Load a model from any supported source.

    Parameters
    ----------
    spec : str
        ``torchvision:NAME``, ``timm:NAME``, ``models:NAME``, ``file.py:factory`` or a file.
    arch : str, optional
        Architecture source for a state-dict file.
    weights : str, optional
        A state-dict file to load into an architecture source.
    trust_pickle : bool
        Allow unpickling full modules (runs code from the file).
    """
    if ":" in spec and not Path(spec).exists():
        kind, _, rest = spec.partition(":")
        if kind == "torchvision":
            loaded = _torchvision(rest)
        elif kind == "timm":
            loaded = _timm(rest)
        elif kind == "models":
            loaded = _models_zoo(rest)
        elif kind.endswith(".py"):
            loaded = _factory(kind, rest)
        else:
            raise InputError(f"unknown model source '{spec}'; use torchvision:NAME, timm:NAME, file.py:factory or a file")
        if weights:
            wpath = Path(weights)
            state = _state_dict(_read_tensors(wpath, trust_pickle), wpath)
            if state is None:
                raise InputError(f"{wpath} holds no state dict")
            load_weights(loaded.model, state, wpath, spec)
            loaded.path = wpath
        return loaded
    path = Path(spec)
    if path.suffix == ".onnx":
        if arch:
            raise InputError(f"{path} is an ONNX model with its weights; drop --arch")
        from .onnx_import import import_onnx

        module, shape = import_onnx(path)
        return Loaded(module, shape, path.name, path)
    if path.suffix not in (".pt", ".pth", ".bin", ".ckpt", ".safetensors"):
        if not path.exists():
            raise InputError(f"no such file or model source: {spec}")
        raise InputError(f"{path}: unknown file type '{path.suffix}'; use .pt, .pth or .safetensors")
    obj = _read_tensors(path, trust_pickle)
    if isinstance(obj, nn.Module):
        if arch:
            raise InputError(f"{path} holds a full model; drop --arch")
        return Loaded(obj, None, path.name, path)
    state = _state_dict(obj, path)
    if state is None:
        raise InputError(f"{path} holds no model and no state dict ({type(obj).__name__}); save model.state_dict()")
    if not arch:
        raise InputError(f"{path} is a state dict; pass --arch SOURCE (e.g. torchvision:resnet50) to say which model it belongs to")
    loaded = load(arch)
    load_weights(loaded.model, state, path, arch)
    return Loaded(loaded.model, loaded.input_shape, f"{path.name} ({loaded.name})", path)


def load_model(spec: str, **kwargs: object) -> nn.Module:
    """Load a model from any CLI model source (see :func:`load`)."""
    return load(spec, **kwargs).model


def parse_shape(text: str) -> tuple[int, ...]:
    """Parse ``"1,3,224,224"`` into a shape tuple."""
    try:
        shape = tuple(int(p) for p in text.replace("x", ",").split(",") if p.strip())
    except ValueError as exc:
        raise InputError(f"--input-shape '{text}' is not a list of integers like 1,3,224,224") from exc
    if not shape or any(d <= 0 for d in shape):
        raise InputError(f"--input-shape '{text}' must be positive integers like 1,3,224,224")
    return shape


