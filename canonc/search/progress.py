"""A rich progress bar over the study's budget that shows the current Pareto front size."""

from __future__ import annotations

import numpy as np
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from .pareto import normalised_losses, pareto_mask
from .study import SearchStudy


def front_size(search: SearchStudy) -> int:
    """Number of completed trials on the Pareto front of ``search``."""
    trials = search.completed()
    if not trials:
        return 0
    values = np.array([t.values for t in trials], dtype=float)
    return int(pareto_mask(normalised_losses(values, [o.higher_is_better for o in search.objectives])).sum())


class SearchProgress:
    """Completed trials of the whole study (every worker's) out of the budget, and the front size.

    Parameters
    ----------
    enabled : bool
        Draw the bar (on stderr); when False every call does nothing.
    """

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self.bar = Progress(TextColumn("search"), BarColumn(), MofNCompleteColumn(), TextColumn("front {task.fields[front]}"),
                            TimeElapsedColumn(), disable=not enabled)
        self.task = self.bar.add_task("search", total=None, front=0)

    def __enter__(self) -> SearchProgress:
        self.bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.bar.stop()

    def update(self, search: SearchStudy, n_slots: int) -> None:
        """Show the study's state (the ``on_trial`` callback of :func:`canonc.search.study.run_trials`)."""
        if not self.enabled:
            return
        done = len(search.completed())
        self.bar.update(self.task, total=n_slots, completed=min(done, n_slots), front=front_size(search))
