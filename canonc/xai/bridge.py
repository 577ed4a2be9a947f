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

Rules built from several modified forward passes (zennit's ``BasicHook``: z+, α-β, γ)
also skip the passes that are zero by construction: a pass whose modified input is all
zero (``x.clamp(max=0)`` after a ReLU) and whose modified layer has no bias outputs zero
and adds ``0 · gradient`` to the relevance, and a pass whose mapped output gradient is
all zero (γ's sign pass) has a zero gradient. Both are skipped instead of computed; the
relevance is the same (``tests/test_xai_bridge.py`` checks equality with zennit's own
backward). After a ReLU this halves the convolutions of z+ and α2β1.
"""

from __future__ import annotations

import torch
from torch import nn
from zennit.core import BasicHook, Hook, ParamMod, RemovableHandle, RemovableHandleList


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


def zero_free_backward(hook: BasicHook, module: nn.Module, grad_input: tuple, grad_output: tuple) -> tuple:
    """zennit's ``BasicHook.backward`` without the modified passes that are zero by construction."""
    x = hook.stored_tensors["input"][0]
    passes = list(zip(hook.input_modifiers, hook.param_modifiers, hook.output_modifiers))
    inputs = [in_mod(x) for in_mod, _, _ in passes]
    outputs: list[torch.Tensor | None] = [None] * len(passes)
    for i, (_, param_mod, out_mod) in enumerate(passes):
        with ParamMod.ensure(param_mod)(module) as modified, torch.autograd.enable_grad():
            bias = getattr(modified, "bias", None)
            if inputs[i].any() or (bias is not None and bias.any()):
                inputs[i].requires_grad_()
                outputs[i] = out_mod(modified.forward(inputs[i]))
    live = [i for i, out in enumerate(outputs) if out is not None]
    if not live:  # an all-zero input of a bias-free layer: no pass to take the output's shape from
        return BasicHook.backward(hook, module, grad_input, grad_output)
    outputs = [out if out is not None else torch.zeros_like(outputs[live[0]]) for out in outputs]
    grad_outputs = hook.gradient_mapper(grad_output[0], outputs)
    if isinstance(grad_outputs, torch.Tensor):  # one-pass rules (ε, Norm) map to a bare tensor
        grad_outputs = [grad_outputs]
    needed = [i for i in live if grad_outputs[i].any()]
    gradients = [torch.zeros_like(inp) for inp in inputs]
    if needed:
        computed = torch.autograd.grad([outputs[i] for i in needed], [inputs[i] for i in needed],
                                       grad_outputs=[grad_outputs[i] for i in needed],
                                       create_graph=grad_output[0].requires_grad)
        for i, gradient in zip(needed, computed):
            gradients[i] = gradient
    relevance = hook.reducer([inp.detach() for inp in inputs], gradients)
    return tuple(relevance if original.shape == relevance.shape else None for original in grad_input)


class _Bridged:
    """Mixin over a zennit ``Hook`` class: register one forward hook that inserts :class:`_Rule`."""

    def register(self, module: nn.Module) -> RemovableHandleList:
        """Attach to ``module``; the returned handles remove the hook again."""
        return RemovableHandleList([RemovableHandle(self), module.register_forward_hook(self._insert)])

    def _insert(self, module: nn.Module, input: tuple, output: torch.Tensor) -> torch.Tensor | None:
        if not (torch.is_grad_enabled() and input[0].requires_grad) or getattr(module, "inplace", False):
            return None
        self.stored_tensors["input"] = (input[0].detach(),)
        self.stored_tensors["output"] = output.detach()  # rules that need the module's output (γ) take it here
        return _Rule.apply(self, module, input[0], output)


class _BridgedBasic(_Bridged):
    """:class:`_Bridged` for zennit's ``BasicHook`` rules: their backward skips the zero passes."""

    def backward(self, module: nn.Module, grad_input: tuple, grad_output: tuple) -> tuple:
        """The rule's relevance, computed by :func:`zero_free_backward`."""
        return zero_free_backward(self, module, grad_input, grad_output)


_CLASSES: dict[type, type] = {}


def bridged(rule: Hook) -> Hook:
    """``rule`` (a zennit hook with a single-input ``backward``), applied through one autograd node.

    The instance's class is swapped for a subclass with the bridged registration (and, for
    a ``BasicHook`` that keeps zennit's backward, the zero-free one); its ``copy()`` (one
    copy per module) keeps that class.
    """
    cls = type(rule)
    if cls not in _CLASSES:
        plain_basic = isinstance(rule, BasicHook) and cls.backward is BasicHook.backward
        mixin = _BridgedBasic if plain_basic else _Bridged  # a rule's own backward is kept
        _CLASSES[cls] = cls if issubclass(cls, _Bridged) else type(cls.__name__, (mixin, cls), {})
    rule.__class__ = _CLASSES[cls]
    return rule
