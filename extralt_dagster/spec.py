"""One source's settings, checked once where they enter; every layer below trusts them.

They enter three ways, each checked once, by the same per-field checks (`check_fields`):

- a sources file or a Component's attributes: `ExtraltSources.model_validate` (pydantic,
  strict), every problem at once; then `SourceSpec.with_defaults` fills in `defaults`;
- the keywords of `build_extralt_assets`: `SourceSpec.from_keywords`, which raises the first
  `ExtraltValidationError`;
- a run's config (Launchpad, schedule): `SourceSpec.overridden`, the one way to change a spec,
  which checks only the fields it changes and returns a new spec.

`SourceSpec` (fields, stable; the YAML names, `schema_` is written `schema`):
    name, robot_id, start_urls, budget, auto_enrich: the source and what to ask of its robot;
    cron, timezone, schedule_running: its schedule; group, owners, tags: its assets;
    poll_timeout_seconds: the run asset's wait; export_format, schema_, lock_timeout_seconds,
    history_retention: the load (also in `LoadOptions`); observe_external_runs,
    observe_interval_seconds: the sensor of runs started outside Dagster.
`LoadOptions` (fields, stable): what the captures asset needs to load one source's export:
    schema, export_format, lock_timeout_seconds, null_price_warn_ratio, duckdb_memory_limit,
    preserve_insertion_order, export_dir, history_retention. Made by `SourceSpec.load_options` (the Python-only
    ones from `build_extralt_assets`' keywords, checked there).
`MaintenanceSpec` (fields, stable): a sources file's `maintenance:` (a DuckLake's maintenance job):
    cron, timezone, schedule_running, expire_snapshots_older_than, delete_files_older_than.

No `from __future__ import annotations` here: the component derives its schema from these models.
"""

import re
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import dagster as dg
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from .api.errors import ExtraltValidationError
from .api.models import (
    EXPORT_FORMATS,
    ExportFormatName,
    validate_budget,
    validate_identifier,
    validate_robot_id,
    validate_start_urls,
)
from .naming import DEFAULT_GROUP, DEFAULT_SCHEMA
from .warehouse import HistoryRetention, WarehouseError
from .warehouse.maintenance import (
    DEFAULT_DELETE_FILES_OLDER_THAN,
    DEFAULT_EXPIRE_SNAPSHOTS_OLDER_THAN,
    parse_duration,
)

DEFAULT_LOCK_TIMEOUT_SECONDS = 60.0
DEFAULT_NULL_PRICE_WARN_RATIO = 0.05
DEFAULT_TIMEZONE = "UTC"
#: Lake maintenance: Sundays at 04:00, after the nightly loads, once a week.
DEFAULT_MAINTENANCE_CRON = "0 4 * * 0"
#: The external-runs sensor: a tick every 2 minutes, of at most 5 pages of the run list (about
#: 2.5 requests a minute at most, of the API's 120).
DEFAULT_OBSERVE_INTERVAL_SECONDS = 120
DEFAULT_OBSERVE_PAGES_PER_TICK = 5
#: The calendar periods a credit cap counts over, in the source's time zone (weeks start Monday).
CreditPeriod = Literal["day", "week", "month"]
CREDIT_PERIODS: tuple[str, ...] = ("day", "week", "month")
#: Bounds of a tick's interval: the daemon ticks sensors every 30 s at best; a day at most.
OBSERVE_INTERVAL_RANGE = (30, 86_400)
OBSERVE_PAGES_RANGE = (1, 100)
_GROUP_RE = re.compile(r"^[A-Za-z0-9_]+$")
_EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


# --- The checks, one per field ----------------------------------------------------------------

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


def _lock_timeout(v: float, label: str) -> float:
    if not 0 <= v < float("inf"):
        raise ExtraltValidationError(
            f"{label} must be a number of seconds, 0 or more (0: fail at once "
            f"when another process holds the DuckDB file), got {v!r}."
        )
    return v


def _poll_timeout(v: float, label: str) -> float:
    if v <= 0:
        raise ExtraltValidationError(f"{label} must be a positive number of seconds, got {v!r}.")
    return v


def _group(v: str, label: str) -> str:
    if not _GROUP_RE.fullmatch(v):
        raise ExtraltValidationError(
            f"{label} must contain only letters, digits and underscores, got {v!r}."
        )
    return v


def _owners(v: list[str], label: str) -> list[str]:
    for i, owner in enumerate(v):
        is_team = owner.startswith("team:") and len(owner) > len("team:")
        if not is_team and not _EMAIL_RE.fullmatch(owner):
            raise ExtraltValidationError(
                f"{label}[{i}] must be an email address or 'team:<name>', got {owner!r}."
            )
    return v


def _export_format(v: object, label: str) -> ExportFormatName:
    if v not in EXPORT_FORMATS:
        raise ExtraltValidationError(
            f"{label} must be {' or '.join(map(repr, EXPORT_FORMATS))}, got {v!r}."
        )
    return v  # type: ignore[return-value]


def _history_retention(v: object, label: str) -> str:
    """'30 runs' or '90 days': parsed here so a typo fails at definition time."""
    try:
        HistoryRetention.parse(v, label)  # type: ignore[arg-type]
    except WarehouseError as exc:
        raise ExtraltValidationError(str(exc)) from None
    return v  # type: ignore[return-value]


def _duration(v: object, label: str) -> str:
    """'7 days', '12 hours', '30m': parsed here so a typo fails at definition time."""
    try:
        parse_duration(v, label)
    except WarehouseError as exc:
        raise ExtraltValidationError(str(exc)) from None
    return v  # type: ignore[return-value]


def _bool(v: object, label: str) -> bool:
    if not isinstance(v, bool):
        raise ExtraltValidationError(f"{label} must be true or false, got {v!r}.")
    return v


def _whole_in(bounds: tuple[int, int], unit: str) -> Callable[[object, str], int]:
    low, high = bounds

    def check(v: object, label: str) -> int:
        if isinstance(v, bool) or not isinstance(v, int) or not low <= v <= high:
            raise ExtraltValidationError(
                f"{label} must be a whole number of {unit} from {low:,} to {high:,}, got {v!r}."
            )
        return v

    return check


def _positive_credits(v: object, label: str) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        raise ExtraltValidationError(
            f"{label} must be a whole number of credits, 1 or more (2 credits a capture), "
            f"got {v!r}."
        )
    return v


def _period(v: object, label: str) -> str:
    if v not in CREDIT_PERIODS:
        raise ExtraltValidationError(
            f"{label} must be {', '.join(map(repr, CREDIT_PERIODS))} (a calendar period in the "
            f"source's time zone), got {v!r}."
        )
    return v  # type: ignore[return-value]


def _credit_limit(v: object, label: str) -> "CreditLimit":
    """A `CreditLimit`, or a mapping `{"credits": 20000, "per": "month"}` (Python keywords)."""
    if isinstance(v, CreditLimit):
        return v
    if not isinstance(v, Mapping):
        raise ExtraltValidationError(
            f"{label} must be a mapping such as {{'credits': 20000, 'per': 'month'}}, got {v!r}."
        )
    unknown = sorted(set(v) - {"credits", "per"})
    if unknown or {"credits", "per"} - set(v):
        raise ExtraltValidationError(
            f"{label} takes exactly 'credits' and 'per' (day, week or month), got {sorted(v)!r}."
        )
    checked = check_fields(dict(v), prefix=f"{label}.")
    return CreditLimit.model_construct(**checked)


def _freshness(v: object, label: str) -> str:
    """'auto', 'off', or a duration such as '26 hours' (the fail window)."""
    if v in ("auto", "off"):
        return v  # type: ignore[return-value]
    try:
        parse_duration(v, label)
    except WarehouseError:
        raise ExtraltValidationError(
            f"{label} must be 'auto' (from the cron), 'off', or a duration such as '26 hours' "
            f"or '90m' (how old the last load may be), got {v!r}."
        ) from None
    return v  # type: ignore[return-value]


def _warn_ratio(v: float, label: str) -> float:
    if not 0 <= v <= 1:
        raise ExtraltValidationError(f"{label} must be between 0 and 1, got {v!r}.")
    return v


#: The check of each field (by attribute name); a check gets the value and the name to report.
_CHECKS: dict[str, Callable[[Any, str], Any]] = {
    "name": validate_identifier,
    "schema_": validate_identifier,
    "robot_id": validate_robot_id,
    "start_urls": validate_start_urls,
    "budget": validate_budget,
    "auto_enrich": _bool,
    "observe_external_runs": _bool,
    "observe_interval_seconds": _whole_in(OBSERVE_INTERVAL_RANGE, "seconds"),
    "observe_pages_per_tick": _whole_in(OBSERVE_PAGES_RANGE, "pages"),
    "poll_timeout_seconds": _poll_timeout,
    "export_format": _export_format,
    "lock_timeout_seconds": _lock_timeout,
    "null_price_warn_ratio": _warn_ratio,
    "history_retention": _history_retention,
    "credit_limit": _credit_limit,
    "location_credit_limit": _credit_limit,
    "freshness": _freshness,
    "cron": validate_cron,
    "timezone": validate_timezone,
    "group": _group,
    "owners": _owners,
    "expire_snapshots_older_than": _duration,
    "credits": _positive_credits,
    "per": _period,
    "delete_files_older_than": _duration,
}


#: The fields where None means "unset" and passes; a None name, robot or schema is a mistake.
_NONE_IS_UNSET = frozenset(
    {"start_urls", "budget", "poll_timeout_seconds", "lock_timeout_seconds", "cron", "timezone"}
    | {"group", "owners", "history_retention"}
    | {"observe_external_runs", "observe_interval_seconds", "credit_limit", "freshness"}
)


def check_fields(values: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Each value through its field's check, in order.

    Raises the first `ExtraltValidationError`, naming the field as `prefix` + its YAML name
    (`config.budget`, `schema`)."""
    checked = {}
    for field_name, value in values.items():
        check = _CHECKS.get(field_name)
        unset = value is None and field_name in _NONE_IS_UNSET
        label = prefix + field_name.rstrip("_")
        checked[field_name] = value if unset or check is None else check(value, label)
    return checked


# --- The models ---------------------------------------------------------------------------------


class _Strict(BaseModel):
    # strict: `budget: "200"` is a mistake to report, not a string to coerce.
    model_config = ConfigDict(extra="forbid", strict=True)

    @field_validator("*")
    @classmethod
    def _check(cls, v: Any, info: ValidationInfo) -> Any:
        # A None got here through the field's type: an optional field left unset.
        assert info.field_name is not None
        return v if v is None else check_fields({info.field_name: v})[info.field_name]


class CreditLimit(_Strict):
    """The most credits a source (or a code location's sources together) may spend in a
    calendar period: runs that could pass it are refused before they are created."""

    credits: int = Field(description="The most credits in one period (2 per capture).")
    per: CreditPeriod = Field(description="day, week or month, in the source's time zone.")


class SourceDefaults(_Strict):
    """Settings applied to every source unless the source sets its own."""

    schema_: str = Field(
        default=DEFAULT_SCHEMA,
        alias="schema",
        description="DuckDB schema of every source that sets none.",
    )
    group: str | None = Field(default=DEFAULT_GROUP, description="Dagster asset group.")
    timezone: str = Field(
        default=DEFAULT_TIMEZONE, description="Time zone of the sources' cron schedules."
    )
    lock_timeout_seconds: float = Field(
        default=DEFAULT_LOCK_TIMEOUT_SECONDS,
        description="How long a load waits for another process to release the DuckDB file.",
    )
    observe_external_runs: bool = Field(
        default=False,
        description="Watch every source's robot for runs started outside Dagster (Extralt "
        "schedules, its dashboard) and load each completed one once; no credits are spent.",
    )
    observe_interval_seconds: int = Field(
        default=DEFAULT_OBSERVE_INTERVAL_SECONDS,
        description="Seconds between two ticks of the external-runs sensor (30 to 86400).",
    )
    credit_limit: CreditLimit | None = Field(
        default=None,
        description="The cap of every source that sets none, e.g. {credits: 20000, per: month}.",
    )
    observe_pages_per_tick: int = Field(
        default=DEFAULT_OBSERVE_PAGES_PER_TICK,
        description="The most pages of the run list one sensor tick requests (1 to 100); the "
        "rest of the list waits for the next tick.",
    )


@dataclass(frozen=True)
class LoadOptions:
    """How the captures asset loads one source: made from a checked spec, never re-checked."""

    schema: str = DEFAULT_SCHEMA
    export_format: ExportFormatName = "parquet"
    lock_timeout_seconds: float = DEFAULT_LOCK_TIMEOUT_SECONDS
    null_price_warn_ratio: float = DEFAULT_NULL_PRICE_WARN_RATIO
    duckdb_memory_limit: str | None = None
    preserve_insertion_order: bool = False
    export_dir: str | None = None
    history_retention: HistoryRetention | None = None


class SourceSpec(_Strict):
    """One Extralt source: a robot, what to ask of it, and when."""

    name: str = Field(description="Asset key part and table prefix: [a-z][a-z0-9_]*, unique.")
    robot_id: str = Field(description="The Extralt robot, e.g. rbt_abc123.")
    start_urls: list[str] | None = Field(
        default=None, description="Absolute http(s) URLs; omit to use the robot's entry points."
    )
    budget: int | None = Field(default=None, description="Most captures per run (2 credits each).")
    auto_enrich: bool = Field(default=False, description="Run enrichment after the run.")
    cron: str | None = Field(default=None, description="5-field cron; no cron, no schedule.")
    timezone: str | None = Field(default=None, description="Cron time zone (default: defaults).")
    owners: list[str] | None = Field(default=None, description="e.g. team:data or a@b.com.")
    tags: dict[str, str] | None = Field(default=None, description="Asset tags.")
    group: str | None = Field(default=None, description="Asset group (default: defaults).")
    schedule_running: bool = Field(
        default=False, description="Start the schedule running; by default it starts stopped."
    )
    poll_timeout_seconds: float | None = Field(
        default=None, description="Give up waiting for a run after this many seconds."
    )
    export_format: ExportFormatName = Field(default="parquet", description="Export to load.")
    schema_: str | None = Field(
        default=None,
        alias="schema",
        description="DuckDB schema of this source's tables (default: defaults, else extralt).",
    )
    lock_timeout_seconds: float | None = Field(
        default=None,
        description="How long this source's load waits for the DuckDB file's lock "
        "(default: defaults, else 60).",
    )
    history_retention: str | None = Field(
        default=None,
        description="Keep only the last N runs ('30 runs') or days ('90 days') of this "
        "source's history, dropped in each load's transaction; unset keeps all history.",
    )
    freshness: str | None = Field(
        default=None,
        description="When the captures turn stale: 'auto' (the default with a cron: its "
        "longest interval plus the poll timeout), a duration such as '26 hours', or 'off'.",
    )
    credit_limit: CreditLimit | None = Field(
        default=None,
        description="Refuse a run that could take this source past this many credits in a "
        "calendar period, e.g. {credits: 20000, per: month}; needs a budget.",
    )
    observe_external_runs: bool | None = Field(
        default=None,
        description="Load this robot's runs started outside Dagster (Extralt schedules, its "
        "dashboard), each completed one once, with no credits (default: defaults, else false).",
    )
    observe_interval_seconds: int | None = Field(
        default=None,
        description="Seconds between the external-runs sensor's ticks for this source "
        "(default: defaults, else 120).",
    )

    @classmethod
    def from_keywords(cls, **fields: Any) -> "SourceSpec":
        """A spec from Python values (`build_extralt_assets`): each given field checked once.

        Group, owners and tags are Dagster's own asset fields: Dagster checks them."""
        unchecked = {k: fields.pop(k) for k in ("group", "owners", "tags") if k in fields}
        return cls.model_construct(**check_fields(fields), **unchecked)

    def overridden(self, changes: Mapping[str, Any], *, prefix: str = "") -> "SourceSpec":
        """A new spec with `changes` (e.g. a run's config) checked and applied; this one stays."""
        return self.model_copy(update=check_fields(changes, prefix))

    def with_defaults(self, defaults: SourceDefaults) -> "SourceSpec":
        """This source with the file's `defaults` filled in where it sets nothing."""
        lock = self.lock_timeout_seconds
        observe = self.observe_external_runs
        return self.model_copy(
            update={
                "schema_": self.schema_ or defaults.schema_,
                "group": self.group or defaults.group,
                "timezone": self.timezone or defaults.timezone,
                "lock_timeout_seconds": defaults.lock_timeout_seconds if lock is None else lock,
                "observe_external_runs": defaults.observe_external_runs
                if observe is None
                else observe,
                "observe_interval_seconds": self.observe_interval_seconds
                or defaults.observe_interval_seconds,
                "credit_limit": self.credit_limit or defaults.credit_limit,
            }
        )

    def load_options(
        self,
        *,
        null_price_warn_ratio: float = DEFAULT_NULL_PRICE_WARN_RATIO,
        duckdb_memory_limit: str | None = None,
        preserve_insertion_order: bool = False,
        export_dir: str | None = None,
    ) -> LoadOptions:
        """The load part of this spec, plus the Python-only load settings (checked here)."""
        check_fields({"null_price_warn_ratio": null_price_warn_ratio})
        lock = self.lock_timeout_seconds
        return LoadOptions(
            schema=self.schema_ or DEFAULT_SCHEMA,
            export_format=self.export_format,
            lock_timeout_seconds=DEFAULT_LOCK_TIMEOUT_SECONDS if lock is None else lock,
            null_price_warn_ratio=null_price_warn_ratio,
            duckdb_memory_limit=duckdb_memory_limit,
            preserve_insertion_order=preserve_insertion_order,
            export_dir=export_dir,
            history_retention=(
                HistoryRetention.parse(self.history_retention) if self.history_retention else None
            ),
        )


class MaintenanceSpec(_Strict):
    """Lake maintenance (a DuckLake warehouse only): when it runs, and how old a snapshot or
    an unused file must be to go."""

    cron: str = Field(
        default=DEFAULT_MAINTENANCE_CRON, description="5-field cron (default Sundays 04:00)."
    )
    timezone: str | None = Field(default=None, description="Cron time zone (default: defaults).")
    schedule_running: bool = Field(
        default=False, description="Start the schedule running; by default it starts stopped."
    )
    expire_snapshots_older_than: str = Field(
        default=DEFAULT_EXPIRE_SNAPSHOTS_OLDER_THAN,
        description="Snapshots older than this expire (time travel to them stops), e.g. '7 days'.",
    )
    delete_files_older_than: str = Field(
        default=DEFAULT_DELETE_FILES_OLDER_THAN,
        description="Unused and orphaned files are deleted once this old, e.g. '1 day': longer "
        "than any load.",
    )


class ExtraltSources(_Strict):
    """The whole schema: shared by the YAML file and `ExtraltComponent`."""

    defaults: SourceDefaults | None = Field(
        default=None, description="Settings applied to every source."
    )
    maintenance: MaintenanceSpec | None = Field(
        default=None,
        description="Lake maintenance's schedule and ages (a DuckLake warehouse only).",
    )
    location_credit_limit: CreditLimit | None = Field(
        default=None,
        description="The most credits all these sources together may spend in a calendar "
        "period (in defaults.timezone), e.g. {credits: 60000, per: month}; every source "
        "needs a budget. Each source's own credit_limit applies too.",
    )
    sources: list[SourceSpec] = Field(min_length=1, description="The sources, one per robot run.")

    @field_validator("sources")
    @classmethod
    def _unique_names(cls, v: list[SourceSpec]) -> list[SourceSpec]:
        first: dict[str, int] = {}
        for i, source in enumerate(v):
            if source.name in first:
                raise DuplicateNameError(i, source.name, first[source.name])
            first[source.name] = i
        return v


class DuplicateNameError(ValueError):
    """Two sources share a name; `index` is the second one's."""

    def __init__(self, index: int, name: str, first: int) -> None:
        super().__init__(
            f"sources[{index}] reuses the name {name!r} of sources[{first}]; names must be "
            "unique (they become asset keys and table names). Rename one of them."
        )
        self.index = index


__all__ = [
    "CREDIT_PERIODS",
    "DEFAULT_LOCK_TIMEOUT_SECONDS",
    "DEFAULT_OBSERVE_INTERVAL_SECONDS",
    "DEFAULT_OBSERVE_PAGES_PER_TICK",
    "CreditLimit",
    "ExtraltSources",
    "LoadOptions",
    "MaintenanceSpec",
    "SourceDefaults",
    "SourceSpec",
    "check_fields",
    "validate_cron",
    "validate_timezone",
]
