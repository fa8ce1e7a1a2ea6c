"""Typed records to and from event metadata: the one place our metadata keys are written.

The `run` asset writes a `RunMaterialization`; the `captures` asset reads it back from the run
asset's latest materialization (`latest_run_materialization`), never through string keys. The
captures asset's own metadata (`captures_metadata`) is for the UI and the soak.
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import dagster as dg

from .. import warehouse
from ..api.models import CREDITS_PER_CAPTURE, ExtraltRun
from ..naming import (
    RUN_DOCUMENT_KEY,
    RUN_ID_KEY,
    metadata_key,
    run_asset_key,
)

#: The columns of the preview table in the captures asset's metadata.
PREVIEW_COLUMNS = ("title", "brand", "min_price", "currency", "available")


@dataclass(frozen=True)
class RunMaterialization:
    """What a `run` materialization records: the Extralt run it ended with, and how.

    The run document travels whole (it is also what the UI shows), so the reader gets the very
    run the API reported, parsed by the same `ExtraltRun.from_api`.
    """

    run: ExtraltRun
    #: created, adopted, resumed, restarted or reused; `observed` from the external-runs sensor.
    how: str
    dashboard_url: str
    polls: int
    #: The run's robot and budget, else the source's (a run document may omit them).
    robot_id: str
    budget: int | None
    #: Who started the run: `dagster`, or `extralt` (its schedules, its dashboard).
    origin: str = "dagster"

    def to_metadata(self) -> dict[str, Any]:
        run = self.run
        values: dict[str, Any] = {
            "run_id": run.id,
            "dashboard_url": dg.MetadataValue.url(self.dashboard_url),
            "status": run.status.value,
            "robot_id": self.robot_id,
            "extracted": run.extracted,
            "captures": run.extracted,
            "credits_spent": run.credits_spent,
            "credits_per_capture": CREDITS_PER_CAPTURE,
            "how": self.how,
            "origin": self.origin,
            "polls": self.polls,
            "run_document": dg.MetadataValue.json(dict(run.raw)),
        }
        optional = {
            "robot_name": run.robot_name,
            "budget": self.budget,
            "duration_seconds": run.duration,
            "in_queue": run.in_queue,
            "created_at": run.created_at and dg.MetadataValue.timestamp(run.created_at),
            "started_at": run.started_at and dg.MetadataValue.timestamp(run.started_at),
        }
        values.update({k: v for k, v in optional.items() if v is not None})
        return {metadata_key(k): v for k, v in values.items()}


def run_failure_metadata(run_id: str, dashboard_url: str) -> dict[str, Any]:
    """What a failed `run` step records when it has no final run document."""
    return {RUN_ID_KEY: run_id, metadata_key("dashboard_url"): dg.MetadataValue.url(dashboard_url)}


def _latest_run_metadata(
    instance: dg.DagsterInstance, name: str
) -> Mapping[str, dg.MetadataValue] | None:
    event = instance.get_latest_materialization_event(run_asset_key(name))
    if event is None or event.asset_materialization is None:
        return None
    return event.asset_materialization.metadata


def latest_materialized_run_id(instance: dg.DagsterInstance, name: str) -> str | None:
    """The Extralt run of the source's newest `run` materialization, or None."""
    metadata = _latest_run_metadata(instance, name)
    value = None if metadata is None else metadata.get(RUN_ID_KEY)
    return None if value is None else value.value


def _own_run_metadata(
    instance: dg.DagsterInstance, name: str, dagster_run_id: str
) -> Mapping[str, dg.MetadataValue] | None:
    """The newest `run` materialization of the source made by this Dagster run, else by its
    nearest ancestor (a re-execution from failure runs the captures step alone)."""
    key = run_asset_key(name)
    run_id: str | None = dagster_run_id
    for _ in range(100):  # a re-execution chain is short; never loop forever
        if run_id is None:
            return None
        events = instance.all_logs(run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION)
        for event in reversed(events):
            mat = event.asset_materialization
            if mat is not None and mat.asset_key == key:
                return mat.metadata
        run = instance.get_run_by_id(run_id)
        run_id = None if run is None else run.parent_run_id
    return None


def latest_run_materialization(
    instance: dg.DagsterInstance, name: str, dagster_run_id: str | None = None
) -> RunMaterialization | None:
    """The source's newest `run` materialization, or None when it has none. With
    `dagster_run_id`, the one that Dagster run (or its nearest ancestor) made comes first: a
    materialization reported in between (the sensor's, of a run Extralt started) is not it."""
    metadata = None
    if dagster_run_id is not None:
        metadata = _own_run_metadata(instance, name, dagster_run_id)
    if metadata is None:
        metadata = _latest_run_metadata(instance, name)
    if metadata is None or RUN_ID_KEY not in metadata:
        return None
    run = ExtraltRun.from_api(metadata[RUN_DOCUMENT_KEY].value)

    def value(field: str, default: Any) -> Any:
        entry = metadata.get(metadata_key(field))
        return default if entry is None else entry.value

    return RunMaterialization(
        run=run,
        how=str(value("how", "")),
        dashboard_url=str(value("dashboard_url", "")),
        polls=int(value("polls", 0)),
        robot_id=str(value("robot_id", run.robot_id or "")),
        budget=value("budget", run.budget),
        origin=str(value("origin", "dagster")),
    )


# --- The captures asset's metadata -------------------------------------------------------------


def captures_metadata(
    uri: str,
    target: "warehouse.Target",
    result: "warehouse.LoadResult",
    size: int,
    download_seconds: float,
) -> dict[str, Any]:
    tables = dict(result.table_names) or target.table_names
    values: dict[str, Any] = {
        "run_id": result.run_id,
        "history_rows": result.history_rows,
        "products": result.products,
        "variants": result.variants,
        "variants_in_run": result.variants_for_run,
        "bytes_downloaded": size,
        "download_seconds": round(download_seconds, 3),
        "load_seconds": round(result.load_seconds, 3),
        "columns_added": joined(result.columns_added),
        "columns_missing": joined(result.columns_missing),
        "columns_ignored": joined(result.columns_ignored),
        "columns_typed": typed_text(result),
        "unconverted_extracted_at": result.unconverted_extracted_at,
        "columns_widened": widened_text(result),
        "runs_dropped": joined(result.runs_dropped),
        **({} if result.snapshot_id is None else {"snapshot_id": result.snapshot_id}),
        "extracted": count_or_unknown(result.extracted),
        "missing_captures": count_or_unknown(result.missing_captures),
        "tables": dg.MetadataValue.md("\n".join(f"- {k}: `{t}`" for k, t in tables.items())),
        "preview": dg.MetadataValue.md(_preview_markdown(result.preview)),
    }
    return {
        "dagster/row_count": result.rows,
        "dagster/table_name": tables["captures"],
        "dagster/column_schema": dg.TableSchema(
            columns=[
                dg.TableColumn(name=n, type=t, description=warehouse.column_description(n))
                for n, t in result.column_types
            ]
        ),
        "dagster/uri": uri,
        **{metadata_key(k): v for k, v in values.items()},
    }


def joined(names: Sequence[str]) -> str:
    """Metadata text for a list of names: comma separated, "none" when empty."""
    return ", ".join(names) or "none"


def widened_text(result: "warehouse.LoadResult") -> str:
    return joined([f"{p} ({old} -> {new})" for p, old, new in result.columns_widened])


def typed_text(result: "warehouse.LoadResult") -> str:
    return joined([f"{n} ({old} -> {new})" for n, old, new in result.columns_typed])


def count_or_unknown(value: int | None) -> int | str:
    """Metadata values have one type per key: a count, or "unknown" for a run document
    without `extracted`."""
    return "unknown" if value is None else value


def _preview_markdown(rows: Sequence[Mapping[str, Any]]) -> str:
    if not rows:
        return "_no rows_"
    header = "| " + " | ".join(PREVIEW_COLUMNS) + " |"
    rule = "|" + "---|" * len(PREVIEW_COLUMNS)
    lines = [header, rule]
    for row in rows:
        cells = [str(row.get(c, "")).replace("|", "\\|")[:80] for c in PREVIEW_COLUMNS]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
