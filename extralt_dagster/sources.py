"""Declare Extralt sources in YAML: `load_extralt_definitions("sources.yaml")`.

The file is checked completely at load time, before Dagster sees a definition: every problem
is reported with the file, the line, the source and the field, so a typo fails
`dagster definitions validate` instead of a 3 a.m. run, and never costs an API call. The
models and their checks live in `spec.py`; this module reads the file and words the errors.
"""

import difflib
import logging
import os
import reprlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import dagster as dg
import yaml
from dagster_duckdb import DuckDBResource
from pydantic import ValidationError

from . import credits
from .api.errors import ExtraltAuthError, ExtraltError
from .api.models import DEFAULT_BASE_URL, is_loopback, validate_base_url
from .assets.run import build_source_assets
from .lake import DuckLakeResource
from .maintenance import maintenance_definitions
from .naming import (
    ALL_SOURCES_JOB,
    captures_asset_key,
    external_runs_sensor_name,
    run_asset_key,
)
from .resource import ExtraltResource
from .schedules import source_job, source_schedule
from .sensors import build_extralt_sensor
from .spec import (
    DEFAULT_OBSERVE_INTERVAL_SECONDS,
    CreditLimit,
    DuplicateNameError,
    ExtraltSources,
    MaintenanceSpec,
    SourceDefaults,
    SourceSpec,
)
from .warehouse import DEFAULT_DUCKDB_PATH, ensure_folder

API_KEY_ENV = "EXTRALT_API_KEY"
BASE_URL_ENV = "EXTRALT_BASE_URL"
DUCKDB_PATH_ENV = "EXTRALT_DUCKDB_PATH"
#: A DuckLake instead of the DuckDB file: its catalog, its data path and (PostgreSQL) the
#: catalog's password. The catalog set selects the lake, unless a `duckdb_path` is passed.
DUCKLAKE_CATALOG_ENV = "EXTRALT_DUCKLAKE_CATALOG"
DUCKLAKE_DATA_PATH_ENV = "EXTRALT_DUCKLAKE_DATA_PATH"
DUCKLAKE_PASSWORD_ENV = "EXTRALT_DUCKLAKE_PASSWORD"
#: Where `extralt-dagster emulator` listens, and the demo key it accepts (the same value as
#: `extralt_dagster.emulator.DEMO_API_KEY`, kept here so loading never imports the server).
EMULATOR_URL = "http://127.0.0.1:8765"
EMULATOR_API_KEY = "extralt-demo-key"
#: Bounded reprs of bad values in messages: a value may be huge (or a YAML alias bomb).
_SHORT = reprlib.Repr()
_SHORT.maxlevel, _SHORT.maxlist, _SHORT.maxdict = 2, 5, 5
_SHORT.maxstring = _SHORT.maxother = 120


logger = logging.getLogger("extralt_dagster.sources")


class SourcesFileError(ExtraltError, ValueError):
    """The sources file (or a component's `sources`) is unreadable or invalid."""


# --- Loading -------------------------------------------------------------------------------


def load_extralt_definitions(
    path: str | os.PathLike[str],
    *,
    duckdb_path: str | None = None,
    api_key: str | None = None,
    base_url: str | None = None,
    resource_overrides: Mapping[str, Any] | None = None,
) -> dg.Definitions:
    """Definitions for every source in a YAML file: assets, schedules, jobs, the sensor of runs
    started outside Dagster (for the sources with `observe_external_runs`) and resources.

    Resources: `extralt` reads the key from `EXTRALT_API_KEY` at run time unless `api_key` is
    given; `base_url` falls back to `EXTRALT_BASE_URL`, then the public API; the DuckDB file is
    `duckdb_path`, else `EXTRALT_DUCKDB_PATH`, else `data/warehouse.duckdb` (its folder is
    created). An explicit argument wins over the environment, so a test never writes to the
    warehouse a shell variable points at. `resource_overrides` replaces resources by key.
    Raises `SourcesFileError` naming the file, line, source and field; makes no API call.
    """
    where = os.fspath(path)
    spec = read_sources(path)
    return build_sources_definitions(
        spec,
        where=where,
        duckdb_path=duckdb_path,
        api_key=api_key if api_key is not None else dg.EnvVar(API_KEY_ENV),
        base_url=base_url,
        resource_overrides=resource_overrides,
    )


def read_sources(path: str | os.PathLike[str]) -> ExtraltSources:
    """The validated sources of a YAML file; `SourcesFileError` names what is wrong."""
    where = os.fspath(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise SourcesFileError(
            f"{where}: cannot read the Extralt sources file ({exc.strerror or exc}). "
            "Check the path; it is resolved from the current directory when relative."
        ) from None
    return parse_sources(text, where)


def parse_sources(text: str, where: str) -> ExtraltSources:
    """Parse and validate a sources document; every problem is reported at once."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f", line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise SourcesFileError(
            f"{where}{at}: malformed YAML ({problem}). Fix the syntax there: check the "
            "indentation, and quote values containing ': ' or '#'."
        ) from None
    if data is None:
        raise SourcesFileError(
            f"{where}: the file is empty. Add a `sources:` list, e.g.\n"
            "sources:\n  - name: shoes\n    robot_id: rbt_shoes"
        )
    if not isinstance(data, dict):
        raise SourcesFileError(
            f"{where}, line 1: expected a mapping with `sources:` (and optional `defaults:`), "
            f"got a YAML {type(data).__name__}."
        )
    duplicate = _duplicate_key(root)
    if duplicate is not None:
        line, key = duplicate
        raise SourcesFileError(
            f"{where}, line {line}: the key {key!r} appears twice in the same mapping; YAML "
            "would silently keep the last one. Remove one of them."
        )
    return validate_sources(data, where, line_of=lambda loc: _line_of(root, loc))


#: The 1-based line of an error location such as ("sources", 0, "budget"), if known.
LineFinder = Callable[[tuple[Any, ...]], int | None]


def validate_sources(
    data: Any,
    where: str,
    *,
    line_of: LineFinder | None = None,
    what: str = "the Extralt sources file",
) -> ExtraltSources:
    """Validate a parsed `{defaults, sources}` mapping; raise one `SourcesFileError` listing
    every problem with its line (from `line_of`), source and field. `what` names the document
    ("the Extralt sources file", "the ExtraltComponent attributes") in the message."""
    try:
        return ExtraltSources.model_validate(data)
    except ValidationError as exc:
        raise SourcesFileError(
            _describe(exc, where, data, line_of or (lambda loc: None), what)
        ) from None


def build_sources_definitions(
    spec: ExtraltSources,
    *,
    where: str,
    duckdb_path: str | None = None,
    api_key: str | dg.EnvVar | None = None,
    base_url: str | None = None,
    resource_overrides: Mapping[str, Any] | None = None,
) -> dg.Definitions:
    """The Definitions for validated sources; `where` names them in error messages."""
    defaults = spec.defaults or SourceDefaults()
    location_cap = _location_cap(spec, defaults, where)
    assets: list[dg.AssetsDefinition] = []
    schedules: list[dg.ScheduleDefinition] = []
    jobs = []
    for i, entry in enumerate(spec.sources):
        source = entry.with_defaults(defaults)
        try:
            assets += build_source_assets(source, location_cap=location_cap)
            if source.cron:
                schedules.append(source_schedule(source))
        except (ValueError, dg.DagsterInvalidDefinitionError) as exc:
            # What only Dagster checks (e.g. tag formats), with the file and source named.
            raise SourcesFileError(
                f"{where}: source {source.name!r} (sources[{i}]): {exc} "
                "Fix this source's settings. No Extralt API call was made."
            ) from None
        jobs.append(source_job(source))
    keys = [k for s in spec.sources for k in (run_asset_key(s.name), captures_asset_key(s.name))]
    jobs.append(
        dg.define_asset_job(
            ALL_SOURCES_JOB,
            selection=keys,
            description="Run every Extralt source and load its captures into DuckDB.",
        )
    )
    resources: dict[str, Any] = {
        "extralt": ExtraltResource(
            api_key=api_key if api_key is not None else dg.EnvVar(API_KEY_ENV),
            base_url=validate_base_url(
                base_url or os.environ.get(BASE_URL_ENV) or DEFAULT_BASE_URL
            ),
        ),
        "duckdb": _warehouse_resource(duckdb_path, where),
        **(resource_overrides or {}),
    }
    if isinstance(resources["duckdb"], DuckLakeResource):
        # A lake: its maintenance job and schedule (stopped unless `maintenance:` says so).
        job, schedule = maintenance_definitions(spec.maintenance, defaults.timezone)
        jobs.append(job)
        schedules.append(schedule)
    elif spec.maintenance is not None:
        logger.warning(
            "%s: `maintenance:` is for a DuckLake, and these sources load into a DuckDB file, "
            "which has nothing to maintain: no maintenance job is defined. Set %s (and %s) to "
            "load into a lake.",
            where,
            DUCKLAKE_CATALOG_ENV,
            DUCKLAKE_DATA_PATH_ENV,
        )
    sensors = _external_runs_sensors(spec, defaults, where)
    return dg.Definitions(
        assets=assets, schedules=schedules, jobs=jobs, sensors=sensors, resources=resources
    )


def _location_cap(
    spec: ExtraltSources, defaults: SourceDefaults, where: str
) -> credits.LocationCap | None:
    """`location_credit_limit`, checked: every source needs a budget (a bound on its worst
    case), and one run of each must fit under it."""
    limit = spec.location_credit_limit
    if limit is None:
        return None
    budgets: dict[str, int] = {}
    for i, source in enumerate(spec.sources):
        head = f"{where}: location_credit_limit ({limit.credits:,} credits per {limit.per})"
        if not source.budget:
            raise SourcesFileError(
                f"{head} needs a budget on every source, and source {source.name!r} "
                f"(sources[{i}]) has none: its worst case has no bound. Set its budget (the "
                "most captures a run makes, 2 credits each), or remove location_credit_limit. "
                "No Extralt API call was made."
            )
        if credits.worst_case(source.budget) > limit.credits:
            raise SourcesFileError(
                f"{head} is below one run of source {source.name!r} (sources[{i}]): "
                f"{source.budget:,} captures x 2 = {credits.worst_case(source.budget):,} "
                "credits, so it could never start. Raise location_credit_limit.credits or "
                "lower that budget. No Extralt API call was made."
            )
        budgets[source.name] = source.budget
    return credits.LocationCap(limit=limit, timezone=defaults.timezone, budgets=budgets)


def _external_runs_sensors(
    spec: ExtraltSources, defaults: SourceDefaults, where: str
) -> list[dg.SensorDefinition]:
    """One external-runs sensor per tick interval of the sources with `observe_external_runs`
    (one sensor, `extralt_external_runs_sensor`, when they share it, as they do by default)."""
    by_interval: dict[int, list[SourceSpec]] = {}
    robots: dict[str, str] = {}
    for i, entry in enumerate(spec.sources):
        source = entry.with_defaults(defaults)
        if not source.observe_external_runs:
            continue
        if source.robot_id in robots:
            raise SourcesFileError(
                f"{where}: source {source.name!r} (sources[{i}]), field observe_external_runs: "
                f"source {robots[source.robot_id]!r} already watches robot {source.robot_id}, "
                "and a run that robot started outside Dagster could belong to either. Turn "
                "observe_external_runs on for one of them only. No Extralt API call was made."
            )
        robots[source.robot_id] = source.name
        interval = source.observe_interval_seconds or DEFAULT_OBSERVE_INTERVAL_SECONDS
        by_interval.setdefault(interval, []).append(source)
    return [
        build_extralt_sensor(
            sources,
            name=external_runs_sensor_name(interval, alone=len(by_interval) == 1),
            minimum_interval_seconds=interval,
            pages_per_tick=defaults.observe_pages_per_tick,
        )
        for interval, sources in sorted(by_interval.items())
    ]


@dataclass(frozen=True)
class Connection:
    """Where a code location talks to: the URL, the key, and whether that is the emulator."""

    base_url: str
    api_key: str = field(repr=False)
    emulated: bool


def resolve_connection(
    env: Mapping[str, str] = os.environ,
    *,
    api_key: str | None = None,
    base_url: str | None = None,
) -> Connection:
    """Explicit settings, else `EXTRALT_API_KEY` / `EXTRALT_BASE_URL`, decided at load time.

    No key and no URL (or a loopback URL): the local emulator with its demo key, so a new
    project runs before anyone has an account. A key never goes to the emulator unless the
    URL says so. A remote URL without a key fails now, in one sentence, not at run time.
    """
    key = (api_key or env.get(API_KEY_ENV, "")).strip()
    url = (base_url or env.get(BASE_URL_ENV, "")).strip()
    if key:
        return Connection(url or DEFAULT_BASE_URL, key, emulated=False)
    if not url or is_loopback(urlsplit(url).hostname or ""):
        return Connection(url or EMULATOR_URL, EMULATOR_API_KEY, emulated=True)
    named = "base_url" if base_url else BASE_URL_ENV
    raise ExtraltAuthError(
        f"{named} is {url!r} but {API_KEY_ENV} is not set: set {API_KEY_ENV} to your Extralt "
        f"API key, or unset {named} to use the local emulator."
    )


def _warehouse_resource(
    duckdb_path: str | None, where: str, env: Mapping[str, str] = os.environ
) -> DuckDBResource | DuckLakeResource:
    """The `duckdb` resource: the DuckDB file, or the lake `EXTRALT_DUCKLAKE_CATALOG` names
    (an explicit `duckdb_path` wins)."""
    catalog = env.get(DUCKLAKE_CATALOG_ENV, "").strip()
    if duckdb_path or not catalog:
        return DuckDBResource(database=_duckdb_path(duckdb_path))
    data_path = env.get(DUCKLAKE_DATA_PATH_ENV, "").strip()
    if not data_path:
        raise SourcesFileError(
            f"{where}: {DUCKLAKE_CATALOG_ENV} is set, so captures load into that DuckLake, but "
            f"{DUCKLAKE_DATA_PATH_ENV} is not: set it to the folder (or s3:// URL) for the "
            f"lake's data files, or unset {DUCKLAKE_CATALOG_ENV} to use the DuckDB file."
        )
    # The password only for a PostgreSQL catalog (a SQLite one has none).
    wants_password = catalog.startswith("postgres:") and env.get(DUCKLAKE_PASSWORD_ENV)
    password = dg.EnvVar(DUCKLAKE_PASSWORD_ENV) if wants_password else None
    resource = DuckLakeResource(catalog=catalog, data_path=data_path, catalog_password=password)
    try:
        resource.lake()  # checks the catalog's form now, not at the first load
    except ExtraltError as exc:
        raise SourcesFileError(f"{where}: {DUCKLAKE_CATALOG_ENV}: {exc}") from None
    return resource


def _duckdb_path(explicit: str | None) -> str:
    # DuckDB creates no folders: a first load into data/warehouse.duckdb needs data/.
    return ensure_folder(explicit or os.environ.get(DUCKDB_PATH_ENV) or DEFAULT_DUCKDB_PATH)


# --- Error messages ------------------------------------------------------------------------


def _describe(exc: ValidationError, where: str, data: Any, line_of: LineFinder, what: str) -> str:
    errors = exc.errors(include_url=False)
    found = []
    for err in errors:
        loc = tuple(err["loc"])
        cause = (err.get("ctx") or {}).get("error")
        if isinstance(cause, DuplicateNameError):
            loc = (*loc, cause.index, "name")
        line = line_of(loc)
        at = f"line {line}: " if line else ""
        found.append((line or 0, f"  - {at}{_subject(loc, data)}: {_message(err, loc)}"))
    lines = [f"{where}: {len(errors)} problem(s) in {what}:"]
    lines += [text for _, text in sorted(found, key=lambda item: item[0])]
    lines.append("Fix these in the file and reload. No Extralt API call was made.")
    return "\n".join(lines)


def _subject(loc: tuple[Any, ...], data: Any) -> str:
    """'source 'shoes' (sources[1]), field budget' or 'defaults, field schema'."""
    if len(loc) >= 2 and loc[0] == "sources" and isinstance(loc[1], int):
        entries = data.get("sources") if isinstance(data, dict) else None
        entry = entries[loc[1]] if isinstance(entries, list) and loc[1] < len(entries) else None
        name = entry.get("name") if isinstance(entry, dict) else None
        who = f"source {name!r} (sources[{loc[1]}])" if isinstance(name, str) and name else None
        who = who or f"sources[{loc[1]}]"
        rest = loc[2:]
    elif loc and loc[0] in ("defaults", "maintenance"):
        who, rest = str(loc[0]), loc[1:]
    else:
        who, rest = "top level", loc
    if not rest:
        return who
    field = str(rest[0]) + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in rest[1:])
    return f"{who}, field {field}"


def _message(err: Mapping[str, Any], loc: tuple[Any, ...]) -> str:
    kind = err["type"]
    if kind == "value_error":
        return str(err["ctx"]["error"])
    if kind == "extra_forbidden":
        models = {"sources": SourceSpec, "defaults": SourceDefaults, "maintenance": MaintenanceSpec}
        model = models.get(loc[0], ExtraltSources)
        allowed = [f.alias or n for n, f in model.model_fields.items()]
        close = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        return f"unknown field.{hint} Allowed fields here: {', '.join(allowed)}."
    if kind == "missing":
        return "required but missing. Add it."
    if kind == "too_short" and loc == ("sources",):
        return "the list is empty. Declare at least one source (name and robot_id)."
    got = err.get("input")
    return f"{err['msg']}, got {_SHORT.repr(got)}."


def _line_of(node: yaml.Node | None, loc: tuple[Any, ...]) -> int | None:
    """1-based line of the deepest YAML node the error location reaches."""
    line = node.start_mark.line + 1 if node is not None else None
    for part in loc:
        child = None
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                if key.value == part:
                    child = value
                    break
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
            child = node.value[part] if part < len(node.value) else None
        if child is None:
            break
        node, line = child, child.start_mark.line + 1
    return line


def _duplicate_key(
    node: yaml.Node | None, visited: set[int] | None = None
) -> tuple[int, str] | None:
    # An alias is the same node object: visit each once, or nested aliases (a "billion
    # laughs" file) make this walk exponential.
    visited = set() if visited is None else visited
    if node is None or id(node) in visited:
        return None
    visited.add(id(node))
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key, value in node.value:
            if key.value in seen:
                return key.start_mark.line + 1, key.value
            seen.add(key.value)
            found = _duplicate_key(value, visited)
            if found:
                return found
    elif isinstance(node, yaml.SequenceNode):
        for item in node.value:
            found = _duplicate_key(item, visited)
            if found:
                return found
    return None


__all__ = [
    "EMULATOR_API_KEY",
    "EMULATOR_URL",
    "Connection",
    "CreditLimit",
    "ExtraltSources",
    "SourceDefaults",
    "SourceSpec",
    "SourcesFileError",
    "build_sources_definitions",
    "load_extralt_definitions",
    "parse_sources",
    "read_sources",
    "resolve_connection",
    "validate_sources",
]
