"""Shared pieces of the metrics: input checks, map preparation, seeds, chunked forwards and sorting.

Every metric works on channel-summed maps ``(N, H, W)`` in float64 on the model's device and
returns float64 scores on the CPU. Randomness is drawn on the CPU from a generator per sample,
seeded by ``(seed, metric stream, sample index)``: sample ``i`` gets the same draws whatever the
batch size and the device.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterator
from types import ModuleType
from typing import TypeVar

import numpy as np
import torch
from torch import nn

from ...errors import InputError

T = TypeVar("T")

ExplainFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""``(inputs (M, C, H, W), targets (M,)) -> relevance (M, H, W)``, e.g. a :class:`canonc.xai.Explainer`."""


def pick(value: T | None, default: T, compat_default: T, quantus_compat: bool) -> T:
    """``value`` if given, else the default of the mode (canonc's own or quantus 0.6.0's)."""
    if value is not None:
        return value
    return compat_default if quantus_compat else default


def check_batch(inputs: torch.Tensor, targets: torch.Tensor) -> None:
    """Refuse inputs that are not ``(N, C, H, W)`` or targets that are not one per input."""
    if inputs.dim() != 4:
        raise InputError(f"inputs have shape {tuple(inputs.shape)}; the metrics need images (N, C, H, W)")
    if targets.shape != (inputs.shape[0],):
        raise InputError(f"targets have shape {tuple(targets.shape)}; pass one class index per input "
                         f"({inputs.shape[0]},)")


def check_maps(relevance: torch.Tensor, inputs: torch.Tensor | None = None) -> None:
    """Refuse relevance that is not ``(N, H, W)`` (matching the inputs' batch and size when given)."""
    if relevance.dim() != 3:
        raise InputError(f"relevance has shape {tuple(relevance.shape)}; pass channel-summed maps (N, H, W)")
    if inputs is not None and (relevance.shape[0] != inputs.shape[0] or relevance.shape[1:] != inputs.shape[2:]):
        raise InputError(f"relevance {tuple(relevance.shape)} does not match inputs {tuple(inputs.shape)}; "
                         "pass one (H, W) map per input")


def as_masks(masks: torch.Tensor | None, relevance: torch.Tensor) -> torch.Tensor:
    """Ground-truth masks as ``(N, H, W)`` bool on the relevance's device; ``(N, 1, H, W)`` is accepted."""
    if masks is None:
        raise InputError("localisation metrics need ground-truth masks; pass masks (N, 1, H, W) or (N, H, W)")
    if masks.dim() == 4 and masks.shape[1] == 1:
        masks = masks[:, 0]
    if masks.shape != relevance.shape:
        raise InputError(f"masks have shape {tuple(masks.shape)}; the maps are {tuple(relevance.shape)}")
    return masks.to(device=relevance.device).bool()


def normalise_by_max(maps: torch.Tensor, *, whole_array: bool) -> torch.Tensor:
    """Divide by the largest ``|value|``: per sample, or over the whole array as quantus 0.6.0 does.

    Maps that are all zero stay zero (quantus returns an all-zero array unchanged).
    """
    if whole_array:
        peak = maps.abs().amax()
        return maps if peak == 0 else maps / peak
    peak = maps.abs().flatten(1).amax(1).reshape(-1, *([1] * (maps.dim() - 1)))
    return maps / torch.where(peak == 0, torch.ones_like(peak), peak)


def prepare(relevance: torch.Tensor, *, normalise: bool, absolute: bool, quantus_compat: bool) -> torch.Tensor:
    """float64 maps, normalised (per sample; whole array in compat mode) and then made absolute."""
    maps = relevance.detach().double()
    if normalise:
        maps = normalise_by_max(maps, whole_array=quantus_compat)
    return maps.abs() if absolute else maps


def chunks(n: int, size: int) -> Iterator[slice]:
    """Consecutive slices of at most ``size`` covering ``range(n)``."""
    if size < 1:
        raise InputError(f"batch_size must be at least 1, got {size}")
    for start in range(0, n, size):
        yield slice(start, min(start + size, n))


def explain_in_chunks(explain_fn: ExplainFn, inputs: torch.Tensor, targets: torch.Tensor,
                      batch_size: int) -> torch.Tensor:
    """``explain_fn`` over ``inputs`` in chunks of ``batch_size`` samples, concatenated: ``(N, H, W)``."""
    return torch.cat([explain_fn(inputs[part], targets[part]).detach() for part in chunks(len(inputs), batch_size)])


def stream_of(name: str) -> int:
    """A stable integer per metric name, so metrics draw independent random numbers from one seed."""
    return zlib.crc32(name.encode())


def sample_generator(seed: int, stream: int, index: int) -> torch.Generator:
    """CPU generator of sample ``index`` in the random stream ``stream`` of ``seed``."""
    state = np.random.SeedSequence([seed, stream, index]).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 31 | int(state[1]) >> 1)


def numpy_rng(noise_source: np.random.RandomState | None) -> np.random.RandomState | ModuleType:
    """The random source of compat mode: ``noise_source``, else numpy's global state (``np.random``) as quantus."""
    return np.random if noise_source is None else noise_source


def check_noise_source(noise_source: np.random.RandomState | None, quantus_compat: bool) -> None:
    """Refuse a numpy ``noise_source`` outside compat mode (canonc's own draws come from ``seed``)."""
    if noise_source is not None and not quantus_compat:
        raise InputError("noise_source is used only with quantus_compat=True; set seed instead")


def target_scores(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, *, softmax: bool) -> torch.Tensor:
    """float64 ``(M,)`` target logits of ``model(inputs)``, or softmax probabilities."""
    with torch.no_grad():
        return scores_of_output(model(inputs), targets, softmax=softmax)


def scores_of_output(out: torch.Tensor, targets: torch.Tensor, *, softmax: bool) -> torch.Tensor:
    """float64 ``(M,)`` target entries of the logits ``out``, or of their softmax probabilities."""
    if softmax:
        out = out.softmax(1)
    return out.gather(1, targets[:, None])[:, 0].double()


def forward_layout(model: nn.Module, example: torch.Tensor) -> torch.memory_format:
    """The memory format the metrics' plain forward passes feed ``model`` images in.

    ``channels_last`` for images on the CPU, where oneDNN's convolutions run faster on it
    (the trained DenseNet-121 topology at 64 px: 1.35× on two threads, 1.5× on one), if a
    one-sample pass in that layout runs and gives the same output as the contiguous one
    (within ``1e-5`` of its largest value; a model that flattens a conv's output with ``view``
    raises instead). Else, and on other devices (unmeasured there), ``contiguous_format``.
    Explanations keep the caller's layout: LRP's divisions amplify the rounding differences.
    """
    if example.dim() != 4 or example.device.type != "cpu":
        return torch.contiguous_format
    one = example[:1].contiguous()
    with torch.no_grad():
        reference = model(one)
        try:
            candidate = model(one.contiguous(memory_format=torch.channels_last))
        except RuntimeError:
            return torch.contiguous_format
    if not (isinstance(reference, torch.Tensor) and isinstance(candidate, torch.Tensor)
            and candidate.shape == reference.shape):
        return torch.contiguous_format
    tolerance = 1e-5 * float(reference.abs().max().clamp(min=1.0))
    same = float((candidate - reference).abs().max()) <= tolerance
    return torch.channels_last if same else torch.contiguous_format


def scores_of_variants(model: nn.Module, n_rows: int,
                       build: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]],
                       *, batch_size: int, softmax: bool, device: torch.device) -> torch.Tensor:
    """Target scores of ``n_rows`` perturbed inputs, ``batch_size`` of them per forward pass.

    ``build(rows)`` returns the inputs and targets of the row indices ``rows``; a row is
    typically one (sample, perturbation step) pair, so several steps share a forward pass.
    The passes take images in :func:`forward_layout`.
    """
    out = torch.empty(n_rows, dtype=torch.float64, device=device)
    layout = None
    for part in chunks(n_rows, batch_size):
        rows = torch.arange(part.start, part.stop, device=device)
        x, t = build(rows)
        layout = forward_layout(model, x) if layout is None else layout
        out[part] = target_scores(model, x.contiguous(memory_format=layout), t, softmax=softmax)
    return out


def descending_order(values: torch.Tensor, *, quantus_compat: bool) -> torch.Tensor:
    """Indices sorting each row of ``values`` from largest to smallest.

    Ties keep index order (stable sort); compat mode uses numpy's default ``argsort`` of
    ``-values`` on the CPU instead, which breaks ties as quantus 0.6.0 does.
    """
    if quantus_compat:
        order = np.argsort(-values.cpu().numpy(), axis=-1)
        return torch.from_numpy(order).to(values.device)
    return values.sort(dim=-1, descending=True, stable=True).indices


def trapezoid(curve: torch.Tensor) -> torch.Tensor:
    """Trapezoidal area under each row with unit spacing (``np.trapz(curve, dx=1)``, gone in numpy 2.4)."""
    return curve.sum(1) - (curve[:, 0] + curve[:, -1]) / 2


def to_cpu(scores: torch.Tensor) -> torch.Tensor:
    """Scores as float64 on the CPU (the metrics' return convention)."""
    return scores.detach().to(device="cpu", dtype=torch.float64)
