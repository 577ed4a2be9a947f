"""The Optuna study of a search: storage, samplers, resume, workers and the trial loop.

Storage is any SQLAlchemy URL Optuna accepts (``sqlite:///study.db`` by default: an
embedded file, nothing to start; ``postgresql://...`` for workers on several
machines). What the study searches (space, objectives, sampler, model and data
fingerprint) is stored with it; a worker that joins or a run that resumes must ask
for the same, or it is refused.

Durability: every trial records an Optuna heartbeat; a trial whose heartbeat is older
than ``3 × heartbeat`` seconds belongs to a dead worker and is failed
(``optuna.storages.fail_stale_trials``), which frees its budget slot
(:mod:`canonc.search.claims`) for the next claim. Completed trials are committed when
they complete, so killing a worker loses at most the trial it was running.
"""

from __future__ import annotations

import json
import os
import random
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import optuna
from optuna.samplers import BaseSampler, NSGAIISampler, RandomSampler, TPESampler
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState
from sqlalchemy import exc as sa_exc

from ..errors import InputError
from .claims import SlotClaims
from .db import connect, database_url, engine_kwargs, redact, tune_sqlite
from .objectives import Objective
from .space import Config, SearchSpace

SAMPLERS = ("grid", "nsga2", "tpe", "random")
SETTINGS_ATTR = "canonc_search"
MAX_ATTEMPTS = 3
"""A budget slot whose trial failed this many times is given up (reported, not retried)."""
STORAGE_ATTEMPTS = 5
"""Tries to open Optuna's storage while other workers create its tables."""
MAX_REPEATS = 100
"""A sampler that proposes only measured configurations this many times in a row has nothing new to try."""
JOIN_WAIT_S = 60.0
"""How long a joining worker waits for the study's creator to store the study's settings."""

Evaluate = Callable[[Config], Mapping[str, float]]
"""``config -> {metric: mean value}``: one trial's measurement."""


class GridPointSampler(BaseSampler):
    """Samples the grid point of the budget slot a trial claimed (user attribute ``slot``) instead of drawing one.

    Parameters
    ----------
    points : list of dict
        Optuna parameters of the grid points in slot order (:meth:`SearchSpace.params`, :func:`grid_order`).
    """

    def __init__(self, points: list[dict[str, object]]) -> None:
        self.points = points

    def infer_relative_search_space(self, study, trial):  # noqa: D102 - BaseSampler API
        return {}

    def sample_relative(self, study, trial, search_space):  # noqa: D102 - BaseSampler API
        return {}

    def sample_independent(self, study, trial: FrozenTrial, param_name, param_distribution):  # noqa: D102
        return self.points[trial.user_attrs["slot"]][param_name]


def grid_order(n: int) -> list[int]:
    """The order in which grid points fill a budget: a fixed shuffle, so a partial grid is spread out."""
    order = list(range(n))
    random.Random(0).shuffle(order)
    return order


def make_sampler(name: str, space: SearchSpace, seed: int, budget: int) -> BaseSampler:
    """Optuna sampler ``name`` (``grid``, ``nsga2``, ``tpe``, ``random``).

    NSGA-II's population is a fifth of the budget (10 to 50), so a budget of ~100 trials
    runs five generations; TPE is multivariate with a constant liar for parallel workers.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        if name == "grid":
            grid = space.grid()
            return GridPointSampler([space.params(grid[i]) for i in grid_order(len(grid))])
        if name == "nsga2":
            return NSGAIISampler(population_size=max(10, min(50, budget // 5)), seed=seed)
        if name == "tpe":
            return TPESampler(seed=seed, multivariate=True, constant_liar=True, n_startup_trials=max(10, budget // 10))
        if name == "random":
            return RandomSampler(seed=seed)
    raise InputError(f"unknown sampler '{name}'; choose one of {', '.join(SAMPLERS)}")


@dataclass
class SearchStudy:
    """An open study and what it searches.

    Attributes
    ----------
    study : optuna.Study
        The Optuna study (directions = the objectives').
    space : SearchSpace
        Searched parameters.
    objectives : tuple of Objective
        Objectives, in the study's value order.
    sampler : str
        ``grid``, ``nsga2``, ``tpe`` or ``random``.
    claims : SlotClaims
        Budget slots of the study.
    heartbeat_s : int
        Heartbeat interval of this process's trials.
    settings : dict
        What was stored with the study (space, objectives, sampler, context).
    """

    study: optuna.Study
    space: SearchSpace
    objectives: tuple[Objective, ...]
    sampler: str
    claims: SlotClaims
    heartbeat_s: int
    settings: dict = field(default_factory=dict)

    def budget_slots(self, trials: int | None) -> int:
        """Number of budget slots for a requested trial count (grid: at most, and by default, every point)."""
        if self.sampler == "grid":
            size = self.space.size()
            return size if trials is None else min(trials, size)
        if trials is None:
            raise InputError(f"--sampler {self.sampler} needs a budget: pass --trials N (and/or --timeout SECONDS)")
        return trials

    def states(self) -> dict[int, TrialState]:
        """``{trial number: state}`` of every trial of the study."""
        return {t.number: t.state for t in self.study.get_trials(deepcopy=False)}

    def completed(self) -> list[FrozenTrial]:
        """Completed trials that measured a configuration (no repeats), in the order they completed."""
        done = self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        return sorted((t for t in done if "slot" in t.user_attrs), key=lambda t: (t.datetime_complete, t.number))


def study_settings(space: SearchSpace, objectives: Sequence[Objective], sampler: str,
                   context: Mapping[str, object]) -> dict:
    """The JSON-able description stored with a study and compared when it is joined or resumed."""
    return {"space": space.as_dict(), "sampler": sampler, "context": dict(context),
            "objectives": [{"name": o.name, "metric": o.metric, "higher_is_better": o.higher_is_better,
                            "needs_masks": o.needs_masks} for o in objectives]}


def _first_difference(stored: dict, wanted: dict) -> str | None:
    for key in sorted(set(stored) | set(wanted)):
        a, b = stored.get(key), wanted.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            inner = _first_difference(a, b)
            if inner:
                return f"{key}.{inner}"
        elif json.dumps(a, sort_keys=True, default=str) != json.dumps(b, sort_keys=True, default=str):
            return f"{key} (stored {_brief(a)}, asked {_brief(b)})"
    return None


def _brief(value: object, limit: int = 80) -> str:
    """A setting for a one-line message: the names of a list of named items, else JSON cut at ``limit``."""
    if isinstance(value, list) and value and all(isinstance(v, dict) and "name" in v for v in value):
        return ",".join(str(v["name"]) for v in value)
    text = json.dumps(value, default=str)
    return text if len(text) <= limit else text[:limit - 1] + "…"


def _storage(url: str, heartbeat_s: int) -> optuna.storages.RDBStorage:
    """Optuna's storage for ``url``; workers starting together may race to create its tables: retried."""
    for attempt in range(STORAGE_ATTEMPTS):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            try:
                storage = optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs(url), grace_period=3 * heartbeat_s,
                                                     heartbeat_interval=heartbeat_s)
                break
            except (ValueError, ImportError) as exc:
                raise InputError(f"cannot open --storage {redact(url)}: {exc}") from exc
            except sa_exc.DBAPIError:
                if attempt == STORAGE_ATTEMPTS - 1:
                    raise
                time.sleep(0.5 + random.random())
    tune_sqlite(storage.engine)
    return storage


def open_study(url: str, name: str, space: SearchSpace, objectives: Sequence[Objective], sampler: str, *,
               context: Mapping[str, object], mode: str = "new", seed: int = 0, budget: int = 100,
               heartbeat_s: int = 10) -> SearchStudy:
    """Create, resume or join the study ``name`` in the database ``url``.

    Parameters
    ----------
    url : str
        SQLAlchemy URL (``sqlite:///study.db``, ``postgresql://user@host/db``).
    name : str
        Study name.
    space, objectives, sampler
        What the study searches (see :class:`SearchStudy`).
    context : mapping
        JSON-able description of model, data and metric settings (stored and compared).
    mode : {"new", "resume", "worker"}
        ``new`` refuses an existing study, ``resume`` refuses a missing one, ``worker``
        creates it or joins it.
    seed : int
        Sampler seed (a worker adds its process id, so workers draw differently).
    budget : int
        Trial budget, which sizes NSGA-II's population and TPE's start-up phase.
    heartbeat_s : int
        Heartbeat interval; a trial silent for 3× this long is failed as dead.
    """
    if mode not in ("new", "resume", "worker"):
        raise InputError(f"unknown study mode '{mode}'")
    if heartbeat_s < 1:
        raise InputError(f"--heartbeat {heartbeat_s}: give at least 1 second")
    url = database_url(url)
    engine = connect(url)
    storage = _storage(url, heartbeat_s)
    settings = study_settings(space, objectives, sampler, context)
    created = False
    if mode != "resume":
        try:
            storage.create_new_study([StudyDirection[o.direction.upper()] for o in objectives], name)
            created = True
        except optuna.exceptions.DuplicatedStudyError:
            if mode == "new":
                raise InputError(f"study '{name}' already exists in {redact(url)}; pass --resume to continue it, "
                                 "--worker to join it, or another --study name") from None
    try:
        study = optuna.load_study(study_name=name, storage=storage,
                                  sampler=make_sampler(sampler, space, seed + (os.getpid() if mode == "worker" else 0), budget))
    except KeyError:
        raise InputError(f"no study '{name}' in {redact(url)} to resume; run without --resume to start it") from None
    if created:
        study.set_user_attr(SETTINGS_ATTR, settings)
    diff = _first_difference(_stored_settings(study, wait=mode == "worker"), settings)
    if diff:
        raise InputError(f"study '{name}' searches something else: {diff}; pass the options it was created with "
                         "or another --study name")
    return SearchStudy(study, space, tuple(objectives), sampler, SlotClaims(engine, name), heartbeat_s, settings)


def delete_study(url: str, name: str) -> None:
    """Delete the study ``name`` and its budget claims from ``url`` (the metric cache stays); absent: nothing."""
    url = database_url(url)
    storage = _storage(url, 1)
    if name in optuna.get_all_study_names(storage):
        optuna.delete_study(study_name=name, storage=storage)
    SlotClaims(connect(url), name).clear()


def _stored_settings(study: optuna.Study, wait: bool) -> dict:
    deadline = time.monotonic() + (JOIN_WAIT_S if wait else 0.0)
    while True:
        stored = study.user_attrs.get(SETTINGS_ATTR)
        if stored is not None:
            return stored
        if time.monotonic() >= deadline:
            raise InputError(f"study '{study.study_name}' was not made by canonc search; use another --study name")
        time.sleep(0.5)


def slot_summary(search: SearchStudy, n_slots: int, states: Mapping[int, TrialState] | None = None) -> dict[str, list[int]]:
    """Slots of the budget by state: ``complete``, ``running``, ``free`` and ``given_up`` (failed too often).

    ``states`` are the trials' states (:meth:`SearchStudy.states`; read now when not given).
    """
    states = search.states() if states is None else states
    holders = search.claims.holders()
    out: dict[str, list[int]] = {"complete": [], "running": [], "free": [], "given_up": []}
    for slot, state in search.claims.slot_states(n_slots, states, holders).items():
        if state is None and len(holders.get(slot, [])) >= MAX_ATTEMPTS:
            out["given_up"].append(slot)
        else:
            out[{None: "free", TrialState.COMPLETE: "complete"}.get(state, "running")].append(slot)
    return out


def run_trials(search: SearchStudy, evaluate: Evaluate, *, trials: int | None = None, timeout_s: float | None = None,
               on_trial: Callable[[SearchStudy, int], None] | None = None) -> dict[str, list[int]]:
    """Run trials until every budget slot is complete (or given up) or ``timeout_s`` has passed.

    Free slots are claimed one trial at a time; when none is free but other workers'
    trials still run, this waits for them (or for their heartbeat to go stale, which
    frees the slot again). ``on_trial(search, n_slots)`` is called at the start and after
    every trial.

    The grid claims a slot first (the slot is its grid point). A sampler draws first: a
    configuration the study has already measured is told its known values at once, as a
    *repeat* that claims no slot (the values are deterministic, so the budget counts
    distinct configurations); after ``MAX_REPEATS`` repeats in a row the sampler is taken
    to have nothing new to propose and the run stops.

    Returns
    -------
    dict
        :func:`slot_summary` at the end.
    """
    n_slots = search.budget_slots(trials)
    start = time.monotonic()
    states: dict[int, TrialState] = {}
    free: list[int] = []
    repeats = 0
    if on_trial is not None:
        on_trial(search, n_slots)

    def claim(trial: optuna.Trial) -> None:
        slot = search.claims.claim(trial.number, free, states)
        if slot is None:
            raise optuna.TrialPruned("no budget slot left")
        trial.set_user_attr("slot", slot)

    def objective(trial: optuna.Trial) -> list[float]:
        nonlocal repeats
        if search.sampler == "grid":
            claim(trial)
        config = search.space.suggest(trial)
        trial.set_user_attr("config", config.as_dict())
        if search.sampler != "grid":
            known = {Config.from_dict(t.user_attrs["config"]).key(): t for t in search.completed()}
            measured = known.get(config.key())
            if measured is not None:
                repeats += 1
                trial.set_user_attr("repeat_of", measured.number)
                return list(measured.values)
            claim(trial)
        repeats = 0
        values = evaluate(config)
        return [float(values[o.metric]) for o in search.objectives]

    while (timeout_s is None or time.monotonic() - start < timeout_s) and repeats < MAX_REPEATS:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(search.study)
        states = search.states()
        slots = slot_summary(search, n_slots, states)
        free = slots["free"]
        if not free:
            if not slots["running"]:
                break
            time.sleep(min(search.heartbeat_s, 2.0))
            continue
        search.study.optimize(objective, n_trials=1, catch=())
        if on_trial is not None:
            on_trial(search, n_slots)
    return slot_summary(search, n_slots)
