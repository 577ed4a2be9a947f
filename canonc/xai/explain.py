"""Batched attributions: ``explain()`` and the reusable :class:`Explainer`."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ..errors import InputError
from .composites import uncovered
from .methods import get_method


def model_device_dtype(model: nn.Module) -> tuple[torch.device, torch.dtype]:
    """Device and floating dtype of the first floating parameter or buffer (CPU float32 if none)."""
    for t in list(model.parameters()) + list(model.buffers()):
        if t.is_floating_point():
            return t.device, t.dtype
    return torch.device("cpu"), torch.float32


def as_targets(targets: int | Sequence[int] | torch.Tensor, n: int, device: torch.device) -> torch.Tensor:
    """Target class indices as a ``(n,)`` long tensor (one int is used for every sample)."""
    t = torch.as_tensor(targets, device=device).long().reshape(-1)
    if t.numel() == 1:
        t = t.expand(n)
    if t.numel() != n:
        raise InputError(f"got {t.numel()} targets for {n} inputs; pass one target or one per input")
    return t


def target_gradient(model: nn.Module, x: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Gradient of the target logits of ``model(x)`` w.r.t. ``x`` (relevance under a registered composite)."""
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        out = model(x)
        if out.dim() != 2:
            raise InputError(f"model output has shape {tuple(out.shape)}; explain needs (N, classes) logits")
        if targets.min() < 0 or targets.max() >= out.shape[1]:
            raise InputError(f"target {int(targets.max())} is out of range: the model has {out.shape[1]} classes")
        one_hot = torch.zeros_like(out).scatter_(1, targets[:, None], 1.0)
        (grad,) = torch.autograd.grad(out, x, grad_outputs=one_hot)
    return grad


class Explainer:
    """Attributions of one model by one method; the composite is registered once.

    Use it as a context manager (or call :meth:`close`) to remove the rule hooks from
    the model again. The model is neither copied nor modified otherwise.

    Parameters
    ----------
    model : nn.Module
        A canonized model (``canonc.canonize(...).module``) in eval mode.
    method : str
        A key of :data:`canonc.xai.methods.METHODS`.
    strict : bool
        Refuse models in which a module would silently get a wrong rule (a BatchNorm,
        an activation or sum without a rule, an unknown module type). Pass ``False``
        to explain an uncanonized model as is (e.g. for a comparison).
    **params
        Method parameters, e.g. ``epsilon=1e-6``, ``gamma={"conv1-3": 0.25}``, ``groups="auto:4"``.
    """

    def __init__(self, model: nn.Module, method: str = "lrp-epsilon-plus", *, strict: bool = True,
                 **params: object) -> None:
        if any(m.training for m in model.modules()):
            raise InputError("the model is in train mode; call model.eval() before explaining it")
        self.model = model
        self.method = get_method(method)
        self.params = self.method.resolve(params)
        self.composite = self.method.composite(model, self.params)
        if self.composite is not None:
            problems = uncovered(model, self.composite) if strict else []
            if problems:
                raise InputError(f"{len(problems)} module(s) would get a wrong rule, first: {problems[0]}; "
                                 "explain canonc.canonize(model, x).module, or pass strict=False")
            self.composite.register(model)

    def __call__(self, inputs: torch.Tensor, targets: int | Sequence[int] | torch.Tensor, *,
                 keep_channels: bool = False) -> torch.Tensor:
        """Relevance of ``inputs`` for the ``targets`` logits.

        Parameters
        ----------
        inputs : Tensor
            ``(N, C, ...)`` batch; moved to the model's device and dtype.
        targets : int, sequence of int or Tensor
            One class index, or one per sample.
        keep_channels : bool
            Return the full input shape instead of the channel sum.

        Returns
        -------
        Tensor
            ``(N, H, W)`` (channel-summed) or ``inputs.shape``, on the model's device.
        """
        device, dtype = model_device_dtype(self.model)
        x = inputs.detach().to(device=device, dtype=dtype)
        if x.dim() < 2:
            raise InputError(f"inputs have shape {tuple(x.shape)}; pass a batch (N, C, ...)")
        t = as_targets(targets, x.shape[0], device)
        relevance = self.method.attribute(lambda z: target_gradient(self.model, z, t), x, self.params)
        return relevance if keep_channels else relevance.sum(1)

    def close(self) -> None:
        """Remove the rule hooks from the model."""
        if self.composite is not None:
            self.composite.remove()

    def __enter__(self) -> Explainer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def explain(model: nn.Module, inputs: torch.Tensor, targets: int | Sequence[int] | torch.Tensor,
            method: str = "lrp-epsilon-plus", *, keep_channels: bool = False, strict: bool = True,
            **params: object) -> torch.Tensor:
    """Relevance of ``inputs`` for ``targets`` under ``method`` (one-shot :class:`Explainer`).

    Returns ``(N, H, W)`` channel-summed relevance, or the full input shape with
    ``keep_channels=True``. See :class:`Explainer` for the parameters.
    """
    with Explainer(model, method, strict=strict, **params) as explainer:
        return explainer(inputs, targets, keep_channels=keep_channels)
