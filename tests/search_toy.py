"""A search worker over a toy objective, run as a separate process by the search infrastructure tests.

It exercises storage, budget slots, workers and durability only: the objective is a
cheap deterministic function of the configuration (the product's objective, the
metrics, is tested in ``test_search_cli.py``). Each trial appends its configuration key
to ``--log`` when it starts and sleeps ``--sleep`` seconds, so a test can kill the
process in the middle of a trial.

    python tests/search_toy.py URL STUDY --mode worker --trials 12 --sleep 0.2 --log started.txt
"""

from __future__ import annotations

import argparse
import time

import optuna

from canonc.search.objectives import Objective
from canonc.search.space import SearchSpace
from canonc.search.study import open_study, run_trials

SPACE = SearchSpace(("conv1-2", "classifier"), (0.0, 0.25, 1.0, 10.0), (False, True))
OBJECTIVES = (Objective("faithfulness", "toy-up", True), Objective("robustness", "toy-down", False))


def toy_values(config) -> dict[str, float]:
    """A deterministic two-objective trade-off over the γ of both groups and canonization."""
    g = dict(config.gammas)
    return {"toy-up": g["conv1-2"] / (1.0 + g["conv1-2"]) + 0.1 * config.canonized,
            "toy-down": abs(g["classifier"] - 1.0) + 0.5 * g["conv1-2"] / (1.0 + g["conv1-2"])}


def main() -> None:
    """Parse the arguments, open the study and run trials until the budget is complete."""
    p = argparse.ArgumentParser()
    p.add_argument("url")
    p.add_argument("study")
    p.add_argument("--mode", default="worker")
    p.add_argument("--sampler", default="grid")
    p.add_argument("--trials", type=int)
    p.add_argument("--sleep", type=float, default=0.0)
    p.add_argument("--heartbeat", type=int, default=1)
    p.add_argument("--log", required=True)
    args = p.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    search = open_study(args.url, args.study, SPACE, OBJECTIVES, args.sampler, context={"toy": 1}, mode=args.mode,
                        budget=args.trials or SPACE.size(), heartbeat_s=args.heartbeat)

    def evaluate(config):
        with open(args.log, "a") as log:
            log.write(config.key() + "\n")
        time.sleep(args.sleep)
        return toy_values(config)

    run_trials(search, evaluate, trials=args.trials)


if __name__ == "__main__":
    main()
