"""Study infrastructure in one process: storage, budget slots, samplers, resume, refusals, cache.

The objective here is the toy function of ``search_toy.py`` (the tests are about the
infrastructure; the real objective is tested in ``test_search_cli.py``).
"""

from __future__ import annotations

import math

import optuna
import pytest
from optuna.trial import TrialState
from search_toy import OBJECTIVES, SPACE, toy_values

from canonc.errors import InputError
from canonc.search import study as study_module
from canonc.search.cache import MetricCache, entry_key
from canonc.search.db import connect
from canonc.search.space import Config, SearchSpace
from canonc.search.study import delete_study, open_study, run_trials, slot_summary

optuna.logging.set_verbosity(optuna.logging.WARNING)


def _open(url, sampler="grid", mode="new", budget=32, context=None):
    return open_study(url, "s", SPACE, OBJECTIVES, sampler, context=context or {"toy": 1}, mode=mode, budget=budget,
                      heartbeat_s=1)


def test_grid_runs_every_point_exactly_once(tmp_path):
    search = _open(f"sqlite:///{tmp_path / 'db.sqlite'}")
    slots = run_trials(search, toy_values)
    done = search.completed()
    assert len(done) == SPACE.size() == 32
    assert {tuple(sorted(t.params.items())) for t in done} == {tuple(sorted(SPACE.params(c).items())) for c in SPACE.grid()}
    assert sorted(t.user_attrs["slot"] for t in done) == list(range(32))
    assert {k: len(v) for k, v in slots.items()} == {"complete": 32, "running": 0, "free": 0, "given_up": 0}
    # the stored values are the objective's
    t = done[0]
    assert list(t.values) == [toy_values(Config.from_dict(t.user_attrs["config"]))[o.metric] for o in OBJECTIVES]


def test_partial_grid_then_resume_to_a_larger_budget(tmp_path):
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    run_trials(_open(url), toy_values, trials=5)
    resumed = _open(url, mode="resume")
    first = {t.number: t.values for t in resumed.completed()}
    assert len(first) == 5
    run_trials(resumed, toy_values, trials=12)
    done = resumed.completed()
    assert len(done) == 12 and len({t.user_attrs["config"]["gammas"].__repr__() + str(t.params) for t in done}) == 12
    assert {t.number: t.values for t in done if t.number in first} == first


@pytest.mark.parametrize("sampler", ["nsga2", "tpe"])
def test_optuna_samplers_complete_the_trial_budget(tmp_path, sampler):
    search = _open(f"sqlite:///{tmp_path / 'db.sqlite'}", sampler, budget=12)
    slots = run_trials(search, toy_values, trials=12)
    assert len(slots["complete"]) == 12 and len(search.completed()) == 12
    assert search.study.directions == [optuna.study.StudyDirection.MAXIMIZE, optuna.study.StudyDirection.MINIMIZE]
    assert all(Config.from_dict(t.user_attrs["config"]) in SPACE.grid() for t in search.completed())


def test_repeated_configurations_are_told_their_values_without_using_the_budget(tmp_path, monkeypatch):
    monkeypatch.setattr(study_module, "MAX_REPEATS", 20)
    small = SearchSpace(SPACE.groups, (0.0, 1.0), (True,))  # 4 configurations
    search = open_study(f"sqlite:///{tmp_path / 'db.sqlite'}", "s", small, OBJECTIVES, "random", context={}, budget=6,
                        heartbeat_s=1)
    measured = []
    slots = run_trials(search, lambda c: measured.append(c.key()) or toy_values(c), trials=6)
    # every configuration is measured once; then 20 repeats in a row end the run with 2 slots unused
    assert len(measured) == len(set(measured)) == 4 == len(slots["complete"]) and len(slots["free"]) == 2
    repeats = [t for t in search.study.get_trials() if "repeat_of" in t.user_attrs]
    assert len(repeats) >= 20 and len(search.completed()) == 4
    for t in repeats:
        original = search.study.get_trials()[t.user_attrs["repeat_of"]]
        assert t.values == original.values and t.user_attrs["config"] == original.user_attrs["config"]


def test_sampler_needs_a_budget(tmp_path):
    search = _open(f"sqlite:///{tmp_path / 'db.sqlite'}", "tpe")
    with pytest.raises(InputError, match="--trials N"):
        run_trials(search, toy_values)


def test_failed_trial_frees_its_slot_and_is_retried(tmp_path):
    search = _open(f"sqlite:///{tmp_path / 'db.sqlite'}")
    calls = []

    def flaky(config):
        calls.append(config)
        if len(calls) == 2:
            raise RuntimeError("worker crashed")
        return toy_values(config)

    with pytest.raises(RuntimeError):
        run_trials(search, flaky, trials=3)
    assert [t.state for t in search.study.get_trials()] == [TrialState.COMPLETE, TrialState.FAIL]
    run_trials(search, flaky, trials=3)
    done = search.completed()
    assert sorted(t.user_attrs["slot"] for t in done) == [0, 1, 2]
    assert calls[1] == calls[2]  # slot 1's grid point, retried as attempt 1
    assert search.claims.holders()[1] == [1, 2]


def test_slot_failing_three_times_is_given_up(tmp_path):
    search = _open(f"sqlite:///{tmp_path / 'db.sqlite'}")

    def nan_for_canonized(config):
        return {k: (math.nan if config.canonized else v) for k, v in toy_values(config).items()}

    slots = run_trials(search, nan_for_canonized, trials=4)
    canonized = sum(bool(c.canonized) for c in (Config.from_dict(t.user_attrs["config"]) for t in search.study.get_trials()))
    assert len(slots["complete"]) + len(slots["given_up"]) == 4
    assert len(slots["given_up"]) >= 1 and canonized == 3 * len(slots["given_up"])
    assert all(not Config.from_dict(t.user_attrs["config"]).canonized for t in search.completed())


def test_deleted_study_starts_afresh(tmp_path):
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    run_trials(_open(url), toy_values, trials=3)
    delete_study(url, "s")
    again = _open(url)
    assert again.claims.holders() == {} and again.completed() == []
    run_trials(again, toy_values, trials=3)
    assert sorted(t.user_attrs["slot"] for t in again.completed()) == [0, 1, 2]


def test_refusals_of_new_resume_and_mismatched_settings(tmp_path):
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    with pytest.raises(InputError, match="no study 's' .* to resume"):
        _open(url, mode="resume")
    _open(url)
    with pytest.raises(InputError, match="already exists .* --resume"):
        _open(url)
    with pytest.raises(InputError, match=r"searches something else: sampler \(stored \"grid\", asked \"nsga2\"\)"):
        _open(url, "nsga2", mode="resume")
    with pytest.raises(InputError, match="searches something else: context.toy"):
        _open(url, mode="worker", context={"toy": 2})


def test_bad_storage_url_is_one_line(tmp_path):
    with pytest.raises(InputError, match="not a database URL"):
        _open("nonsense")
    with pytest.raises(InputError, match="cannot open --storage"):
        _open(f"sqlite:///{tmp_path / 'missing' / 'dir' / 'db.sqlite'}")


def test_cache_round_trip_with_nan_and_duplicates(tmp_path):
    cache = MetricCache(connect(f"sqlite:///{tmp_path / 'db.sqlite'}"))
    config = Config("lrp-gamma", True, (("a", 0.25),))
    keys = [entry_key("ctx", config, "rma", i) for i in range(3)]
    assert len(set(keys)) == 3 and entry_key("ctx", config, "rra", 0) != keys[0]
    assert entry_key("ctx2", config, "rma", 0) != keys[0]
    cache.put({keys[0]: 0.5, keys[1]: math.nan})
    cache.put({keys[0]: 0.75, keys[2]: 1.0})  # a key stored twice keeps its first value
    got = cache.get(keys + ["absent"])
    assert got[keys[0]] == 0.5 and math.isnan(got[keys[1]]) and got[keys[2]] == 1.0 and "absent" not in got
    assert len(cache) == 3


@pytest.mark.filterwarnings("ignore:Heartbeat of storage")  # trials made by hand, outside Study.optimize
def test_slot_summary_counts_running_slots(tmp_path):
    search = _open(f"sqlite:///{tmp_path / 'db.sqlite'}")
    trial = search.study.ask()
    assert search.claims.claim(trial.number, [3, 4], search.states()) == 3
    other = search.study.ask()
    assert search.claims.claim(other.number, [3, 4], search.states()) == 4
    assert search.claims.claim(search.study.ask().number, [3, 4], search.states()) is None
    summary = slot_summary(search, 6)
    assert summary == {"complete": [], "running": [3, 4], "free": [0, 1, 2, 5], "given_up": []}
