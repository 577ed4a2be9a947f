# canonc: `make demo` and `make test` work on a fresh clone (they create .venv when missing).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-slow lint bench clean

$(STAMP): pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet -r requirements.lock
	$(BIN)/pip install --quiet --no-deps -e .
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m models.demo

test: $(STAMP)
	$(BIN)/ruff check canonc models benchmarks tests
	$(BIN)/python -m pytest -q --durations=15

test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -m slow

lint: $(STAMP)
	$(BIN)/ruff check canonc models benchmarks tests

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_canonize.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
