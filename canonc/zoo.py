"""Coverage of model collections: build each model with random weights and canonize it.

A fresh model's norms are the identity and hide every bug, so each model gets calibrated,
randomized BatchNorm statistics and random LayerNorm / GroupNorm / RMSNorm affines before
it is canonized (DESIGN.md §5). One row per model: status and reason, never a traceback.
"""

from __future__ import annotations

import fnmatch
import time
import warnings

import torch
from torch import nn

from .core import canonize
from .errors import CanoncError, VerificationError

SMALL = 64
# One small model per family of the timm acceptance list (issue 5).
TIMM_FAMILIES: dict[str, str] = {
    "resnet": "resnet18",
    "resnetv2": "resnetv2_50",
    "resnest": "resnest14d",
    "res2net": "res2net50_14w_8s",
    "seresnext": "seresnext26d_32x4d",
    "ecaresnet": "ecaresnet26t",
    "densenet": "densenet121",
    "dla": "dla34",
    "dpn": "dpn48b",
    "cspnet": "cs3darknet_s",
    "hrnet": "hrnet_w18_small",
    "regnet": "regnetx_002",
    "rexnet": "rexnet_100",
    "ghostnet": "ghostnet_050",
    "mixnet": "mixnet_s",
    "tf_mixnet": "tf_mixnet_s",
    "efficientnet": "efficientnet_b0",
    "tf_efficientnet": "tf_efficientnet_b0",
    "mobilenetv3": "mobilenetv3_small_050",
    "mnasnet": "mnasnet_small",
    "lcnet": "lcnet_035",
    "repvgg": "repvgg_a0",
    "mobileone": "mobileone_s0",
    "tresnet": "tresnet_m",
    "selecsls": "selecsls42b",
    "vovnet": "ese_vovnet19b_dw",
    "nfnet": "nf_regnet_b0",
    "convnext": "convnext_atto",
    "convmixer": "convmixer_768_32",
    "levit": "levit_128s",
    "vit": "vit_tiny_patch16_224",
    "deit": "deit_tiny_patch16_224",
    "swin": "swin_tiny_patch4_window7_224",
    "efficientformer": "efficientformer_l1",
    "mobilevit": "mobilevit_xxs",
    "efficientvit": "efficientvit_m0",
}

_BN = nn.modules.batchnorm._BatchNorm


def _norm_layers(model: nn.Module) -> list[nn.Module]:
    """LayerNorm-like modules (LayerNorm, GroupNorm, RMSNorm and subclasses; no BatchNorm)."""
    return [m for m in model.modules() if not isinstance(m, _BN) and "Norm" in type(m).__name__]


def count_layernorm(model: nn.Module) -> tuple[int, int]:
    """``(norms, norms with an affine part)`` over the LayerNorm-like modules of ``model``."""
    norms = _norm_layers(model)
    affine = [m for m in norms if any(getattr(m, a, None) is not None for a in ("weight", "bias"))]
    return len(norms), len(affine)


def randomize_zero_weights(model: nn.Module, gen: torch.Generator) -> None:
    """Draw ``N(0, 1/fan_in)`` for every all-zero parameter of two or more dimensions, in place.

    torchvision's ViTs start with a zero head (and class token): at random weights their output
    is exactly 0 whatever the trunk computes, so an equivalence check on them could not fail.
    """
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() >= 2 and p.is_floating_point() and not p.any():
                p.copy_(torch.randn(p.shape, generator=gen) * p[0].numel() ** -0.5)


def randomize(model: nn.Module, input_shape: tuple[int, ...], seed: int = 0) -> nn.Module:
    """Random norm parameters and calibrated BN statistics, in place; returns ``model`` in eval mode.

    Zero-initialised weight matrices (torchvision's ViT head) get ``N(0, 1/fan_in)``; norm
    affines (BN included): ``weight ~ ±U(0.2, 2)`` (BN: about 5 % exact zeros),
    ``bias ~ N(0, 0.5)``. Then BN statistics are calibrated: reset, ``momentum=None``, two
    train-mode forwards on random inputs of ``input_shape``.
    """
    gen = torch.Generator().manual_seed(seed)
    bns = [m for m in model.modules() if isinstance(m, _BN) and m.track_running_stats]
    randomize_zero_weights(model, gen)
    with torch.no_grad():
        for m in [m for m in model.modules() if isinstance(m, _BN)] + _norm_layers(model):
            weight, bias = getattr(m, "weight", None), getattr(m, "bias", None)
            if isinstance(weight, torch.Tensor) and weight.is_floating_point():
                n = weight.numel()
                w = torch.empty(n).uniform_(0.2, 2.0, generator=gen)
                w *= torch.where(torch.rand(n, generator=gen) < 0.5, -1.0, 1.0)
                if isinstance(m, _BN):
                    w[torch.rand(n, generator=gen) < 0.05] = 0.0
                weight.copy_(w.view_as(weight))
            if isinstance(bias, torch.Tensor) and bias.is_floating_point():
                bias.copy_((torch.randn(bias.numel(), generator=gen) * 0.5).view_as(bias))
    calibrate_bn(model, bns, input_shape, gen)
    return model.eval()


def calibrate_bn(model: nn.Module, bns: list[nn.Module], input_shape: tuple[int, ...],
                 gen: torch.Generator) -> None:
    """Reset ``bns``' running statistics and re-estimate them (``momentum=None``) on two random batches.

    The second batch is 32 px larger per spatial side where the model takes it (the gate also
    checks such a size): statistics from one size only leave deep nets uncalibrated at another
    (efficientnet_b7 calibrated at 64 px gave outputs of 4e4 at 96 px and verified at 1.4e-9;
    calibrated at both, 6.5e-13). A model fixed to one size is calibrated twice at it.
    """
    if not bns:
        return
    grown = (*input_shape[:2], *(d + 32 for d in input_shape[2:]))
    model.train()
    try:
        _estimate(model, bns, (input_shape, grown), gen)
    except Exception:  # noqa: BLE001 - the model rejects the larger size: calibrate at its own (errors propagate)
        _estimate(model, bns, (input_shape, input_shape), gen)


def _estimate(model: nn.Module, bns: list[nn.Module], shapes: tuple[tuple[int, ...], ...],
              gen: torch.Generator) -> None:
    """Reset ``bns``' statistics and average them over one random batch per shape (``model`` in train mode)."""
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
    with torch.no_grad():
        for shape in shapes:
            model(torch.randn(shape, generator=gen))


def timm_names(pattern: str = "*") -> list[str]:
    """timm model names matching one of the comma-separated shell patterns in ``pattern``."""
    import timm

    pats = [p.strip() for p in pattern.split(",") if p.strip()]
    return [n for n in timm.list_models() if any(fnmatch.fnmatchcase(n, p) for p in pats)]


def torchvision_names(pattern: str = "*") -> list[str]:
    """torchvision classifier names matching one of the comma-separated shell patterns."""
    import torchvision

    pats = [p.strip() for p in pattern.split(",") if p.strip()]
    return [n for n in torchvision.models.list_models(module=torchvision.models)
            if any(fnmatch.fnmatchcase(n, p) for p in pats)]


def _runs_at(model: nn.Module, side: int) -> bool:
    try:
        with torch.no_grad():
            model.eval()(torch.randn(1, 3, side, side))
        return True
    except Exception:  # noqa: BLE001 - the architecture does not take this size
        return False


def _create_timm(name: str, side: int) -> tuple[nn.Module, int]:
    """timm ``name`` built for ``side`` px when its constructor takes ``img_size``, else at its own size."""
    import timm

    try:
        model = timm.create_model(name, pretrained=False, img_size=side)
        if _runs_at(model, side):
            return model, side
    except Exception:  # noqa: BLE001 - no img_size argument, or not this value: use the default size
        pass
    model = timm.create_model(name, pretrained=False)
    if _runs_at(model, side):
        return model, side
    return model, int(model.pretrained_cfg.get("input_size", (3, 224, 224))[-1])


def _create_torchvision(name: str, side: int) -> tuple[nn.Module, int]:
    """torchvision ``name`` at ``side`` px (ViTs built for it), or at 224 px when it needs that."""
    import torchvision

    kwargs = {"image_size": side} if name.startswith("vit_") else {}
    if name.startswith("vit_h_14"):
        kwargs = {"image_size": max(side, 56) // 14 * 14}
    model = torchvision.models.get_model(name, weights=None, **kwargs)
    if _runs_at(model, side):
        return model, kwargs.get("image_size", side)
    return model, 299 if name == "inception_v3" else 224


def build(source: str, name: str, side: int = SMALL, seed: int = 0) -> tuple[nn.Module, torch.Tensor]:
    """Random-weight model ``name`` from ``source`` (``timm`` / ``torchvision``), randomized, and an input.

    Parameters
    ----------
    source : {"timm", "torchvision"}
        Where the model comes from.
    name : str
        The model's name there.
    side : int
        Preferred input side; models that fix their input size get theirs.
    seed : int
        Seed of the weights, the norm parameters and the example input.

    Returns
    -------
    model, example
        The model in eval mode and a ``(1, 3, H, W)`` float32 input.
    """
    torch.manual_seed(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model, side = (_create_timm if source == "timm" else _create_torchvision)(name, side)
    randomize(model, (2, 3, side, side), seed)
    return model, torch.randn((1, 3, side, side), generator=torch.Generator().manual_seed(seed))


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}"


def survey(source: str, name: str, side: int = SMALL, options: dict | None = None) -> dict:
    """Build and canonize one model; its table row (status ``verified``/``refused``/``failed``/``error``).

    ``error`` means the model could not be built or canonc raised an unexpected exception;
    the row carries the reason either way.
    """
    row: dict = {"model": name, "status": "error", "reason": ""}
    start = time.perf_counter()
    try:
        model, example = build(source, name, side)
    except Exception as exc:  # noqa: BLE001 - a model the library cannot build is a row, not a crash
        return {**row, "reason": f"cannot build: {_first_line(exc)}"}
    row["input"] = list(example.shape)
    row["params"] = sum(p.numel() for p in model.parameters())
    row["ln_before"], row["ln_affine_before"] = count_layernorm(model)
    try:
        result = canonize(model, example, name=f"{source}:{name}", options=options)
        report, row["status"] = result.report.to_dict(), "verified"
        row["ln_after"], row["ln_affine_after"] = count_layernorm(result.module)
    except VerificationError as exc:
        report, row["status"], row["reason"] = exc.report.to_dict(), "failed", str(exc)
    except CanoncError as exc:
        report, row["status"], row["reason"] = None, "refused", str(exc)
    except Exception as exc:  # noqa: BLE001 - an unexpected failure is reported with its reason
        report, row["reason"] = None, f"internal error: {_first_line(exc)}"
    row["time_s"] = round(time.perf_counter() - start, 2)
    if report is not None:
        row.update(bn_before=report["bn_before"], bn_after=report["bn_after"],
                   max_rel_error_fp64=report["max_rel_error_fp64"], params_after=report["params_after"])
        lint = [i for i in report["lint"] if i["kind"] in ("batchnorm-left", "norm-affine")]
        if row["status"] == "verified" and lint:
            row["reason"] = f"{len(lint)} left: {lint[0]['kind']} {lint[0]['node']}: {lint[0]['reason']}"
    return row
