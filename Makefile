# One entry point for people and CI. Every target creates .venv and installs on first use.
PY ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-dev

.PHONY: install test lint format emulator demo demo-lake dev

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

# The suite runs on every core (pytest-xdist; TEST_WORKERS=1 runs it in one process). Tests are
# independent: each starts its own emulator on a free port and its own Dagster instance.
TEST_WORKERS ?= auto

test: lint
	$(BIN)/pytest -n $(TEST_WORKERS) --dist worksteal

# The dev environment runs DuckDB 1.5.5 (the `ducklake` extra pins it: its packaged extensions
# exist for 1.5.5 only). Users get the newest DuckDB, so the warehouse tests run once more on it,
# file target only (EXTRALT_WAREHOUSE_TARGETS=file: the DuckLake cases need the extensions,
# packaged for 1.5.5 only). The newest `duckdb` wheel alone goes into .venv-compat/duckdb-newest (git-ignored), put first on
# PYTHONPATH for the same .venv. DUCKDB_NEWEST=duckdb==2.0.1 pins one; `rm -r` the folder to
# fetch a newer one.
DUCKDB_NEWEST ?= duckdb
NEWEST_DIR := .venv-compat/duckdb-newest
WAREHOUSE_TESTS := tests/test_warehouse.py tests/test_latest.py tests/test_load_failures.py tests/test_load_guards.py \
	tests/test_export_shapes.py tests/test_export_types.py tests/test_export_properties.py \
	tests/test_captures_asset.py tests/test_storage_compat.py
.PHONY: test-duckdb-newest

$(NEWEST_DIR)/duckdb: | $(BIN)/python
	rm -rf $(NEWEST_DIR).tmp
	$(BIN)/python -m pip install --quiet --no-deps --upgrade --target $(NEWEST_DIR).tmp '$(DUCKDB_NEWEST)'
	rm -rf $(NEWEST_DIR) && mv $(NEWEST_DIR).tmp $(NEWEST_DIR)

test-duckdb-newest: install $(NEWEST_DIR)/duckdb
	PYTHONPATH=$(CURDIR)/$(NEWEST_DIR) $(BIN)/python -c \
	  "import duckdb, sys; print('warehouse tests on DuckDB', duckdb.__version__); sys.exit(duckdb.__version__ == '1.5.5')"
	PYTHONPATH=$(CURDIR)/$(NEWEST_DIR) EXTRALT_WAREHOUSE_TARGETS=file \
	  $(BIN)/pytest -n $(TEST_WORKERS) --dist worksteal $(WAREHOUSE_TESTS)

# The export-shape property test (tests/test_export_properties.py) over many seeds: `make test`
# runs a fixed few. `make fuzz SEEDS=500`; replay one with `pytest ... --export-seed=N`.
SEEDS ?= 200
.PHONY: fuzz

fuzz: install
	$(BIN)/pytest -q tests/test_export_properties.py --export-seeds=$(SEEDS)

emulator: install
	$(BIN)/extralt-dagster emulator --port 8765

# The whole pipeline against the local emulator, headless; prints rows read back from DuckDB.
demo: install
	$(BIN)/extralt-dagster demo

# The same demo into a local DuckLake (data/lake/: a SQLite catalog and Parquet files; README,
# "DuckLake"): the same summary, the snapshot of each load and a time-travel query to paste.
demo-lake: install
	$(BIN)/extralt-dagster demo --ducklake

# The emulator plus `dagster dev` (UI on http://127.0.0.1:3000); Ctrl-C stops both. The instance
# is .dagster_home (or your DAGSTER_HOME); it prints the lines that point a second shell's
# `dagster` commands at the same instance, so the UI shows their runs.
dev: export DAGSTER_HOME ?= $(CURDIR)/.dagster_home
dev: install
	$(BIN)/extralt-dagster dev

# The browser suite (tests/e2e): the emulator, `dagster dev` (webserver + daemon) and headless
# Chromium, expected at /usr/bin/chromium (`apt-get install chromium`; or set
# EXTRALT_E2E_CHROMIUM). Screenshots and the `dagster dev` log land in e2e-artifacts/.
E2E_STAMP := $(VENV)/.installed-e2e

.PHONY: e2e

$(E2E_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,e2e]'
	touch $(E2E_STAMP)

e2e: $(E2E_STAMP)
	$(BIN)/pytest tests/e2e

# Benchmarks (BENCHMARKS.md): `.[dev,bench]` adds dlt, pandas and dagster-duckdb-pandas, the
# alternatives the load path is compared with. `bench` is the full run (100k and 1M captures,
# catalogue shapes of 7 and 30 offers per capture at 1M, history growth over 1/10/40 loads of
# 100k products; ~60 min, and 5-15 min more the first time to write the growth exports;
# refreshes results.json and the table in BENCHMARKS.md); `bench-quick` is the load path at 100k,
# growth over 1 and 10 loads, and polling, without the alternatives or Dagster's overhead. Both
# load into a DuckLake (SQLite catalog) beside the DuckDB file, each against its own floor;
# `bench` also runs the file on the newest DuckDB ($(NEWEST_DIR), as test-duckdb-newest).
BENCH_STAMP := $(VENV)/.installed-bench

.PHONY: bench bench-quick

$(BENCH_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	touch $(BENCH_STAMP)

bench: $(BENCH_STAMP) $(NEWEST_DIR)/duckdb
	$(BIN)/python -m benchmarks --update-doc

bench-quick: $(BENCH_STAMP)
	$(BIN)/python -m benchmarks --quick

# The chaos soak at full size (RELIABILITY.md): 30 rounds, 150 source materializations of six
# sources under a seeded mix of faults, then its invariants printed as figures (~10 min).
# `make test` runs the CI-sized one (40). SOAK_SEED=n replays another plan.
.PHONY: soak

soak: install
	$(BIN)/pytest -m slow -s tests/test_soak.py

# Mutation testing (TESTING.md): for each area where money and data live (client create/retry,
# run step, poll loop, warehouse load, schedules), mutmut 3 mutates its module in a copy of the
# tree (mutants/<area>/) and runs, for each mutant, only the tests that cover it. Then it prints
# killed / survived / timed out per area. Not in CI. `make mutate MUTATE_AREAS="poll_loop"`
# runs some areas; the names are in tests/mutation_areas.py.
MUTATE_AREAS ?= client run_step poll_loop warehouse_load schedules
.PHONY: mutate

mutate: install
	$(BIN)/python -m tests.mutation_areas run $(MUTATE_AREAS)
