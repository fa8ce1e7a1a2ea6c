"""Typed reads of the event metadata the `run` asset writes, for the assets below it."""

from typing import Any

import dagster as dg

from ..naming import run_asset_key


def latest_run_metadata(instance: dg.DagsterInstance, name: str) -> dict[str, Any] | None:
    """The newest `run` materialization's metadata values for a source, or None."""
    event = instance.get_latest_materialization_event(run_asset_key(name))
    if event is None or event.asset_materialization is None:
        return None
    return {k: v.value for k, v in event.asset_materialization.metadata.items()}
