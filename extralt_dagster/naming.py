"""Every name the integration gives Dagster: asset keys, op, job and schedule names, pools, run
tags, metadata keys, and the schema its tables go in.

One module, so the assets, the schedules, the sensor and the soak spell them alike. The
warehouse names its own tables (`warehouse.Target`) and owns `DEFAULT_SCHEMA`: it cannot import
this module, which imports Dagster.
"""

import dagster as dg

from .warehouse import DEFAULT_SCHEMA

KEY_PREFIX = "extralt"
METADATA_PREFIX = "extralt/"
RUN_POOL = "extralt"
WAREHOUSE_POOL = "duckdb"

#: The asset group of every source unless configured, and the job of all sources together.
DEFAULT_GROUP = KEY_PREFIX
ALL_SOURCES_JOB = f"{KEY_PREFIX}_job"
#: The lake maintenance job, its one op (where its run config goes; Dagster wants a name other
#: than the job's), and its schedule: one each per code location, which has one warehouse.
MAINTENANCE_JOB = f"{KEY_PREFIX}_lake_maintenance"
MAINTENANCE_OP = f"{KEY_PREFIX}__lake_maintenance"
MAINTENANCE_SCHEDULE = f"{MAINTENANCE_JOB}_schedule"

#: The statuses of a Dagster run that has not ended (schedules skip a tick behind one, the
#: sensor and the credit cap wait for one).
IN_FLIGHT_STATUSES = (
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
    dg.DagsterRunStatus.CANCELING,
)

#: Run tags every run of a source's job carries, and a scheduled one also names its schedule.
SOURCE_TAG = "extralt/source"
SCHEDULE_TAG = "extralt/schedule"
#: Run tag of a load the external-runs sensor requested: the Extralt run it loads. Read back by
#: every such sensor, so no two of them (renamed, or with another interval) request it twice.
OBSERVED_RUN_TAG = "extralt/observed_run_id"
#: The sensor of runs started outside Dagster, one per tick interval in use (see
#: `external_runs_sensor_name`).
EXTERNAL_RUNS_SENSOR = f"{KEY_PREFIX}_external_runs_sensor"


def run_asset_key(name: str) -> dg.AssetKey:
    return dg.AssetKey([KEY_PREFIX, name, "run"])


def captures_asset_key(name: str) -> dg.AssetKey:
    return dg.AssetKey([KEY_PREFIX, name, "captures"])


def run_op_name(name: str) -> str:
    """The `run` asset's op name (and step key): where run config for that asset goes."""
    return f"{KEY_PREFIX}__{name}__run"


def captures_op_name(name: str) -> str:
    """The `captures` asset's op name (and step key)."""
    return f"{KEY_PREFIX}__{name}__captures"


def job_name(name: str) -> str:
    return f"{KEY_PREFIX}_{name}_job"


def schedule_name(name: str) -> str:
    return f"{KEY_PREFIX}_{name}_schedule"


def external_runs_sensor_name(interval_seconds: int, *, alone: bool) -> str:
    """`extralt_external_runs_sensor` when every observing source ticks alike, else one sensor
    per interval: `extralt_external_runs_every_300s_sensor`."""
    if alone:
        return EXTERNAL_RUNS_SENSOR
    return f"{KEY_PREFIX}_external_runs_every_{interval_seconds}s_sensor"


def run_id_tag(name: str) -> str:
    """Run tag holding the Extralt run this source follows; survives re-execution."""
    return f"{METADATA_PREFIX}{name}.run_id"


def run_ids_tag(name: str) -> str:
    """Run tag listing every Extralt run this Dagster run has followed for the source, comma
    separated: a restart replaces `run_id_tag`, and the old run must stay known."""
    return f"{METADATA_PREFIX}{name}.run_ids"


def create_sent_tag(name: str) -> str:
    """Run tag set just before a create, so a retry can find a run whose create timed out."""
    return f"{METADATA_PREFIX}{name}.create_sent_at"


def metadata_key(field: str) -> str:
    """`extralt/<field>`: the key of one of our values in a materialization's metadata."""
    return f"{METADATA_PREFIX}{field}"


#: The metadata keys read back by another asset, the soak or the tests; the rest are written in
#: one place (`assets.metadata`) and only shown.
RUN_ID_KEY = metadata_key("run_id")
RUN_DOCUMENT_KEY = metadata_key("run_document")
HOW_KEY = metadata_key("how")
#: Who started the Extralt run: `dagster`, or `extralt` (its schedules or its dashboard).
ORIGIN_KEY = metadata_key("origin")
COLUMNS_ADDED_KEY = metadata_key("columns_added")
EXPORT_DAMAGE_KEY = metadata_key("export_damage")

__all__ = [
    "ALL_SOURCES_JOB",
    "COLUMNS_ADDED_KEY",
    "DEFAULT_GROUP",
    "DEFAULT_SCHEMA",
    "EXPORT_DAMAGE_KEY",
    "EXTERNAL_RUNS_SENSOR",
    "HOW_KEY",
    "IN_FLIGHT_STATUSES",
    "KEY_PREFIX",
    "MAINTENANCE_JOB",
    "MAINTENANCE_OP",
    "MAINTENANCE_SCHEDULE",
    "METADATA_PREFIX",
    "OBSERVED_RUN_TAG",
    "ORIGIN_KEY",
    "RUN_DOCUMENT_KEY",
    "RUN_ID_KEY",
    "RUN_POOL",
    "SCHEDULE_TAG",
    "SOURCE_TAG",
    "WAREHOUSE_POOL",
    "captures_asset_key",
    "captures_op_name",
    "create_sent_tag",
    "external_runs_sensor_name",
    "job_name",
    "metadata_key",
    "run_asset_key",
    "run_id_tag",
    "run_ids_tag",
    "run_op_name",
    "schedule_name",
]
