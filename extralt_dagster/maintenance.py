"""The `extralt_lake_maintenance` job and its schedule: `warehouse.maintenance` on the lake
under the `duckdb` resource key, once per tick, off until someone turns it on.

`load_extralt_definitions` (and the Component) define both when the warehouse is a DuckLake,
and neither for a DuckDB file (`warehouse.maintenance` says why). In Python:

    defs = dg.Definitions(
        assets=build_extralt_assets("shoes", "rbt_shoes"),
        jobs=[build_extralt_maintenance_job()],
        schedules=[build_extralt_maintenance_schedule("0 4 * * 0")],
        resources={"extralt": ..., "duckdb": DuckLakeResource(...)},
    )

No `from __future__ import annotations` here: Dagster must resolve the `dg.Config` class.
"""

import functools
from datetime import UTC
from typing import Any

import dagster as dg
from pydantic import Field

from . import warehouse
from .api.errors import ExtraltValidationError
from .lake import warehouse_at
from .naming import (
    IN_FLIGHT_STATUSES,
    MAINTENANCE_JOB,
    MAINTENANCE_OP,
    MAINTENANCE_SCHEDULE,
    SCHEDULE_TAG,
    WAREHOUSE_POOL,
    metadata_key,
)
from .spec import (
    DEFAULT_MAINTENANCE_CRON,
    DEFAULT_TIMEZONE,
    MaintenanceSpec,
    validate_cron,
    validate_timezone,
)
from .warehouse.maintenance import (
    DEFAULT_DELETE_FILES_OLDER_THAN,
    DEFAULT_EXPIRE_SNAPSHOTS_OLDER_THAN,
    MaintenancePolicy,
    MaintenanceResult,
    maintain,
)

_TAGS = {"extralt/maintenance": "lake"}


class ExtraltMaintenanceConfig(dg.Config):
    expire_snapshots_older_than: str = Field(
        default=DEFAULT_EXPIRE_SNAPSHOTS_OLDER_THAN,
        description="Snapshots older than this expire: time travel to them stops working "
        "('7 days', '12 hours', '30m'). The newest snapshot always stays.",
    )
    delete_files_older_than: str = Field(
        default=DEFAULT_DELETE_FILES_OLDER_THAN,
        description="Files the lake no longer uses (merged away, of expired snapshots, or "
        "orphaned by a killed load) are deleted once this old. Keep it longer than any load "
        "and any reader's query: a running load's files are not in the catalog yet.",
    )


def maintenance_metadata(result: MaintenanceResult) -> dict[str, Any]:
    """The run's figures under `extralt/...` keys."""
    values: dict[str, Any] = {
        "files_merged": result.files_merged,
        "files_written": result.files_written,
        "snapshots_expired": result.snapshots_expired,
        "oldest_snapshot": result.oldest_snapshot,
        "files_deleted": result.files_deleted,
        "orphans_deleted": result.orphans_deleted,
        "bytes_freed": result.bytes_freed,
        "live_files_before": result.live_files_before,
        "live_files_after": result.live_files_after,
        "seconds": dg.MetadataValue.float(round(result.seconds, 3)),
        "merged_by_table": dg.MetadataValue.json(dict(result.merged_by_table)),
    }
    return {metadata_key(k): v for k, v in values.items()}


def _policy(expire: str, delete: str, prefix: str) -> MaintenancePolicy:
    try:
        return MaintenancePolicy.parse(expire, delete, prefix=prefix)
    except warehouse.WarehouseError as exc:
        raise ExtraltValidationError(str(exc)) from None


def build_extralt_maintenance_job(
    *,
    expire_snapshots_older_than: str = DEFAULT_EXPIRE_SNAPSHOTS_OLDER_THAN,
    delete_files_older_than: str = DEFAULT_DELETE_FILES_OLDER_THAN,
    pool: str | None = WAREHOUSE_POOL,
) -> dg.JobDefinition:
    """The `extralt_lake_maintenance` job: merge, expire and delete on the `duckdb` lake.

    The ages are the job's default config (the Launchpad can change them per run), checked
    here. It shares the loads' pool (`duckdb`): with a SQLite catalog, one writer at a time.
    """
    _policy(expire_snapshots_older_than, delete_files_older_than, "")
    return _job(expire_snapshots_older_than, delete_files_older_than, pool)


@functools.cache
def _job(expire: str, delete: str, pool: str | None) -> dg.JobDefinition:
    @dg.op(
        name=MAINTENANCE_OP,
        pool=pool,
        description="Expire old snapshots, merge small files, delete unused and orphaned "
        "files of the DuckLake under the `duckdb` resource.",
    )
    def _maintain(
        context: dg.OpExecutionContext,
        config: ExtraltMaintenanceConfig,
        # A DuckLakeResource (a DuckDBResource fails: a file has nothing to maintain).
        duckdb: dg.ResourceParam[Any],
    ) -> dg.Output[None]:
        policy = _config_policy(config)
        where = warehouse_at(duckdb)
        if not where.is_lake:
            raise dg.Failure(
                description=f"{MAINTENANCE_JOB} is for a DuckLake; the `duckdb` resource is the "
                f"DuckDB file {where.name!r}, which has no snapshots or orphaned files and "
                "reuses its freed space itself. Nothing was changed.",
                allow_retries=False,
            )
        try:
            with warehouse.connect(where.database, config=where.config) as conn:
                result = maintain(conn, policy)
        except warehouse.WarehouseError as exc:
            raise dg.Failure(description=str(exc), allow_retries=exc.retryable) from None
        context.log.info(
            f"Lake {where.name}: {result.files_merged} files merged into {result.files_written}, "
            f"{result.snapshots_expired} snapshots expired (time travel reaches back to "
            f"snapshot {result.oldest_snapshot}), {result.files_deleted} files deleted "
            f"({result.orphans_deleted} orphaned), {result.bytes_freed:,} bytes freed."
        )
        return dg.Output(None, metadata=maintenance_metadata(result))

    @dg.job(
        name=MAINTENANCE_JOB,
        description="Maintenance of the DuckLake warehouse: expire snapshots, merge small "
        "files, delete unused and orphaned files.",
        config={
            "ops": {
                MAINTENANCE_OP: {
                    "config": {
                        "expire_snapshots_older_than": expire,
                        "delete_files_older_than": delete,
                    }
                }
            }
        },
        tags=_TAGS,
    )
    def _maintenance() -> None:
        _maintain()

    return _maintenance


def _config_policy(config: ExtraltMaintenanceConfig) -> MaintenancePolicy:
    try:
        return _policy(
            config.expire_snapshots_older_than, config.delete_files_older_than, "config."
        )
    except ExtraltValidationError as exc:
        raise dg.Failure(description=f"{exc} Nothing was changed.", allow_retries=False) from None


def build_extralt_maintenance_schedule(
    cron_schedule: str = DEFAULT_MAINTENANCE_CRON,
    *,
    execution_timezone: str = DEFAULT_TIMEZONE,
    default_status: dg.DefaultScheduleStatus = dg.DefaultScheduleStatus.STOPPED,
    expire_snapshots_older_than: str = DEFAULT_EXPIRE_SNAPSHOTS_OLDER_THAN,
    delete_files_older_than: str = DEFAULT_DELETE_FILES_OLDER_THAN,
    pool: str | None = WAREHOUSE_POOL,
) -> dg.ScheduleDefinition:
    """`extralt_lake_maintenance_schedule`: the maintenance job on a cron, STOPPED unless
    `default_status` says otherwise. A tick is skipped while an earlier maintenance run is in
    flight. Everything is checked here, at definition time."""
    validate_cron(cron_schedule, "cron_schedule")
    validate_timezone(execution_timezone, "execution_timezone")
    if not isinstance(default_status, dg.DefaultScheduleStatus):
        raise ExtraltValidationError(
            f"default_status must be a dagster.DefaultScheduleStatus, got {default_status!r}."
        )
    job = build_extralt_maintenance_job(
        expire_snapshots_older_than=expire_snapshots_older_than,
        delete_files_older_than=delete_files_older_than,
        pool=pool,
    )
    tags = {**_TAGS, SCHEDULE_TAG: MAINTENANCE_SCHEDULE}

    def _tick(context: dg.ScheduleEvaluationContext) -> dg.RunRequest | dg.SkipReason:
        when = context.scheduled_execution_time.astimezone(UTC).isoformat()
        if context.instance_ref is not None:
            busy = context.instance.get_runs(
                filters=dg.RunsFilter(job_name=MAINTENANCE_JOB, statuses=IN_FLIGHT_STATUSES),
                limit=1,
            )
            if busy:
                return dg.SkipReason(
                    f"Skipped the {when} tick: maintenance run {busy[0].run_id} is still "
                    f"{busy[0].status.value.lower()}."
                )
        return dg.RunRequest(run_key=f"{MAINTENANCE_JOB}:{when}", tags=tags)

    return dg.ScheduleDefinition(
        name=MAINTENANCE_SCHEDULE,
        cron_schedule=cron_schedule,
        execution_timezone=execution_timezone,
        job=job,
        execution_fn=_tick,
        default_status=default_status,
        description=f"Lake maintenance on `{cron_schedule}` ({execution_timezone}): snapshots "
        f"older than {expire_snapshots_older_than} expire, unused files older than "
        f"{delete_files_older_than} are deleted.",
        tags=tags,
    )


def maintenance_definitions(
    spec: MaintenanceSpec | None, timezone: str = DEFAULT_TIMEZONE
) -> tuple[dg.JobDefinition, dg.ScheduleDefinition]:
    """The job and schedule of a checked sources file's `maintenance:` (defaults without one);
    `timezone` is the file's, for a section that sets none."""
    spec = spec or MaintenanceSpec()
    status = dg.DefaultScheduleStatus
    schedule = build_extralt_maintenance_schedule(
        spec.cron,
        execution_timezone=spec.timezone or timezone,
        default_status=status.RUNNING if spec.schedule_running else status.STOPPED,
        expire_snapshots_older_than=spec.expire_snapshots_older_than,
        delete_files_older_than=spec.delete_files_older_than,
    )
    return schedule.job, schedule


__all__ = [
    "DEFAULT_MAINTENANCE_CRON",
    "ExtraltMaintenanceConfig",
    "build_extralt_maintenance_job",
    "build_extralt_maintenance_schedule",
    "maintenance_definitions",
    "maintenance_metadata",
]
