# One entry point for people and CI. Every target creates .venv and installs on first use.
PY ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-dev

.PHONY: install test lint format emulator demo dev

$(BIN)/python:
	$(PY) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

lint: install
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

test: lint
	$(BIN)/pytest

emulator: install
	$(BIN)/extralt-dagster emulator --port 8765

# The whole pipeline against the local emulator, headless; prints rows read back from DuckDB.
demo: install
	$(BIN)/extralt-dagster demo

# The emulator plus `dagster dev` (UI on http://127.0.0.1:3000); Ctrl-C stops both.
dev: install
	$(BIN)/extralt-dagster dev
