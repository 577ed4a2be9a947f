"""The report of one canonization: a JSON-ready record and a human summary."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class Report:
    """Everything canonc did and measured for one model (keys of the JSON report)."""

    model: str
    input_shape: list[list[int]]
    strategy: str
    verified: bool = False
    max_abs_error_fp64: float | None = None
    max_rel_error_fp64: float | None = None
    max_abs_error_fp32: float | None = None
    reference_fp32_error: float | None = None
    tolerance_fp64: float | None = None
    bn_before: int = 0
    bn_after: int = 0
    params_before: int = 0
    params_after: int = 0
    param_growth: float | None = None
    # per BN node of the traced model: what was done to it (rule: detail), or "kept: <reasons>"
    bn_actions: dict[str, str] = field(default_factory=dict)
    rewrites: list[dict[str, str]] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)
    lint: list[dict[str, str]] = field(default_factory=list)
    # ONNX export (``--onnx`` / ``-o X.onnx``), checked in ONNX Runtime against the fp32 module (and the input ONNX)
    onnx_path: str | None = None
    onnx_opset: int | None = None
    onnx_exporter: str | None = None
    onnx_provider: str | None = None
    onnx_max_abs_error: float | None = None
    onnx_reference_error: float | None = None
    onnx_tolerance: float | None = None
    onnx_output_max: float | None = None
    onnx_op_counts: dict[str, int] = field(default_factory=dict)
    onnx_verified: bool = False
    onnx_external_data: bool = False  # weights in an external ``.onnx.data`` file beside the model (over 1 GiB)
    timings_s: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    check_inputs: list[list[list[int]]] = field(default_factory=list)
    failure: str = ""
    # Filled only for the human-readable reports (canonize(..., profile=True), or a failed gate):
    flops_before: int | None = None
    flops_after: int | None = None
    error_profile: list[dict[str, Any]] = field(default_factory=list)
    first_divergence: str = ""
    matched_nodes: dict[str, str] = field(default_factory=dict)
    graph_before: dict[str, Any] = field(default_factory=dict)
    graph_after: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The JSON report as a plain dict."""
        return asdict(self)

    def to_json(self) -> str:
        """The JSON report as text."""
        return json.dumps(self.to_dict(), indent=2)

    def rule_counts(self) -> dict[str, int]:
        """Number of rewrites per rule."""
        counts: dict[str, int] = {}
        for r in self.rewrites:
            counts[r["rule"]] = counts.get(r["rule"], 0) + 1
        return counts

    def summary(self) -> str:
        """A short human-readable summary (a few lines)."""
        status = "VERIFIED" if self.verified else ("FAILED: " + self.failure if self.failure else "not verified")
        lines = [
            f"canonc: {self.model}  input {self.input_shape}  strategy={self.strategy}",
            f"  status        {status}",
        ]
        if self.max_abs_error_fp64 is not None:
            lines.append(
                f"  fp64 error    max abs {self.max_abs_error_fp64:.3g}  max rel {self.max_rel_error_fp64:.3g}"
                f"  (tolerance {self.tolerance_fp64:.3g})"
            )
        if self.max_abs_error_fp32 is not None:
            lines.append(
                f"  fp32 artifact max abs {self.max_abs_error_fp32:.3g} vs fp64 original"
                f"  (original's own fp32 error {self.reference_fp32_error:.3g})"
            )
        if self.first_divergence:
            lines.append(f"  diverges at   {self.first_divergence}")
        lines.append(f"  BatchNorm     {self.bn_before} → {self.bn_after}")
        growth = f"  (×{self.param_growth:.2f})" if self.param_growth is not None else ""
        lines.append(f"  parameters    {self.params_before:,} → {self.params_after:,}{growth}")
        if self.flops_before and self.flops_after is not None:
            lines.append(f"  FLOPs         {self.flops_before:,} → {self.flops_after:,}"
                         f"  (×{self.flops_after / self.flops_before:.2f})")
        rules = ", ".join(f"{k} ×{v}" for k, v in sorted(self.rule_counts().items())) or "none"
        lines.append(f"  rewrites      {rules}")
        if self.lint:
            kinds: dict[str, int] = {}
            for item in self.lint:
                kinds[item["kind"]] = kinds.get(item["kind"], 0) + 1
            lines.append("  not canonical " + ", ".join(f"{k} ×{v}" for k, v in sorted(kinds.items())))
            for item in self.lint[:8]:
                lines.append(f"    - {item['node']}: {item['reason']}")
            if len(self.lint) > 8:
                lines.append(f"    ... {len(self.lint) - 8} more in the JSON report")
        else:
            lines.append("  lint          canonical (nothing left)")
        if self.onnx_path:
            vs_input = f", vs input ONNX {self.onnx_reference_error:.3g}" if self.onnx_reference_error is not None else ""
            external = ", weights in external .onnx.data" if self.onnx_external_data else ""
            lines.append(f"  onnx          opset {self.onnx_opset} ({self.onnx_exporter}), {self.onnx_provider}: max abs "
                         f"{self.onnx_max_abs_error:.3g} vs torch{vs_input} (tolerance {self.onnx_tolerance:.3g})"
                         f"{external}")
        for w in self.warnings:
            lines.append(f"  warning       {w}")
        total = sum(self.timings_s.values())
        stages = ", ".join(f"{k} {v:.2f}s" for k, v in self.timings_s.items())
        lines.append(f"  time          {total:.2f}s ({stages})")
        return "\n".join(lines)
