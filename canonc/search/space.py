"""The search space: γ per layer group, canonization, optionally the method family and ε.

A :class:`Config` is one point: which attribution method, whether the model is
canonized, γ per layer group (``lrp-gamma``) and ε (methods with a dense-layer ε).
A :class:`SearchSpace` lists the candidate values; it enumerates its grid (the
poster's exhaustive search) and suggests points through an Optuna trial (the
multi-objective samplers), both over the same discrete values.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass

from ..errors import InputError
from ..xai.methods import METHODS

POSTER_GAMMAS = (0.0, 0.1, 0.25, 0.5, 1.0, 10.0)
"""The poster's γ values per layer group."""

GAMMA_METHOD = "lrp-gamma"
SEARCHABLE_METHODS = ("lrp-gamma", "lrp-epsilon-plus", "lrp-alpha2beta1", "lrp-epsilon", "eb")
"""Rule-based methods a search may compare (the composite family)."""


def parse_floats(text: str, option: str) -> tuple[float, ...]:
    """``"0,0.1,10"`` → ``(0.0, 0.1, 10.0)``, sorted, without repeats; bad text raises :class:`InputError`."""
    try:
        values = sorted({float(v) for v in text.split(",") if v.strip()})
    except ValueError:
        raise InputError(f"{option} {text!r}: write comma-separated numbers, e.g. 0,0.25,1") from None
    if not values:
        raise InputError(f"{option} is empty; give at least one value")
    if any(v < 0 or v != v or v == float("inf") for v in values):
        raise InputError(f"{option} {text!r}: values must be finite and non-negative")
    return tuple(values)


def parse_canonized(text: str) -> tuple[bool, ...]:
    """``"no,yes"`` → ``(False, True)``."""
    words = {"no": False, "yes": True}
    items = [w.strip().lower() for w in text.split(",") if w.strip()]
    if not items or any(w not in words for w in items):
        raise InputError(f"--canonized {text!r}: write no, yes or no,yes")
    return tuple(sorted({words[w] for w in items}))


def parse_methods(text: str) -> tuple[str, ...]:
    """``"lrp-gamma,eb"`` → the methods in the given order, each one a searchable rule-based method."""
    items = tuple(dict.fromkeys(m.strip() for m in text.split(",") if m.strip()))
    bad = [m for m in items if m not in SEARCHABLE_METHODS]
    if not items or bad:
        raise InputError(f"--methods {text!r}: choose from {', '.join(SEARCHABLE_METHODS)}")
    return items


def _has_epsilon(method: str) -> bool:
    return "epsilon" in METHODS[method].defaults


@dataclass(frozen=True)
class Config:
    """One configuration of the search.

    Attributes
    ----------
    method : str
        Attribution method (``lrp-gamma`` for the γ search).
    canonized : bool
        Explain the canonized model (True) or the original as is (False).
    gammas : tuple of (str, float)
        γ per layer group, in group order (``lrp-gamma`` only).
    epsilon : float or None
        ε of the dense-layer rule (methods that have one; None: the method's default).
    """

    method: str
    canonized: bool
    gammas: tuple[tuple[str, float], ...] = ()
    epsilon: float | None = None

    def method_params(self, groups: str) -> dict[str, object]:
        """Keyword parameters of the method (``gamma``/``groups`` or ``epsilon``)."""
        params: dict[str, object] = {}
        if self.gammas:
            params["gamma"] = dict(self.gammas)
            params["groups"] = groups
        if self.epsilon is not None:
            params["epsilon"] = self.epsilon
        return params

    def as_dict(self) -> dict[str, object]:
        """JSON-ready form (inverse of :meth:`from_dict`)."""
        return {"method": self.method, "canonized": self.canonized, "gammas": dict(self.gammas),
                "epsilon": self.epsilon}

    @classmethod
    def from_dict(cls, data: dict) -> Config:
        """The configuration written by :meth:`as_dict`."""
        return cls(str(data["method"]), bool(data["canonized"]),
                   tuple((str(g), float(v)) for g, v in dict(data.get("gammas") or {}).items()),
                   None if data.get("epsilon") is None else float(data["epsilon"]))

    def key(self) -> str:
        """Stable text identity (cache keys, duplicate checks)."""
        return json.dumps(self.as_dict(), sort_keys=True)

    def label(self) -> str:
        """Short human-readable form, e.g. ``γ 0.25/0/0/0 canonized``."""
        parts = [] if self.method == GAMMA_METHOD else [self.method]
        if self.gammas:
            parts.append("γ " + "/".join(f"{v:g}" for _, v in self.gammas))
        if self.epsilon is not None:
            parts.append(f"ε {self.epsilon:g}")
        parts.append("canonized" if self.canonized else "original")
        return " ".join(parts)


@dataclass(frozen=True)
class SearchSpace:
    """Candidate values of every searched parameter.

    Attributes
    ----------
    groups : tuple of str
        Layer-group names (``canonc.xai.layer_groups``), each gets its own γ.
    gammas : tuple of float
        Candidate γ values (same for every group).
    canonized : tuple of bool
        Canonization options.
    methods : tuple of str
        Method family; more than one makes the method a searched parameter.
    epsilons : tuple of float
        Candidate ε for methods with a dense-layer ε; empty: the method's default.
    """

    groups: tuple[str, ...]
    gammas: tuple[float, ...] = POSTER_GAMMAS
    canonized: tuple[bool, ...] = (False, True)
    methods: tuple[str, ...] = (GAMMA_METHOD,)
    epsilons: tuple[float, ...] = ()

    def _method_grid(self, method: str) -> list[tuple[tuple[tuple[str, float], ...], float | None]]:
        gamma_sets = ([tuple(zip(self.groups, values)) for values in itertools.product(self.gammas, repeat=len(self.groups))]
                      if method == GAMMA_METHOD else [()])
        eps = list(self.epsilons) if self.epsilons and _has_epsilon(method) else [None]
        return [(g, e) for g in gamma_sets for e in eps]

    def grid(self) -> list[Config]:
        """Every configuration, in a fixed order (method, canonization, γ per group, ε)."""
        return [Config(m, c, g, e) for m in self.methods for c in self.canonized for g, e in self._method_grid(m)]

    def size(self) -> int:
        """Number of grid points."""
        return len(self.canonized) * sum(len(self._method_grid(m)) for m in self.methods)

    def suggest(self, trial) -> Config:
        """Draw a configuration through ``trial`` (``optuna.Trial``): one categorical per parameter."""
        method = trial.suggest_categorical("method", list(self.methods)) if len(self.methods) > 1 else self.methods[0]
        canonized = trial.suggest_categorical("canonized", list(self.canonized))
        gammas: tuple[tuple[str, float], ...] = ()
        if method == GAMMA_METHOD:
            gammas = tuple((g, float(trial.suggest_categorical(f"gamma:{g}", list(self.gammas)))) for g in self.groups)
        epsilon = None
        if self.epsilons and _has_epsilon(method):
            epsilon = float(trial.suggest_categorical("epsilon", list(self.epsilons)))
        return Config(method, bool(canonized), gammas, epsilon)

    def params(self, config: Config) -> dict[str, object]:
        """Optuna parameters of ``config``: the values :meth:`suggest` draws to make it."""
        out: dict[str, object] = {"method": config.method} if len(self.methods) > 1 else {}
        out["canonized"] = config.canonized
        out.update({f"gamma:{g}": v for g, v in config.gammas})
        if config.epsilon is not None:
            out["epsilon"] = config.epsilon
        return out

    def as_dict(self) -> dict[str, object]:
        """JSON-ready form (stored with the study; inverse of :meth:`from_dict`)."""
        return {"groups": list(self.groups), "gammas": list(self.gammas), "canonized": list(self.canonized),
                "methods": list(self.methods), "epsilons": list(self.epsilons)}

    @classmethod
    def from_dict(cls, data: dict) -> SearchSpace:
        """The space written by :meth:`as_dict`."""
        return cls(tuple(data["groups"]), tuple(float(v) for v in data["gammas"]),
                   tuple(bool(v) for v in data["canonized"]), tuple(data["methods"]),
                   tuple(float(v) for v in data["epsilons"]))

