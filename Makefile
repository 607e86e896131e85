# The two commands a new user runs: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-dev

.PHONY: demo dev test lint format bench bench-ui profile faults clean venv

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/smsq demo

dev: $(STAMP)
	$(BIN)/smsq dev

lint: $(STAMP)
	$(BIN)/ruff format --check producer worker tests bench
	$(BIN)/ruff check producer worker tests bench

format: $(STAMP)
	$(BIN)/ruff format producer worker tests bench
	$(BIN)/ruff check --fix producer worker tests bench

test: $(STAMP) lint
	$(BIN)/python -m pytest -q -p no:cacheprovider

bench: $(STAMP)
	$(BIN)/python bench/run.py
	$(BIN)/python bench/history.py

profile: $(STAMP)
	$(BIN)/python bench/profile.py

bench-ui: $(STAMP)
	$(BIN)/python bench/ui.py

faults: $(STAMP)
	$(BIN)/python bench/faults.py

clean:
	rm -rf $(VENV) var .pytest_cache .ruff_cache
