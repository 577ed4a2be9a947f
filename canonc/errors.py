"""Errors raised by canonc, each with a one-line message that says what to do.

The CLI maps them to exit codes: ``InputError`` → 2 (bad input or usage),
``RefusedError`` / ``VerificationError`` → 3 (refused or verification failed).
"""

from __future__ import annotations


class CanoncError(Exception):
    """Base class of every error canonc raises on purpose."""

    exit_code = 2


class InputError(CanoncError):
    """The input (file, model source, shape, option) is unusable as given."""

    exit_code = 2


class RefusedError(CanoncError):
    """The model is valid but canonc refuses to canonize it (with the reason)."""

    exit_code = 3


class VerificationError(RefusedError):
    """The canonized model failed the equivalence gate; nothing was written.

    Parameters
    ----------
    message : str
        One-line explanation naming the pass and node that broke equivalence.
    report : object, optional
        The report of the failed run, so callers can still write it.
    """

    exit_code = 3

    def __init__(self, message: str, report: object | None = None) -> None:
        super().__init__(message)
        self.report = report
