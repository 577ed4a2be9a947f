"""Rules applied through one autograd node per module, instead of zennit's two gradient hooks.

zennit wraps a module's input in an identity node and replaces that node's gradient with
the rule's relevance; the module's own backward still runs (a full transposed convolution
per conv) and its result is thrown away, and every input is copied in case the module
writes into it. :func:`bridged` turns a zennit rule into one that, after the module's
forward, puts a single node between the module's input and its detached output; its
backward is the rule. The rule's arithmetic is zennit's own (same results, bit for bit);
the discarded backward and the copies are gone. Canonized models have no in-place ops,
so the input need not be copied; an ``inplace`` module keeps its plain gradient (for
ReLU, the only such activation, that equals the pass rule).
"""

from __future__ import annotations

import torch
from torch import nn
from zennit.core import Hook, RemovableHandle, RemovableHandleList


class _Rule(torch.autograd.Function):
    """Forward: the module's output value. Backward: the rule's relevance for the module's input."""

    @staticmethod
    def forward(ctx, hook: Hook, module: nn.Module, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        ctx.hook, ctx.module = hook, module
        return out.detach()

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor) -> tuple:
        x = ctx.hook.stored_tensors["input"][0]
        relevance = ctx.hook.backward(ctx.module, (x,), (grad_out,))[0]
        return None, None, relevance, None


class _Bridged:
    """Mixin over a zennit ``Hook`` class: register one forward hook that inserts :class:`_Rule`."""

    def register(self, module: nn.Module) -> RemovableHandleList:
        """Attach to ``module``; the returned handles remove the hook again."""
        return RemovableHandleList([RemovableHandle(self), module.register_forward_hook(self._insert)])

    def _insert(self, module: nn.Module, input: tuple, output: torch.Tensor) -> torch.Tensor | None:
        if not (torch.is_grad_enabled() and input[0].requires_grad) or getattr(module, "inplace", False):
            return None
        self.stored_tensors["input"] = (input[0].detach(),)
        return _Rule.apply(self, module, input[0], output)


_CLASSES: dict[type, type] = {}


def bridged(rule: Hook) -> Hook:
    """``rule`` (a zennit hook with a single-input ``backward``), applied through one autograd node.

    The instance's class is swapped for a subclass with the bridged registration; its
    ``copy()`` (one copy per module) keeps that class.
    """
    cls = type(rule)
    if cls not in _CLASSES:
        _CLASSES[cls] = cls if issubclass(cls, _Bridged) else type(cls.__name__, (_Bridged, cls), {})
    rule.__class__ = _CLASSES[cls]
    return rule
