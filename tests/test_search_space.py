"""The search space: grid enumeration, Optuna parameters, configurations, option parsing."""

from __future__ import annotations

import optuna
import pytest

from canonc.errors import InputError
from canonc.search.space import Config, SearchSpace, parse_canonized, parse_floats, parse_methods

GROUPS = ("conv1-3", "conv4-7", "conv8-10", "classifier")


def test_poster_grid_has_every_point_once():
    space = SearchSpace(GROUPS)
    grid = space.grid()
    assert len(grid) == space.size() == 2 * 6 ** 4 == 2592
    assert len({c.key() for c in grid}) == 2592
    assert {c.canonized for c in grid} == {False, True}
    assert {dict(c.gammas)["conv4-7"] for c in grid} == {0.0, 0.1, 0.25, 0.5, 1.0, 10.0}


def test_reduced_grid_is_512():
    assert SearchSpace(GROUPS, (0.0, 0.25, 1.0, 10.0)).size() == 512


def test_method_family_and_epsilon_make_a_conditional_grid():
    space = SearchSpace(("a", "b"), (0.0, 1.0), (True,), ("lrp-gamma", "lrp-epsilon-plus", "eb"), (1e-6, 0.25))
    grid = space.grid()
    # lrp-gamma: 2^2 γ points (no ε); lrp-epsilon-plus: 2 ε values; eb: 1 point
    assert [sum(c.method == m for c in grid) for m in space.methods] == [4, 2, 1]
    assert len(grid) == space.size() == 7
    eps = [c for c in grid if c.method == "lrp-epsilon-plus"]
    assert {c.epsilon for c in eps} == {1e-6, 0.25} and all(c.gammas == () for c in eps)
    assert grid[-1] == Config("eb", True)


def test_suggest_reproduces_every_grid_point_from_its_params():
    space = SearchSpace(("a", "b"), (0.0, 0.5), (False, True), ("lrp-gamma", "lrp-alpha2beta1"), (0.1,))
    for config in space.grid():
        trial = optuna.trial.FixedTrial(space.params(config))
        assert space.suggest(trial) == config


def test_config_round_trip_and_method_params():
    config = Config("lrp-gamma", True, (("conv1-3", 0.25), ("classifier", 0.0)))
    assert Config.from_dict(config.as_dict()) == config
    assert config.method_params("auto:4") == {"gamma": {"conv1-3": 0.25, "classifier": 0.0}, "groups": "auto:4"}
    assert config.label() == "γ 0.25/0 canonized"
    assert Config("lrp-epsilon-plus", False, (), 0.5).method_params("auto:4") == {"epsilon": 0.5}


def test_space_round_trip():
    space = SearchSpace(("a",), (0.0, 10.0), (True,), ("lrp-gamma", "eb"), (0.1,))
    assert SearchSpace.from_dict(space.as_dict()) == space


def test_option_parsing():
    assert parse_floats("10, 0,0.25,0", "--gammas") == (0.0, 0.25, 10.0)
    assert parse_canonized("yes,no") == (False, True)
    assert parse_methods("eb,lrp-gamma") == ("eb", "lrp-gamma")


@pytest.mark.parametrize("call, message", [
    (lambda: parse_floats("0,x", "--gammas"), "comma-separated numbers"),
    (lambda: parse_floats("-1", "--gammas"), "non-negative"),
    (lambda: parse_floats(" , ", "--gammas"), "is empty"),
    (lambda: parse_canonized("maybe"), "no, yes or no,yes"),
    (lambda: parse_methods("gradient"), "choose from"),
])
def test_bad_options_raise_one_line(call, message):
    with pytest.raises(InputError, match=message) as err:
        call()
    assert "\n" not in str(err.value)
