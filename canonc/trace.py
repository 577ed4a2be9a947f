"""Capture a model as a ``torch.fx`` graph in eval mode.

``CanonTracer`` keeps torch.nn layers (and canonc's own modules) as leaves and traces
through everything else, so adjacency comes from the real dataflow, not from the
order in which modules were registered.
"""

from __future__ import annotations

import importlib
import inspect
import operator
from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import fx, nn

from . import nn as cnn
from .errors import RefusedError
from .graph import is_meta_user

_CONTAINERS = (nn.Sequential, nn.ModuleList, nn.ModuleDict)


_UNKNOWN = object()


def run_node(root: nn.Module, node: fx.Node, values: dict[fx.Node, object]) -> object:
    """Evaluate one traced node given the values of its inputs."""
    args = fx.node.map_arg(node.args, lambda n: values[n])
    kwargs = fx.node.map_arg(node.kwargs, lambda n: values[n])
    if node.op == "get_attr":
        value: object = root
        for atom in node.target.split("."):
            value = getattr(value, atom)
        return value
    if node.op == "call_module":
        return root.get_submodule(node.target)(*args, **kwargs)
    if node.op == "call_method":
        return getattr(args[0], node.target)(*args[1:], **kwargs)
    if node.op == "call_function":
        return node.target(*args, **kwargs)
    raise ValueError(node.op)


def _timm_leaves(model: nn.Module) -> tuple[set[type], list]:
    """timm's no-trace module types and autowrap functions (empty for non-timm models).

    timm's ``pad_same`` (TF "SAME" padding from the input size) is traced as one call, which
    the ``same-padding`` pass turns into a :class:`~canonc.nn.PadSame` module.
    """
    if not any(type(m).__module__.startswith("timm.") for m in model.modules()):
        return set(), []
    try:
        layers = importlib.import_module("timm.layers")
    except ImportError:
        return set(), []
    return set(layers.get_notrace_modules()), [*layers.get_notrace_functions(), layers.pad_same]


def is_norm_act(module: nn.Module) -> bool:
    """True for a BatchNorm subclass that also applies an activation (timm ``BatchNormAct2d``)."""
    return (
        isinstance(module, nn.modules.batchnorm._BatchNorm)
        and type(module).__module__.split(".")[0] != "torch"
        and hasattr(module, "act")
    )


class _InplaceProxy(fx.Proxy):
    """A Proxy that records ``x += y`` as ``operator.iadd`` (fx's Proxy records a plain add,
    losing the write into ``x`` that later readers of ``x`` see); see :func:`resolve_inplace`."""

    def __iadd__(self, other: object) -> fx.Proxy:
        return self.tracer.create_proxy("call_function", operator.iadd, (self, other), {})

    def __isub__(self, other: object) -> fx.Proxy:
        return self.tracer.create_proxy("call_function", operator.isub, (self, other), {})

    def __imul__(self, other: object) -> fx.Proxy:
        return self.tracer.create_proxy("call_function", operator.imul, (self, other), {})

    def __itruediv__(self, other: object) -> fx.Proxy:
        return self.tracer.create_proxy("call_function", operator.itruediv, (self, other), {})


class CanonTracer(fx.Tracer):
    """fx tracer with canonc's leaf policy.

    Parameters
    ----------
    model : nn.Module, optional
        The model to be traced (its module types decide whether timm's lists apply).
    leaves : iterable of str
        Qualified module names the user wants kept as opaque leaves.
    example : tuple of Tensor, optional
        The example input. With it, Python control flow on shapes (``if h % p:``) is decided
        at the example's shapes and guarded by a ``torch._assert`` in the graph.
    """

    def __init__(self, model: nn.Module | None = None, leaves: Iterable[str] = (),
                 example: tuple[torch.Tensor, ...] | None = None) -> None:
        # ``model`` is optional: torch.load re-traces a saved GraphModule with ``CanonTracer()``.
        timm_types, timm_fns = _timm_leaves(model) if model is not None else (set(), [])
        super().__init__(autowrap_functions=tuple(timm_fns))
        self.user_leaves = set(leaves)
        self.timm_types = tuple(timm_types)
        self.trying: set[int] = set()
        self.example = tuple(example) if example is not None else None
        self.values: dict[fx.Node, object] = {}

    def _value(self, target: fx.Node) -> object:
        """The value ``target`` takes on the example input (computed once per node), or ``_UNKNOWN``."""
        from torch.fx._symbolic_trace import _maybe_revert_all_patches

        if self.example is None:
            return _UNKNOWN
        root = self.root
        placeholders = 0
        try:
            with _maybe_revert_all_patches(), torch.no_grad():
                for node in self.graph.nodes:
                    if node.op == "placeholder":
                        self.values.setdefault(node, self.example[placeholders] if placeholders < len(self.example)
                                               else node.args[0] if node.args else None)
                        placeholders += 1
                    if node not in self.values:
                        self.values[node] = run_node(root, node, self.values)
                    if node is target:
                        return self.values[node]
        except Exception:  # noqa: BLE001 - not computable here: the usual trace error follows
            return _UNKNOWN
        return _UNKNOWN

    def to_bool(self, obj: fx.Proxy) -> bool:
        """Decide shape-dependent control flow at the example's shapes, with a guard in the graph."""
        value = self._value(obj.node)
        if value is _UNKNOWN or isinstance(value, torch.Tensor):  # data-dependent: not specialized
            return super().to_bool(obj)
        value = bool(value)
        same = self.create_proxy("call_function", operator.eq, (obj, value), {})
        self.create_proxy("call_function", torch._assert, (same, "canonc specialized this branch to the example input's shape"), {})
        return value

    def call_module(self, m: nn.Module, forward, args: tuple, kwargs: dict) -> object:
        """Trace through a timm no-trace module when its forward allows it, else keep it a leaf.

        timm marks modules no-trace for its own tracer; many trace fine with canonc's
        (shape reads are not data users). A failed attempt leaves no node behind.
        """
        if not (self.timm_types and isinstance(m, self.timm_types)) or is_norm_act(m) \
                or self.path_of_module(m) in self.user_leaves or id(m) in self.trying:
            return super().call_module(m, forward, args, kwargs)
        mark = next(reversed(self.graph.nodes), None)
        stack, calls = self.module_stack.copy(), dict(self.num_calls)
        self.trying.add(id(m))
        try:
            return super().call_module(m, forward, args, kwargs)
        except Exception:  # noqa: BLE001 - data-dependent control flow: keep the module opaque
            for node in reversed(list(self.graph.nodes)):
                if node is mark:
                    break
                self.graph.erase_node(node)
            self.module_stack, self.num_calls = stack, calls
        finally:
            self.trying.discard(id(m))
        return super().call_module(m, forward, args, kwargs)

    def proxy(self, node: fx.Node) -> fx.Proxy:
        return _InplaceProxy(node, self)

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        if module_qualified_name in self.user_leaves:
            return True
        if isinstance(m, cnn.CANONICAL_MODULES) or is_norm_act(m):
            return True
        if self.timm_types and isinstance(m, self.timm_types):
            return id(m) not in self.trying
        if isinstance(m, _CONTAINERS):
            return False
        return type(m).__module__.startswith("torch.nn")


def _set_eval(model: nn.Module) -> bool:
    """Put ``model`` (a private copy) in eval mode; return whether any part was training."""
    was_training = any(m.training for m in model.modules())
    model.eval()
    return was_training


def _defaults(model: nn.Module, n_inputs: int | None) -> dict[str, object]:
    """The forward's optional arguments after the first ``n_inputs``, at their defaults.

    Tracing them as constants specializes flags such as timm's ``is_causal=False`` instead
    of leaving graph inputs that no example fills.
    """
    if n_inputs is None:
        return {}
    try:
        params = list(inspect.signature(model.forward).parameters.values())
    except (TypeError, ValueError):
        return {}
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return {p.name: p.default for p in positional[n_inputs:]
            if p.default is not p.empty and (p.default is None or isinstance(p.default, (bool, int, float, str)))}


def trace(model: nn.Module, leaves: Iterable[str] = (), n_inputs: int | None = None,
          example: tuple[torch.Tensor, ...] | None = None) -> fx.GraphModule:
    """Trace ``model`` (already a private copy) into a GraphModule in eval mode.

    Parameters
    ----------
    model : nn.Module
        The module to trace; it is put in eval mode.
    leaves : iterable of str
        Extra qualified names to keep as leaves.
    n_inputs : int, optional
        How many inputs the model is called with; optional arguments after them are
        traced at their default values.
    example : tuple of Tensor, optional
        The example input: shape-dependent control flow is decided at its shapes (guarded).

    Returns
    -------
    fx.GraphModule
        Graph sharing submodules with ``model``.

    Raises
    ------
    RefusedError
        When the model does not trace; the message names the module where tracing
        stopped and how to mark it as a leaf.
    """
    _set_eval(model)
    tracer = CanonTracer(model, leaves, example)
    try:
        graph = tracer.trace(model, concrete_args=_defaults(model, n_inputs) or None)
    except Exception as exc:  # noqa: BLE001 - any tracing failure becomes one clear line
        where = _failing_module(tracer)
        hint = f" in module '{where}'; mark it opaque with --leaf {where}" if where else ""
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise RefusedError(f"model does not trace with torch.fx{hint} ({first})") from exc
    name = type(model).__name__
    return fx.GraphModule(tracer.root, graph, name)


_INPLACE_FUNCTIONS = {operator.iadd, operator.isub, operator.imul, operator.itruediv, torch.relu_, F.relu_}
_OUT_OF_PLACE = {operator.iadd: operator.add, operator.isub: operator.sub, operator.imul: operator.mul,
                 operator.itruediv: operator.truediv}


def _mutates_first_arg(node: fx.Node, root: nn.Module) -> bool:
    """True when ``node`` writes its result into its first argument (in-place op)."""
    if node.op == "call_module":
        return getattr(root.get_submodule(node.target), "inplace", False) is True
    if node.op == "call_method":
        return node.target.endswith("_") and not node.target.startswith("_")
    if node.op != "call_function":
        return False
    if node.target in _INPLACE_FUNCTIONS:
        return True
    try:
        bound = inspect.signature(node.target).bind(*node.args, **node.kwargs)
    except (TypeError, ValueError):  # builtins without a signature, or a call it does not fit
        return node.kwargs.get("inplace", False) is True
    return bound.arguments.get("inplace", False) is True


_DROPOUT_FUNCTIONS = {F.dropout, F.dropout1d, F.dropout2d, F.dropout3d, F.alpha_dropout, F.feature_alpha_dropout}


def _returns_input(node: fx.Node, root: nn.Module) -> bool:
    """True when ``node`` returns its first argument itself in eval mode (Identity, Dropout, in-place ops)."""
    if not node.args or not isinstance(node.args[0], fx.Node):
        return False
    if node.op == "call_module" and isinstance(root.get_submodule(node.target), (nn.Identity, nn.modules.dropout._DropoutNd)):
        return True
    if node.op == "call_function" and node.target in _DROPOUT_FUNCTIONS:
        try:
            return inspect.signature(node.target).bind(*node.args, **node.kwargs).arguments.get("training", True) is False
        except TypeError:
            return False
    return _mutates_first_arg(node, root)


def _aliases(node: fx.Node, root: nn.Module) -> set[fx.Node]:
    """Nodes that hold the very same tensor as ``node`` (joined by ops that return their input)."""
    seen, stack = {node}, [node]
    while stack:
        cur = stack.pop()
        near = [cur.args[0]] if _returns_input(cur, root) else []
        near += [u for u in cur.users if _returns_input(u, root) and u.args[0] is cur]
        for other in near:
            if other not in seen:
                seen.add(other)
                stack.append(other)
    return seen


_VIEW_METHODS = {"view", "view_as", "reshape", "reshape_as", "flatten", "unflatten", "transpose", "permute", "t",
                 "squeeze", "unsqueeze", "expand", "expand_as", "narrow", "select", "unfold", "movedim", "swapaxes",
                 "swapdims", "diagonal", "as_strided", "contiguous", "chunk", "split", "unbind", "detach", "__getitem__"}
_VIEW_FUNCTIONS = {torch.flatten, torch.reshape, torch.transpose, torch.permute, torch.squeeze, torch.unsqueeze,
                   torch.narrow, torch.select, torch.movedim, torch.chunk, torch.split, torch.unbind, torch.t,
                   torch.swapaxes, torch.diagonal, torch.detach, operator.getitem}


def _is_view(node: fx.Node, root: nn.Module) -> bool:
    """True when ``node`` may return a view sharing storage with its first argument."""
    if not node.args or not isinstance(node.args[0], fx.Node):
        return False
    if node.op == "call_module":
        return isinstance(root.get_submodule(node.target), (nn.Flatten, nn.Unflatten))
    if node.op == "call_method":
        return node.target in _VIEW_METHODS
    return node.op == "call_function" and node.target in _VIEW_FUNCTIONS


def _storage_group(node: fx.Node, root: nn.Module) -> set[fx.Node]:
    """Nodes that may share storage with ``node``: joined by views and ops that return their input."""
    seen, stack = {node}, [node]
    while stack:
        cur = stack.pop()
        joined = _is_view(cur, root) or _returns_input(cur, root)
        near = [cur.args[0]] if joined else []
        near += [u for u in cur.users if (_is_view(u, root) or _returns_input(u, root)) and u.args[0] is cur]
        for other in near:
            if other not in seen:
                seen.add(other)
                stack.append(other)
    return seen


def resolve_inplace(gm: fx.GraphModule) -> None:
    """Make in-place ops explicit in the dataflow (after shape propagation).

    After ``y = relu_(x)`` or ``x += z`` the tensor ``x`` (and every alias of it made by
    Identity / eval-mode Dropout) holds ``y``; users that run later read ``y`` instead, so
    the passes may turn the op out-of-place without changing what those users see.
    A write into a *view* of a tensor that is read later is refused (``RefusedError``).
    """
    order = {n: i for i, n in enumerate(gm.graph.nodes)}
    for node in list(gm.graph.nodes):
        target = node.args[0] if node.args else None
        if node.op == "call_function" and node.target in _OUT_OF_PLACE and not (
                isinstance(target, fx.Node) and isinstance(target.meta.get("val"), torch.Tensor)):
            node.target = _OUT_OF_PLACE[node.target]  # ``n += 1`` on a Python number rebinds, it writes nothing
            continue
        if not isinstance(target, fx.Node) or not _mutates_first_arg(node, gm):
            continue
        for alias in _aliases(target, gm) - {node}:
            for user in list(alias.users):
                if user is not node and order[user] > order[node]:
                    user.replace_input_with(alias, node)
        for other in _storage_group(target, gm):
            late = [u for u in other.users if order[u] > order[node] and u is not node and not is_meta_user(u)]
            if order[other] < order[node] and late:
                raise RefusedError(
                    f"'{node.name}' writes in place into a view of '{other.name}', which '{late[0].name}' reads "
                    "afterwards; canonc cannot follow that aliasing: make the op out-of-place (inplace=False)")
    gm.recompile()


def _failing_module(tracer: CanonTracer) -> str:
    """Innermost module the tracer was inside when it failed (``''`` if unknown)."""
    stack = getattr(tracer, "module_stack", None)
    if not stack:
        return ""
    names = [k for k in stack.keys() if k]
    return names[-1] if names else ""

