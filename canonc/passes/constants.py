"""Evaluate the parts of a graph that depend on parameters and literals only (no input)."""

from __future__ import annotations

import torch
from torch import fx

_MISSING = object()


class Constants:
    """Values of constant nodes of one graph, computed on demand and cached.

    A node is constant when it is a ``get_attr`` or a function / method call whose
    inputs are all constant (e.g. timm's standardised conv weight, ``weight.shape[-2:]``).
    """

    def __init__(self, gm: fx.GraphModule) -> None:
        self.gm = gm
        self.cache: dict[fx.Node, object] = {}

    def _eval(self, node: fx.Node) -> object:
        if node.op == "get_attr":
            value: object = self.gm
            for atom in node.target.split("."):
                value = getattr(value, atom, _MISSING)
                if value is _MISSING:
                    return _MISSING
            return value.detach() if isinstance(value, torch.Tensor) else value
        if node.op not in ("call_function", "call_method"):
            return _MISSING
        if node.op == "call_method" and node.target.endswith("_") or node.kwargs.get("inplace") is True:
            return _MISSING  # never write into a parameter
        inputs = {n: self.value(n) for n in node.all_input_nodes}
        if any(v is _MISSING for v in inputs.values()):
            return _MISSING
        args = fx.node.map_arg(node.args, lambda n: inputs[n])
        kwargs = fx.node.map_arg(node.kwargs, lambda n: inputs[n])
        try:
            with torch.no_grad():
                if node.op == "call_method":
                    return getattr(args[0], node.target)(*args[1:], **kwargs)
                return node.target(*args, **kwargs)
        except Exception:  # noqa: BLE001 - not evaluable here: treat as data
            return _MISSING

    def value(self, arg: object) -> object:
        """The value of ``arg`` (a literal or a node), or ``MISSING`` when it depends on the input."""
        if not isinstance(arg, fx.Node):
            return arg
        if arg not in self.cache:
            self.cache[arg] = self._eval(arg)
        return self.cache[arg]

    def known(self, arg: object) -> bool:
        """True when ``arg`` is constant."""
        return self.value(arg) is not _MISSING


MISSING = _MISSING
