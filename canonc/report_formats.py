"""Which report format a path asks for: ``.json`` (machines), ``.md`` (CI logs, pull requests), ``.html`` (people)."""

from __future__ import annotations

from pathlib import Path

from .errors import InputError
from .report import Report
from .report_html import to_html
from .report_md import to_markdown

RENDERERS = {".json": Report.to_json, ".md": to_markdown, ".html": to_html}


def check_report_path(path: str | Path) -> None:
    """Refuse a report path whose suffix names no known format."""
    if Path(path).suffix not in RENDERERS:
        raise InputError(f"--report {path}: unknown report format; use a .json, .md or .html path")


def wants_profile(path: str | Path | None) -> bool:
    """True when the report at ``path`` shows the per-layer error profile (Markdown, HTML)."""
    return path is not None and Path(path).suffix in (".md", ".html")


def render(report: Report, path: str | Path) -> str:
    """The text of ``report`` in the format ``path``'s suffix names."""
    check_report_path(path)
    return RENDERERS[Path(path).suffix](report)
