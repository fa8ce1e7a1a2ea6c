"""`build_extralt_schedule`: run one source's assets on a cron, at most once per tick.

Each tick carries a `run_key`, so the scheduler never launches the same tick twice (a daemon
restart mid-tick re-evaluates it), and a tick is skipped while an earlier run of the same source
is still queued or running: back-to-back runs would each spend credits on the same crawl.
"""

import functools
import re
import warnings
from collections.abc import Sequence
from datetime import UTC
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import dagster as dg

from .api.errors import ExtraltValidationError
from .api.models import validate_budget, validate_identifier
from .naming import KEY_PREFIX, captures_asset_key, run_asset_key

SOURCE_TAG = "extralt/source"
SCHEDULE_TAG = "extralt/schedule"
_DAGSTER_NAME_RE = re.compile(r"^[A-Za-z0-9_]+$")
#: What `dg.define_asset_job` returns (`UnresolvedAssetJobDefinition`, not exported by dagster).
AssetJob = Any
_IN_FLIGHT = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
    dg.DagsterRunStatus.CANCELING,
]


def job_name(name: str) -> str:
    return f"extralt_{name}_job"


def schedule_name(name: str) -> str:
    return f"extralt_{name}_schedule"


def run_op_name(name: str) -> str:
    """The `run` asset's op name: where run config for that asset goes."""
    return f"{KEY_PREFIX}__{name}__run"


@functools.cache
def build_extralt_job(name: str) -> AssetJob:
    """The `extralt_<name>_job` asset job: the source's run and captures assets.

    Cached per name, so every schedule and loader of one source shares one job object
    (Dagster rejects two different jobs with the same name in one code location).
    """
    validate_identifier(name, "name")
    return dg.define_asset_job(
        job_name(name),
        selection=[run_asset_key(name), captures_asset_key(name)],
        description=f"Run Extralt source `{name}` and load its captures into DuckDB.",
        tags={SOURCE_TAG: name},
    )


#: (name, lowest, highest) of each cron field, in order. Day-of-week 0 and 7 are both Sunday.
_CRON_FIELDS = (
    ("minute", 0, 59),
    ("hour", 0, 23),
    ("day-of-month", 1, 31),
    ("month", 1, 12),
    ("day-of-week", 0, 7),
)
_CRON_SHAPE = "minute hour day-of-month month day-of-week"


def validate_cron(value: object, field_name: str = "cron_schedule") -> str:
    """A standard 5-field cron expression, as Dagster's scheduler accepts it."""
    if isinstance(value, str) and value.strip():
        if _dagster_accepts(value):
            return value
        fields = value.split()
        if len(fields) == 5 and not value.startswith("@"):
            raise ExtraltValidationError(
                f"{field_name} {value!r} is not a valid cron expression: "
                f"{_cron_field_problems(fields)}. The 5 fields are {_CRON_SHAPE}, "
                "e.g. '0 3 * * *' for 03:00 every day."
            )
        count = f" ({len(fields)} field{'s' if len(fields) != 1 else ''})"
    else:
        count = ""
    raise ExtraltValidationError(
        f"{field_name} must be a 5-field cron expression such as '0 3 * * *' "
        f"({_CRON_SHAPE}) or @hourly, @daily, @weekly, @monthly; got {value!r}{count}."
    )


def _dagster_accepts(cron: str) -> bool:
    # Dagster's own check, so we accept exactly what its scheduler accepts.
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. "*/61": accepted, with a warning of its own
            dg.ScheduleDefinition(name="extralt_cron_check", cron_schedule=cron, job_name="x")
    except dg.DagsterInvalidDefinitionError:
        return False
    return True


def _cron_field_problems(fields: list[str]) -> str:
    """'minute 61 is out of range (0-59); hour 25 is out of range (0-23)'."""

    def probe(index: int, item: str) -> bool:
        return _dagster_accepts(" ".join(item if i == index else "*" for i in range(5)))

    problems = []
    for index, (label, low, high) in enumerate(_CRON_FIELDS):
        if probe(index, fields[index]):
            continue
        items = fields[index].split(",")
        for item in [i for i in items if not probe(index, i)] or [fields[index]]:
            out = [n for n in map(int, re.findall(r"\d+", item)) if not low <= n <= high]
            if out:
                problems.append(f"{label} {out[0]} is out of range ({low}-{high})")
            else:
                problems.append(
                    f"{label} {item!r} is not valid (use *, a number {low}-{high}, a range "
                    "such as 1-5, a list such as 1,15 or a step such as */15)"
                )
    # Each field is fine alone: the combination never occurs, e.g. "0 3 30 2 *".
    never = f"day-of-month {fields[2]} never occurs in month {fields[3]}"
    return "; ".join(problems) or never


def validate_timezone(value: object, field_name: str = "execution_timezone") -> str:
    """An IANA time zone name such as 'UTC' or 'Europe/Paris'."""
    if isinstance(value, str) and value.strip():
        try:
            ZoneInfo(value)
            return value
        except (ZoneInfoNotFoundError, ValueError):
            pass
    raise ExtraltValidationError(
        f"{field_name} must be an IANA time zone name such as 'UTC' or 'Europe/Paris', "
        f"got {value!r}."
    )


def build_extralt_schedule(
    assets_or_name: Sequence[dg.AssetsDefinition] | str,
    cron_schedule: str,
    *,
    execution_timezone: str = "UTC",
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
    run_config = {"ops": {run_op_name(source): {"config": {"budget": budget}}}} if budget else {}
    tags = {SOURCE_TAG: source, SCHEDULE_TAG: sched_name}

    def _tick(context: dg.ScheduleEvaluationContext) -> dg.RunRequest | dg.SkipReason:
        when = context.scheduled_execution_time.astimezone(UTC).isoformat()
        if context.instance_ref is not None:
            busy = context.instance.get_runs(
                filters=dg.RunsFilter(tags={SOURCE_TAG: source}, statuses=_IN_FLIGHT), limit=1
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
        job=build_extralt_job(source),
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
        if len(path) == 3 and path[0] == KEY_PREFIX and path[2] == "run":
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
    "validate_cron",
    "validate_timezone",
]
