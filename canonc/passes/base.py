"""The pass interface: a context that logs every rewrite and every refusal."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class LogEntry:
    """One rewrite (``reason`` empty) or one refusal (``reason`` says why)."""

    rule: str
    node: str
    detail: str = ""
    reason: str = ""

    def to_dict(self) -> dict[str, str]:
        if self.reason:
            return {"rule": self.rule, "node": self.node, "reason": self.reason}
        return {"rule": self.rule, "node": self.node, "detail": self.detail}


@dataclass
class PassContext:
    """State shared by the passes of one canonization.

    Parameters
    ----------
    options : dict
        User options (``strategy``, ...).
    budget : int or None
        When set, at most this many rewrites are applied (used to bisect a rewrite
        that breaks equivalence); refusals are not counted.
    state : dict
        Scratch values a pass keeps across rounds (e.g. the parameter count it started from).
    """

    options: dict[str, Any] = field(default_factory=dict)
    budget: int | None = None
    rewrites: list[LogEntry] = field(default_factory=list)
    skipped: list[LogEntry] = field(default_factory=list)
    current_pass: str = ""
    rewrite_pass: list[str] = field(default_factory=list)
    state: dict[str, Any] = field(default_factory=dict)

    def apply(self, rule: str, node: str, detail: str = "") -> bool:
        """Ask to apply a rewrite; logs it and returns True unless the budget is spent."""
        if self.budget is not None and len(self.rewrites) >= self.budget:
            return False
        self.rewrites.append(LogEntry(rule, node, detail=detail))
        self.rewrite_pass.append(self.current_pass)
        return True

    def skip(self, rule: str, node: str, reason: str) -> None:
        """Log that ``rule`` was not applied at ``node`` and why (once per rule and node)."""
        if not any(e.rule == rule and e.node == node for e in self.skipped):
            self.skipped.append(LogEntry(rule, node, reason=reason))

    def reason_for(self, node: str) -> str:
        """The refusal reasons logged for ``node`` (joined), or ``''``."""
        return "; ".join(f"{e.rule}: {e.reason}" for e in self.skipped if e.node == node)
