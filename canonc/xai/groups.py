"""Layer groups without hand-written names: split a model's linear layers in execution order.

The linear layers (Conv*/ConvTranspose*/Linear) of a model are listed in execution
order; the trailing run of ``nn.Linear`` layers is the dense head (``classifier``),
the layers before it are the feature layers. A spec splits them:

- ``"3,4,3,classifier"``: three groups of 3, 4 and 3 feature layers, then the head;
  the counts must add up to the number of feature layers (all layers without
  ``classifier``).
- ``"auto:K"`` (default ``auto:4``): the head is one group, the feature layers are
  split into ``K - 1`` contiguous groups as equal as possible, the remainder going
  to the groups nearest the middle (fewer groups when there are fewer layers). For VGG-13-BN (10 convs) this gives the poster's
  groups Conv 1-3, 4-7, 8-10, Classifier; for VGG-16 the paper code's 1-4, 5-9, 10-13.

Groups are named ``conv{a}-{b}`` (1-based feature-layer indices; ``conv{a}`` for a single
layer; ``layer...`` when the feature layers are not all convolutions) and ``classifier``.
A model made of ``nn.Linear`` layers only has no separate head.
"""

from __future__ import annotations

from torch import fx, nn
from zennit.types import Convolution, Linear

from ..errors import InputError

DEFAULT_GROUPS = "auto:4"


def linear_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """``(name, module)`` of every Conv/Linear layer in execution order.

    For an ``fx.GraphModule`` (every canonized model) the order is the graph's; for
    any other module it is the registration order, which usually but not always is
    the execution order (canonize the model to be sure).
    """
    if isinstance(model, fx.GraphModule):
        names = [n.target for n in model.graph.nodes if n.op == "call_module"]
        seen: set[str] = set()
        layers = []
        for name in names:
            module = model.get_submodule(name)
            if name not in seen and isinstance(module, Linear):
                seen.add(name)
                layers.append((name, module))
        return layers
    return [(name, m) for name, m in model.named_modules() if isinstance(m, Linear)]


def _head_start(layers: list[tuple[str, nn.Module]]) -> int:
    """Index of the first layer of the trailing ``nn.Linear`` run (no head when all are Linear)."""
    i = len(layers)
    while i > 0 and isinstance(layers[i - 1][1], nn.Linear):
        i -= 1
    return i if i > 0 else len(layers)


def _balanced(n: int, k: int) -> list[int]:
    """Split ``n`` into ``k`` sizes as equal as possible, extra ones nearest the middle."""
    sizes = [n // k] * k
    centre = (k - 1) / 2
    for i in sorted(range(k), key=lambda j: (abs(j - centre), j))[: n % k]:
        sizes[i] += 1
    return sizes


def _parse(spec: str, n_features: int, n_head: int, n_all: int) -> tuple[list[int], bool]:
    """Counts of the feature groups and whether the head is its own group."""
    spec = spec.strip().replace(" ", "")
    if spec.startswith("auto:"):
        try:
            k = int(spec[len("auto:"):])
        except ValueError as exc:
            raise InputError(f"groups '{spec}': write auto:K with an integer K, e.g. auto:4") from exc
        if k < 1 or (n_head and k < 2):
            raise InputError(f"groups '{spec}': K must be at least {2 if n_head else 1}")
        if n_head == 0:
            return _balanced(n_all, min(k, n_all)), False
        return _balanced(n_features, min(k - 1, n_features)), True
    parts = [p for p in spec.split(",") if p]
    head = bool(parts) and parts[-1] == "classifier"
    if head:
        parts = parts[:-1]
    try:
        counts = [int(p) for p in parts]
    except ValueError as exc:
        raise InputError(f"groups '{spec}': write counts like 3,4,3,classifier or auto:4") from exc
    if any(c <= 0 for c in counts):
        raise InputError(f"groups '{spec}': every count must be positive")
    if head and n_head == 0:
        raise InputError(f"groups '{spec}': the model has no dense head (no trailing Linear layers); drop 'classifier'")
    want = n_features if head else n_all
    if sum(counts) != want:
        what = "feature layers before the classifier" if head else "linear layers"
        raise InputError(f"groups '{spec}': counts add up to {sum(counts)}, but the model has {want} {what}")
    return counts, head


def layer_groups(model: nn.Module, spec: str = DEFAULT_GROUPS) -> dict[str, list[str]]:
    """Group the linear layers of ``model`` by ``spec``; return ``{group: [module names]}`` in order.

    Parameters
    ----------
    model : nn.Module
        A (canonized) model.
    spec : str
        ``"3,4,3,classifier"``, ``"auto:K"`` (see the module docstring).

    Raises
    ------
    InputError
        If the spec does not fit the model.
    """
    layers = linear_layers(model)
    if not layers:
        raise InputError("the model has no Conv or Linear layer to group")
    start = _head_start(layers)
    counts, head = _parse(spec, start, len(layers) - start, len(layers))
    body = layers[:start] if head else layers
    prefix = "conv" if all(isinstance(m, Convolution) for _, m in body) else "layer"
    groups: dict[str, list[str]] = {}
    i = 0
    for c in counts:
        groups[f"{prefix}{i + 1}" if c == 1 else f"{prefix}{i + 1}-{i + c}"] = [name for name, _ in body[i:i + c]]
        i += c
    if head:
        groups["classifier"] = [name for name, _ in layers[start:]]
    return groups
