"""The soak's code location: six sources in one job, run by Dagster's multiprocess executor.

Imported by the soak's worker, by the executor's forkserver and by every step process, so it
reads everything from the environment (set by `soak.run_soak`):

- `EXTRALT_BASE_URL`: the emulator; `EXTRALT_API_KEY` is read at run time through `dg.EnvVar`
- `SOAK_DUCKDB_PATH`, `SOAK_EXPORT_DIR`: the warehouse file and the folder exports stream into
- `SOAK_LAKE_CATALOG`, `SOAK_LAKE_DATA_PATH`: when set, the warehouse is this DuckLake instead
- `SOAK_CREDIT_TIMEZONE`: the time zone of the capped source's calendar month (`CAPPED_SOURCE`)

The job is resolved at import, so the forkserver preloads it and a step process starts in about
a second instead of rebuilding the definitions.
"""

import os

import dagster as dg
from dagster_duckdb import DuckDBResource

from extralt_dagster import DuckLakeResource, ExtraltResource, build_extralt_assets

from .config import (
    CAPPED_SOURCE,
    JOB_NAME,
    LOCK_TIMEOUT_SECONDS,
    REQUEST_TIMEOUT_SECONDS,
    RETRY_DELAY_SECONDS,
    RETRY_MAX,
    SOURCES,
    credit_limit,
)

RETRY_POLICY = dg.RetryPolicy(max_retries=RETRY_MAX, delay=RETRY_DELAY_SECONDS)


def _assets() -> list[dg.AssetsDefinition]:
    export_dir = os.environ["SOAK_EXPORT_DIR"]
    return [
        asset
        for s in SOURCES
        for asset in build_extralt_assets(
            s.name,
            s.robot_id,
            budget=s.budget,
            retry_policy=RETRY_POLICY,
            export_dir=export_dir,
            lock_timeout_seconds=LOCK_TIMEOUT_SECONDS,
            group_name="soak",
            **_cap(s.name),
        )
    ]


def _cap(name: str) -> dict:
    if name != CAPPED_SOURCE:
        return {}
    return {
        "credit_limit": credit_limit(),
        "timezone": os.environ.get("SOAK_CREDIT_TIMEZONE", "UTC"),
    }


def _resources() -> dict:
    return {
        "extralt": ExtraltResource(
            api_key=dg.EnvVar("EXTRALT_API_KEY"),
            base_url=os.environ["EXTRALT_BASE_URL"],
            request_timeout_seconds=REQUEST_TIMEOUT_SECONDS,
            max_retries=3,
            retry_backoff_seconds=0.05,
            rate_limit_backoff_seconds=0.25,
            retry_timeout_seconds=20.0,
            poll_interval_seconds=0.25,
            initial_poll_interval_seconds=0.05,
            poll_timeout_seconds=120.0,  # a backstop: the stuck-run fault sets its own
            heartbeat_seconds=5.0,
            stop_timeout_seconds=5.0,
        ),
        "duckdb": _warehouse(),
    }


def _warehouse() -> DuckDBResource | DuckLakeResource:
    if "SOAK_LAKE_CATALOG" in os.environ:
        return DuckLakeResource(
            catalog=os.environ["SOAK_LAKE_CATALOG"], data_path=os.environ["SOAK_LAKE_DATA_PATH"]
        )
    return DuckDBResource(database=os.environ["SOAK_DUCKDB_PATH"])


_executor = dg.multiprocess_executor.configured(
    {
        "max_concurrent": 4,  # the pools (extralt: 1, duckdb: 1) are what really limit it
        "start_method": {"forkserver": {"preload_modules": [__name__]}},
    }
)

defs = dg.Definitions(
    assets=_assets(),
    jobs=[dg.define_asset_job(JOB_NAME, executor_def=_executor)],
    resources=_resources(),
)
JOB = defs.resolve_job_def(JOB_NAME)


def soak_job() -> dg.JobDefinition:
    """For `dg.reconstructable`: every process rebuilds the job from this module."""
    return JOB
