"""Definitions for part 3: ``dagster asset materialize -f benchmarks/overhead_defs.py``.

One small source, as a user declares it, pointed at the benchmark's emulator by environment
variables (set by ``benchmarks/bench.py``), with the same fast poll settings as the bare script
it is compared with, so neither spends its time asleep.
"""

import os

import dagster as dg
from dagster_duckdb import DuckDBResource

from extralt_dagster import ExtraltResource, build_extralt_assets
from extralt_dagster.emulator import DEMO_API_KEY

COUNT = int(os.environ.get("BENCH_COUNT", "100"))

defs = dg.Definitions(
    assets=build_extralt_assets(
        "bench", "rbt_shoes", budget=COUNT, export_dir=os.environ.get("BENCH_EXPORT_DIR")
    ),
    resources={
        "extralt": ExtraltResource(
            api_key=DEMO_API_KEY,
            base_url=os.environ.get("BENCH_BASE_URL", "http://127.0.0.1:8765"),
            poll_interval_seconds=0.05,
            initial_poll_interval_seconds=0.01,
        ),
        "duckdb": DuckDBResource(
            database=os.environ.get("BENCH_DUCKDB_PATH", "benchmarks/.cache/overhead.duckdb")
        ),
    },
)
