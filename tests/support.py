"""Shared helpers for the Dagster-level tests (fixtures live in conftest.py)."""

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import dagster as dg
from dagster_duckdb import DuckDBResource

from extralt_dagster import ExtraltResource

FAST_POLL = {
    "poll_interval_seconds": 0.05,
    "initial_poll_interval_seconds": 0.01,
    "retry_backoff_seconds": 0.01,
    "rate_limit_backoff_seconds": 0.01,
    "heartbeat_seconds": 0.5,
    "stop_timeout_seconds": 5.0,
}


def fast_extralt(emulator: Any, **overrides: Any) -> ExtraltResource:
    """A resource pointed at the emulator, polling fast enough for tests."""
    return ExtraltResource(
        api_key=emulator.api_key, base_url=emulator.url, **{**FAST_POLL, **overrides}
    )


def resources(emulator: Any, tmp_path: Path, **overrides: Any) -> dict[str, Any]:
    return {
        "extralt": fast_extralt(emulator, **overrides),
        "duckdb": DuckDBResource(database=str(tmp_path / "warehouse.duckdb")),
    }


def failure_messages(result: dg.ExecuteInProcessResult) -> list[str]:
    return [e.step_failure_data.error.message for e in result.all_events if e.is_step_failure]


def materialization_metadata(result: dg.ExecuteInProcessResult, key: dg.AssetKey) -> dict[str, Any]:
    mats = [m for m in result.asset_materializations_for_node(key.path[-1]) if m.asset_key == key]
    if not mats:
        mats = [
            e.materialization
            for e in result.all_events
            if e.is_step_materialization and e.materialization.asset_key == key
        ]
    assert mats, f"no materialization of {key.to_user_string()}"
    return {k: v.value for k, v in mats[-1].metadata.items()}


def event_log_text(instance: dg.DagsterInstance) -> str:
    """Every event of every run, serialized: what a key leak would show up in."""
    chunks = []
    for run in instance.get_runs():
        chunks.append(dg.serialize_value(run.tags))
        for entry in instance.all_logs(run.run_id):
            chunks.append(dg.serialize_value(entry))
    return "\n".join(chunks)


def wait_until(
    predicate: Callable[[], Any],
    timeout: float = 30.0,
    what: str = "condition",
    interval: float = 0.02,
) -> Any:
    """Wait on a condition, never a fixed sleep; fails loudly after `timeout`.

    `interval` spaces out the checks (raise it when each check is a request to a server)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)
