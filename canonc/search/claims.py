"""Exactly-once budget slots: every slot of the budget is completed by exactly one trial.

A budget of ``n`` trials is ``n`` slots (for the grid sampler slot ``k`` is one grid
point). A trial claims a free slot by inserting a row; the table's primary key
``(study, slot, attempt)`` makes the insert atomic across processes and machines, so
two workers never hold one slot. A slot is free when it has no claim or every
claiming trial failed (e.g. a killed worker's trial, failed by its stale heartbeat):
the next claim is the next attempt. Nothing is deleted while the study exists, so the
table is also the log of which trial ran which slot.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import sqlalchemy as sa
from optuna.trial import TrialState
from sqlalchemy import exc as sa_exc

from .db import CLAIMS

HOLDING = (TrialState.RUNNING, TrialState.COMPLETE, TrialState.WAITING)
"""Trial states that keep their slot (anything else frees it)."""


def state_of(states: Mapping[int, TrialState], trial: int) -> TrialState:
    """State of trial number ``trial``; one missing from ``states`` was created after they were read: running."""
    return states.get(trial, TrialState.RUNNING)


class SlotClaims:
    """The claims of one study.

    Parameters
    ----------
    engine : sqlalchemy.Engine
        The study's database (:func:`canonc.search.db.connect`).
    study : str
        Study name.
    """

    def __init__(self, engine: sa.Engine, study: str) -> None:
        self.engine = engine
        self.study = study

    def holders(self) -> dict[int, list[int]]:
        """``{slot: [trial numbers that claimed it, by attempt]}``."""
        query = (sa.select(CLAIMS.c.slot, CLAIMS.c.trial).where(CLAIMS.c.study == self.study)
                 .order_by(CLAIMS.c.slot, CLAIMS.c.attempt))
        out: dict[int, list[int]] = {}
        with self.engine.connect() as conn:
            for slot, trial in conn.execute(query):
                out.setdefault(int(slot), []).append(int(trial))
        return out

    def slot_states(self, n_slots: int, states: Mapping[int, TrialState],
                    holders: Mapping[int, list[int]] | None = None) -> dict[int, TrialState | None]:
        """State of each slot ``0..n_slots-1``: its holding trial's state, or None when free.

        ``holders`` is :meth:`holders` (read now when not given).
        """
        holders = self.holders() if holders is None else holders
        out: dict[int, TrialState | None] = {}
        for slot in range(n_slots):
            held = [state_of(states, t) for t in holders.get(slot, []) if state_of(states, t) in HOLDING]
            out[slot] = TrialState.COMPLETE if TrialState.COMPLETE in held else (held[0] if held else None)
        return out

    def claim(self, trial: int, slots: Iterable[int], states: Mapping[int, TrialState]) -> int | None:
        """Claim the first free slot of ``slots`` for trial number ``trial``; None when none is free.

        ``states`` maps trial numbers to their current state (``study.get_trials``).
        """
        holders = self.holders()
        for slot in slots:
            held = holders.get(slot, [])
            if any(state_of(states, t) in HOLDING for t in held):
                continue
            row = {"study": self.study, "slot": slot, "attempt": len(held), "trial": trial}
            try:
                with self.engine.begin() as conn:
                    conn.execute(sa.insert(CLAIMS).values(**row))
            except sa_exc.IntegrityError:  # another worker claimed this attempt a moment ago
                continue
            return slot
        return None

    def slot_of(self) -> dict[int, int]:
        """``{trial number: slot}`` of every claim."""
        return {t: slot for slot, trials in self.holders().items() for t in trials}

    def clear(self) -> None:
        """Delete every claim of the study (when the study itself is deleted)."""
        with self.engine.begin() as conn:
            conn.execute(sa.delete(CLAIMS).where(CLAIMS.c.study == self.study))
