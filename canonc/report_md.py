"""The Markdown report: summary, tables and the per-layer error profile, no drawings
(for CI logs and pull requests)."""

from __future__ import annotations

from .report import Report
from .report_html import fmt_count, fmt_err, fmt_value, status_of


def _cell(value: object) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def table(head: list[str], rows: list[list[object]]) -> str:
    """A GitHub-flavoured Markdown table."""
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def to_markdown(report: Report) -> str:
    """The report as Markdown text."""
    _, status = status_of(report)
    d = report.to_dict()
    out = [f"# canonc report: {report.model} — {status}", ""]
    out.append(f"input {report.input_shape} · strategy {report.strategy}")
    if report.failure:
        out += ["", f"**Failure:** {report.failure}"]
    if report.first_divergence:
        out += ["", f"**First diverging tensor:** {report.first_divergence}"]
    out += [f"\n> warning: {w}" for w in report.warnings]
    rows: list[list[object]] = [
        ["fp64 max abs error", fmt_err(report.max_abs_error_fp64)],
        ["fp64 max rel error", fmt_err(report.max_rel_error_fp64)],
        ["fp64 tolerance", fmt_err(report.tolerance_fp64)],
        ["fp32 artifact error", fmt_err(report.max_abs_error_fp32)],
        ["original's own fp32 error", fmt_err(report.reference_fp32_error)],
    ]
    rows += [[f"ONNX Runtime {k.removeprefix('onnx_').replace('_', ' ')}", fmt_value(v)]
             for k, v in d.items() if k.startswith("onnx_") and v not in (None, "", {}, []) and d.get("onnx_path")]
    rows += [
        ["parameters", f"{fmt_count(report.params_before)} → {fmt_count(report.params_after)}"],
        ["FLOPs", f"{fmt_count(report.flops_before)} → {fmt_count(report.flops_after)}"],
        ["BatchNorm layers", f"{report.bn_before} → {report.bn_after}"],
    ]
    rows += [[f"time: {k}", f"{v:.2f} s"] for k, v in report.timings_s.items()]
    out += ["", "## Summary", "", table(["", "value"], rows)]

    prof = report.error_profile
    out += ["", f"## Per-layer error ({len(prof)} matched tensors, output last)", ""]
    if prof:
        out.append(table(
            ["#", "canonical node", "original node", "op", "shape", "fp64 error", "tolerance", "fp32 error", ""],
            [[i + 1, p["node"], p["original"], p["kind"], "×".join(map(str, p["shape"])), fmt_err(p["err_fp64"]),
              fmt_err(p["tolerance"]), fmt_err(p["err_fp32"]), "**DIVERGES**" if p["diverges"] else "ok"]
             for i, p in enumerate(prof)]))
    else:
        out.append("not computed (run with profile=True)")

    new = report.matched_nodes
    out += ["", f"## Rewrite log ({len(report.rewrites)})", ""]
    out.append(table(["#", "rule", "original node", "new node", "detail"],
                     [[i + 1, e["rule"], e["node"], new.get(e["node"], "(removed)"), e.get("detail", "")]
                      for i, e in enumerate(report.rewrites)]))
    out += ["", f"## Refusals ({len(report.skipped)})", ""]
    out.append(table(["rule", "node", "reason"], [[e["rule"], e["node"], e["reason"]] for e in report.skipped])
               if report.skipped else "none")
    out += ["", f"## Canonicality lint ({len(report.lint)})", ""]
    out.append(table(["kind", "node", "reason"], [[e["kind"], e["node"], e["reason"]] for e in report.lint])
               if report.lint else "canonical: nothing left")
    return "\n".join(out) + "\n"
