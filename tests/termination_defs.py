"""Definitions for the termination test: loaded by a real dagster-webserver subprocess."""

import os

import dagster as dg
from dagster_duckdb import DuckDBResource

from extralt_dagster import ExtraltResource, build_extralt_assets

assets = build_extralt_assets("shoes", "rbt_shoes", budget=20)

defs = dg.Definitions(
    assets=assets,
    jobs=[dg.define_asset_job("extract_shoes", selection=[assets[0].key])],
    resources={
        "extralt": ExtraltResource(
            api_key=dg.EnvVar("EXTRALT_API_KEY"),
            base_url=os.environ["EXTRALT_BASE_URL"],
            poll_interval_seconds=0.2,
            initial_poll_interval_seconds=0.05,
        ),
        "duckdb": DuckDBResource(database=os.environ["EXTRALT_DUCKDB_PATH"]),
    },
)


def extract_shoes_job():
    """For `dg.reconstructable`: real re-execution needs a job a new process can rebuild."""
    return defs.resolve_job_def("extract_shoes")
