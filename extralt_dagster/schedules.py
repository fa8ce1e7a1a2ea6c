"""`build_extralt_schedule`: run one source's assets on a cron, at most once per tick.

Each tick carries a `run_key`, so the scheduler never launches the same tick twice (a daemon
restart mid-tick re-evaluates it), and a tick is skipped while an earlier run of the same source
is still queued or running: back-to-back runs would each spend credits on the same crawl.
"""

import functools
import re
from collections.abc import Sequence
from datetime import UTC
from typing import Any

import dagster as dg

from .api.errors import ExtraltValidationError
from .api.models import validate_budget, validate_identifier
from .naming import (
    IN_FLIGHT_STATUSES,
    SCHEDULE_TAG,
    SOURCE_TAG,
    captures_asset_key,
    job_name,
    run_asset_key,
    run_op_name,
    schedule_name,
)
from .spec import DEFAULT_TIMEZONE, SourceSpec, validate_cron, validate_timezone

_DAGSTER_NAME_RE = re.compile(r"^[A-Za-z0-9_]+$")
#: What `dg.define_asset_job` returns (`UnresolvedAssetJobDefinition`, not exported by dagster).
AssetJob = Any


def build_extralt_job(name: str) -> AssetJob:
    """The `extralt_<name>_job` asset job: the source's run and captures assets.

    One job object per name, so every schedule and loader of one source shares it (Dagster
    rejects two different jobs with the same name in one code location).
    """
    return _asset_job(validate_identifier(name, "name"))


def source_job(spec: SourceSpec) -> AssetJob:
    """The job of a checked spec: the same object `build_extralt_job` returns, unchecked."""
    return _asset_job(spec.name)


@functools.cache
def _asset_job(name: str) -> AssetJob:
    return dg.define_asset_job(
        job_name(name),
        selection=[run_asset_key(name), captures_asset_key(name)],
        description=f"Run Extralt source `{name}` and load its captures into DuckDB.",
        tags={SOURCE_TAG: name},
    )


def build_extralt_schedule(
    assets_or_name: Sequence[dg.AssetsDefinition] | str,
    cron_schedule: str,
    *,
    execution_timezone: str = DEFAULT_TIMEZONE,
    budget: int | None = None,
    default_status: dg.DefaultScheduleStatus = dg.DefaultScheduleStatus.STOPPED,
    name: str | None = None,
) -> dg.ScheduleDefinition:
    """A schedule that materializes `extralt/<source>/run` then `extralt/<source>/captures`.

    `assets_or_name` is what `build_extralt_assets` returned, or the source name. `budget`
    overrides the source's budget for scheduled runs only. Everything is checked here, so a
    bad cron or time zone fails at load time, not at 3 a.m.
    """
    source = _source_name(assets_or_name)
    validate_cron(cron_schedule, "cron_schedule")
    validate_timezone(execution_timezone, "execution_timezone")
    validate_budget(budget, "budget")
    if not isinstance(default_status, dg.DefaultScheduleStatus):
        raise ExtraltValidationError(
            f"default_status must be a dagster.DefaultScheduleStatus, got {default_status!r}."
        )
    sched_name = schedule_name(source) if name is None else name
    if not isinstance(sched_name, str) or not _DAGSTER_NAME_RE.fullmatch(sched_name):
        raise ExtraltValidationError(
            f"name must contain only letters, digits and underscores, got {sched_name!r}."
        )
    return _schedule(source, cron_schedule, execution_timezone, budget, default_status, sched_name)


def source_schedule(spec: SourceSpec) -> dg.ScheduleDefinition:
    """The schedule of a checked spec with a cron (a sources file's): nothing is checked again."""
    assert spec.cron is not None
    status = dg.DefaultScheduleStatus
    running = status.RUNNING if spec.schedule_running else status.STOPPED
    timezone = spec.timezone or DEFAULT_TIMEZONE
    return _schedule(spec.name, spec.cron, timezone, None, running, schedule_name(spec.name))


def _schedule(
    source: str,
    cron_schedule: str,
    execution_timezone: str,
    budget: int | None,
    default_status: dg.DefaultScheduleStatus,
    sched_name: str,
) -> dg.ScheduleDefinition:
    run_config = {"ops": {run_op_name(source): {"config": {"budget": budget}}}} if budget else {}
    tags = {SOURCE_TAG: source, SCHEDULE_TAG: sched_name}

    def _tick(context: dg.ScheduleEvaluationContext) -> dg.RunRequest | dg.SkipReason:
        when = context.scheduled_execution_time.astimezone(UTC).isoformat()
        if context.instance_ref is not None:
            busy = context.instance.get_runs(
                filters=dg.RunsFilter(tags={SOURCE_TAG: source}, statuses=IN_FLIGHT_STATUSES),
                limit=1,
            )
            if busy:
                return dg.SkipReason(
                    f"Skipped the {when} tick: Dagster run {busy[0].run_id} of Extralt source "
                    f"{source!r} is still {busy[0].status.value.lower()}; starting another would "
                    "pay for a second crawl."
                )
        return dg.RunRequest(run_key=f"{source}:{when}", run_config=run_config, tags=tags)

    return dg.ScheduleDefinition(
        name=sched_name,
        cron_schedule=cron_schedule,
        execution_timezone=execution_timezone,
        job=_asset_job(source),
        execution_fn=_tick,
        default_status=default_status,
        description=(
            f"Extralt source `{source}` on `{cron_schedule}` ({execution_timezone})"
            + (f" with budget {budget:,}" if budget else "")
            + ". One run per tick; a tick is skipped while the previous run is in flight."
        ),
        tags=tags,
    )


def _source_name(assets_or_name: Sequence[dg.AssetsDefinition] | str) -> str:
    if isinstance(assets_or_name, str):
        return validate_identifier(assets_or_name, "assets_or_name")
    items = assets_or_name if isinstance(assets_or_name, Sequence) else ()
    keys = [key for a in items for key in getattr(a, "keys", ())]
    for key in keys:
        path = key.path
        if len(path) == 3 and key == run_asset_key(path[1]):
            name = path[1]
            if captures_asset_key(name) not in keys:
                break
            return name
    raise ExtraltValidationError(
        "assets_or_name must be the list build_extralt_assets returned (with both the "
        "extralt/<name>/run and extralt/<name>/captures assets) or a source name, got "
        f"{[k.to_user_string() for k in keys] or assets_or_name!r}."
    )


__all__ = [
    "build_extralt_job",
    "build_extralt_schedule",
    "source_job",
    "source_schedule",
    "validate_cron",
    "validate_timezone",
]
