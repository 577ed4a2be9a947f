"""Helpers over ``torch.fx`` graphs: data users, module access, node predicates, shapes."""

from __future__ import annotations

import copy
import operator
from collections.abc import Callable

import torch
from torch import fx, nn

_META_ATTRS = {"shape", "dtype", "device", "ndim", "is_cuda", "layout"}
_META_METHODS = {"size", "dim", "numel", "type", "get_device"}
_ASSERTS = {torch._assert, getattr(torch, "_assert_async", torch._assert)}

CONV_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
CONVT_TYPES = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
LINEAR_TYPES = CONV_TYPES + CONVT_TYPES + (nn.Linear,)
BN_TYPES = (nn.modules.batchnorm._BatchNorm,)


def is_meta_user(node: fx.Node) -> bool:
    """True when ``node`` reads only metadata (shape, dtype) of its input, or asserts on it."""
    if node.op == "call_function":
        if node.target is getattr and len(node.args) > 1 and node.args[1] in _META_ATTRS:
            return True
        if node.target in _ASSERTS:
            return True
    if node.op == "call_method" and node.target in _META_METHODS:
        return True
    return False


def data_users(node: fx.Node) -> list[fx.Node]:
    """Users of ``node`` that consume its values (shape reads and asserts excluded)."""
    return [u for u in node.users if not is_meta_user(u)]


def get_module(gm: fx.GraphModule, node: fx.Node) -> nn.Module | None:
    """The submodule a ``call_module`` node calls, else ``None``."""
    if node.op != "call_module":
        return None
    module: nn.Module = gm
    try:  # plain dict lookups: Module.get_submodule's __getattr__ walk was 15 % of canonize time
        for atom in node.target.split("."):
            module = module._modules[atom]
    except KeyError:
        return gm.get_submodule(node.target)  # raises the usual AttributeError
    return module


def module_is(gm: fx.GraphModule, node: fx.Node, types: tuple[type, ...]) -> bool:
    """True when ``node`` calls a module that is an instance of ``types``."""
    m = get_module(gm, node)
    return m is not None and isinstance(m, types)


def exact_forward(module: nn.Module, base: type) -> bool:
    """True when ``module`` computes what ``base`` computes (forward not overridden).

    Subclasses such as timm's ``Conv2dSame`` or ``ScaledStdConv2d`` change what the
    weights mean; rewriting their weights as if they were plain layers is wrong.
    """
    cls = type(module)
    for attr in ("forward", "_conv_forward"):
        if getattr(cls, attr, None) is not getattr(base, attr, None):
            return False
    return True


def linear_base(module: nn.Module) -> type | None:
    """The torch.nn linear layer type ``module`` behaves exactly like, or ``None``."""
    for base in LINEAR_TYPES:
        if isinstance(module, base):
            return base if exact_forward(module, base) else None
    return None


def set_module(gm: fx.GraphModule, target: str, module: nn.Module) -> None:
    """Install ``module`` at dotted path ``target`` (creating parents as needed)."""
    parent_name, _, leaf = target.rpartition(".")
    parent: nn.Module = gm
    for atom in parent_name.split(".") if parent_name else []:
        if not hasattr(parent, atom):
            parent.add_module(atom, nn.Module())
        parent = getattr(parent, atom)
    parent.add_module(leaf, module)


def free_name(gm: fx.GraphModule, base: str) -> str:
    """First ``base_k`` (k = 1, 2, ...) that names no attribute of ``gm``."""
    k = 1
    while True:
        name = f"{base}_{k}"
        try:
            gm.get_submodule(name)
        except AttributeError:
            return name
        k += 1


def copy_sharing(module: nn.Module, *names: str) -> nn.Module:
    """Deep copy of ``module`` that shares (does not clone) the tensors named ``names``.

    For rewrites that replace those tensors right away: copying large weights only to
    overwrite them dominates canonization time.
    """
    memo = {id(t): t for t in (getattr(module, n, None) for n in names) if t is not None}
    return copy.deepcopy(module, memo)


def clone_module(gm: fx.GraphModule, node: fx.Node, module: nn.Module | None = None) -> str:
    """Give ``node`` its own copy of its module (or ``module``) under a fresh name.

    Returns the new target. The original module is never modified.
    """
    new = module if module is not None else copy.deepcopy(gm.get_submodule(node.target))
    target = free_name(gm, node.target)
    set_module(gm, target, new)
    node.target = target
    return target


def clone_chain(gm: fx.GraphModule, chain: list[fx.Node], consumer: fx.Node,
                layer: nn.Module | None = None) -> dict[fx.Node, fx.Node]:
    """Give ``consumer`` its own copy of ``chain`` (producer first), modules cloned.

    The copies are inserted before ``consumer``; the first node's copy calls ``layer`` when
    given. Returns the map from original to copied nodes.
    """
    mapping: dict[fx.Node, fx.Node] = {}
    with gm.graph.inserting_before(consumer):
        for n in chain:
            new = gm.graph.node_copy(n, lambda a: mapping.get(a, a))
            new.meta = dict(n.meta)
            mapping[n] = new
            if n.op == "call_module":
                clone_module(gm, new, layer if n is chain[0] else None)
    consumer.replace_input_with(chain[-1], mapping[chain[-1]])
    return mapping


def replace_module(gm: fx.GraphModule, node: fx.Node, module: nn.Module) -> None:
    """Make ``node`` call ``module`` under its own name, cloning the name if it is shared
    (called elsewhere, or its tensors read by ``get_attr`` nodes).

    The previous module object is left untouched (it may be shared with the user's model).
    """
    calls = sum(1 for n in gm.graph.nodes if n.op == "call_module" and n.target == node.target)
    # ``F.conv2d(x, self.conv.weight)`` elsewhere reads the old weights through get_attr
    read = any(n.op == "get_attr" and n.target.startswith(node.target + ".") for n in gm.graph.nodes)
    if calls > 1 or read:
        clone_module(gm, node, module)
    else:
        set_module(gm, node.target, module)


def shape_of(node: fx.Node) -> tuple[int, ...] | None:
    """Static shape recorded on ``node`` by shape propagation, if any."""
    val = node.meta.get("val")
    if isinstance(val, torch.Tensor):
        return tuple(int(d) for d in val.shape)
    tm = node.meta.get("tensor_meta")
    if tm is not None and hasattr(tm, "shape"):
        return tuple(int(d) for d in tm.shape)
    return None


# Modules whose output has their input's shape and dtype: meta propagation skips their
# (slow, decomposed) meta kernels. Only exact torch types: subclasses may reshape.
_SHAPE_PRESERVING = {
    nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.GELU, nn.SiLU,
    nn.Mish, nn.Hardswish, nn.Hardsigmoid, nn.Hardtanh, nn.Sigmoid, nn.Tanh, nn.Identity, nn.Dropout,
}


class _MetaProp(fx.Interpreter):
    """Interpreter that records each node's output as ``node.meta['val']``."""

    def run_node(self, n: fx.Node) -> object:
        out = None
        if n.op == "call_module" and type(self.module.get_submodule(n.target)) in _SHAPE_PRESERVING:
            args, kwargs = self.fetch_args_kwargs_from_env(n)
            x = args[0] if len(args) == 1 and not kwargs else None
            out = torch.empty_like(x) if isinstance(x, torch.Tensor) and x.is_meta else None
        if out is None:
            out = super().run_node(n)
        if isinstance(out, torch.Tensor):
            n.meta["val"] = out
        return out


def propagate_shapes(gm: fx.GraphModule, example: tuple[torch.Tensor, ...]) -> None:
    """Record the shape of every node's output (``node.meta['val']``).

    Runs the graph on meta tensors (no real compute); graphs with ops that have no
    meta kernel fall back to a real forward on a batch of one.
    """
    from torch.nn.utils.stateless import _reparametrize_module

    tensors = list(gm.named_parameters(remove_duplicate=False)) + list(gm.named_buffers(remove_duplicate=False))
    state = {k: v.to("meta") for k, v in tensors}
    try:
        with _reparametrize_module(gm, state), torch.no_grad():
            _MetaProp(gm).run(*[t.to("meta") for t in example])
    except Exception:  # noqa: BLE001 - an op without a meta kernel: use real tensors
        with torch.no_grad():
            _MetaProp(gm).run(*[t[:1] for t in example])


def is_data(arg: object) -> bool:
    """True for a node carrying a tensor computed from the model input (not a constant).

    A value derived only from parameters or buffers (``gamma.reshape(1, -1, 1, 1)``) is a
    constant even though it is not a ``get_attr`` node itself.
    """
    if not isinstance(arg, fx.Node) or shape_of(arg) is None:
        return False
    seen, stack = set(), [arg]
    while stack:
        n = stack.pop()
        if n.op == "placeholder":
            return True
        for a in n.all_input_nodes:
            if a not in seen:
                seen.add(a)
                stack.append(a)
    return False


ADD_OPS: set[Callable] = {operator.add, operator.iadd, torch.add}
MUL_OPS: set[Callable] = {operator.mul, operator.imul, torch.mul}
CAT_OPS: set[Callable] = {torch.cat, torch.concat, torch.concatenate}


def is_call(node: fx.Node, functions: set[Callable], methods: tuple[str, ...] = ()) -> bool:
    """True when ``node`` calls one of ``functions`` or one of the tensor ``methods``."""
    if node.op == "call_function" and node.target in functions:
        return True
    return node.op == "call_method" and node.target in methods


def erase_unused(gm: fx.GraphModule) -> None:
    """Drop dead nodes and submodules no node calls any more, then recompile."""
    gm.graph.eliminate_dead_code()
    gm.delete_all_unused_submodules()
    gm.graph.lint()
    gm.recompile()
