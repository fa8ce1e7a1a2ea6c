"""Load Extralt exports into DuckDB. Every DuckDB SQL statement of the project lives here.

Plain ``duckdb`` and the standard library: no Dagster, no pandas, no row-by-row Python. The
export file is read by DuckDB itself (``read_parquet``, or ``read_json`` for JSON lines);
pyarrow only reads a Parquet footer DuckDB refuses (a file with no columns: a run with no
captures) and finds the damaged row group of a file DuckDB cannot decode.

Objects, per source (``Target``), in schema ``extralt`` unless overridden:

``<schema>.<source>_captures`` -- TABLE. History: one row per capture per Extralt run, every
    export column plus ``run_id``, ``robot_id`` and ``loaded_at`` (TIMESTAMPTZ). Loading a run
    replaces that run's rows (``DELETE`` + ``INSERT BY NAME``, never ``INSERT OR REPLACE``).
``<schema>.<source>_variants`` -- TABLE. One row per variant offer, flat, with the fixed columns
    of ``VARIANT_COLUMNS``; maintained per load from this run's history rows only (the export
    is read once). A variant without offers has no row here; the capture keeps it.
``<schema>.<source>_products`` -- VIEW. One row per product key (``product_id``, else ``url``,
    an empty or blank value counting as none; captures with neither are left out): its newest capture by ``extracted_at``, then
    ``loaded_at``, across all loaded runs. Columns: ``product_key`` plus every history column,
    so it follows the history table's schema by construction.
``<schema>.runs`` -- TABLE. Run log shared by all sources of the schema: one row per
    (source, run_id) loaded, replaced on reload.

Why products is a view and variants a table. Measured once with a throwaway script (not kept;
``make bench`` measures the load path as shipped) on a shared 2-vCPU VM with DuckDB 2.0.1: 1,000,000 captures from
``emulator.datagen`` (283 MB zstd parquet, 3.75 M offers); 1.00 is a bare ``CREATE TABLE AS
SELECT * FROM read_parquet`` with ``preserve_insertion_order=false`` (~10.5 s; ~21 s with the
default ``true``). The history insert costs ~1.0-1.1 (same bytes written); the flat variants
table ~0.5 (one string-heavy row per offer, written once, derived from this run's history rows:
the export is read once); a products *table* would cost another ~0.95 per load (copying 1 M
history rows takes 20.6 CPU-s against 21 for the bare CTAS), because it means writing every
winning capture a second time, nested columns and all, and an incremental update cannot avoid
that (each new run of a robot makes nearly every product newer). Both tables would put a load
at ~2.5x the bare copy; with products as a view a load measures
~1.5-1.65x (1.35x at 100,000 captures). The view stays cheap to query: it ranks only the key
and ordering columns and semi-joins history on ``rowid`` (~0.1 s per 100k, ~1 s per 2 M
history rows), whereas a variants *view* would re-unnest all of history on every query.

All changes of one load run in one transaction: a corrupt or truncated file, a schema
conflict or any error leaves every object exactly as it was.

Schema evolution of the history table, reported in ``LoadResult``:

- a column new to the export is added (``ALTER TABLE ADD COLUMN``);
- a column missing from the export is loaded as NULL;
- a type change that widens (integer to a wider integer, integer or FLOAT to DOUBLE, DECIMAL
  to a wider DECIMAL, a struct gaining fields, anything scalar into VARCHAR, also inside lists
  and structs) widens the column (``ALTER COLUMN ... SET DATA TYPE``) or casts on insert; any
  other change raises ``WarehouseSchemaError`` naming the column, and nothing is loaded.

JSON lines are read with the types DuckDB infers, except that strings stay VARCHAR (DuckDB
would otherwise guess UUID, DATE or TIMESTAMP from their content) and values it cannot type
(all NULL, empty lists) take the history table's type, else the documented one
(``DOCUMENTED_TYPES``): a JSONL load gives the same rows as a parquet load of the same captures
(JSON integers are BIGINT, so INTEGER columns widen once).

A placeholder is not a type. A column created from a load with no type for it (NULL everywhere,
empty lists, a null-typed Parquet column) gets its documented type if it has one, else VARCHAR
(JSON[] for JSON lines' empty lists); while it holds no value in history, the next export's
real type replaces it (``columns_typed``; not drift).
A struct field missing from an export reads as NULL; a new one is added. Both are reported by
path (``variants[].offers[].warranty``) in ``columns_missing`` and ``columns_added``, and a
widened nested field in ``columns_widened``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import duckdb

from ..api.errors import ExtraltError
from ..api.models import (
    CREDITS_PER_CAPTURE,
    EXPORT_FORMATS,
    ExtraltRun,
    validate_identifier,
)

__all__ = [
    "DEFAULT_SCHEMA",
    "DEFAULT_SETTINGS",
    "DOCUMENTED_TYPES",
    "META_COLUMNS",
    "OLDEST_READER",
    "STORAGE_COMPATIBILITY_VERSION",
    "VARIANT_COLUMNS",
    "LoadResult",
    "RunRecord",
    "Target",
    "WarehouseError",
    "WarehouseExportError",
    "WarehouseLockedError",
    "WarehouseSchemaError",
    "WarehouseStats",
    "connect",
    "load_export",
    "table_stats",
]

DEFAULT_SCHEMA = "extralt"
#: Settings applied by ``connect`` unless the caller's config overrides them. The memory limit
#: keeps a million-capture load at ~1.25 GB of RSS (DuckDB's own default is 80% of RAM, and
#: takes ~2.7 GB for the same load); 1 GB is too tight for 100k-row parquet row groups of
#: kilobyte descriptions. Raise it for exports with bigger row groups.
DEFAULT_SETTINGS: Mapping[str, Any] = {
    "preserve_insertion_order": False,
    "memory_limit": "1250MB",
}
#: The storage format a new warehouse file is created in (DuckDB's
#: ``storage_compatibility_version``): ``v1.2.0`` files are readable by DuckDB 1.2 and every
#: later release, where DuckDB 2.0's own default (storage version 69) is unreadable before 2.0,
#: and BI tools and notebooks often bundle a 1.x. Why not older: DuckDB 1.0 and 1.1 bind a
#: view's table names in the reader's search path, not the view's schema, so they could read
#: the tables but not the products view. DuckDB fixes a file's format when it creates it and
#: keeps it on every later write, so this matters only for a file ``connect`` creates; a file
#: another tool created keeps that tool's format. Load time and size: README, "Which DuckDB
#: reads the warehouse". Opt out with ``config={"storage_compatibility_version": "latest"}``.
STORAGE_COMPATIBILITY_VERSION = "v1.2.0"
#: The oldest DuckDB release that reads a warehouse file created with the default settings.
OLDEST_READER = "1.2.0"
#: Columns the loader adds to every history row; an export column of the same name is ignored.
META_COLUMNS: tuple[str, ...] = ("run_id", "robot_id", "loaded_at")
#: Names an export column cannot have: the loader's own columns, ``product_key`` (the products
#: view's), and DuckDB's ``rowid`` (a column of that name would hide the row id the products
#: view relies on). Such columns are left out of history and reported (``columns_ignored``).
_RESERVED = frozenset((*META_COLUMNS, "product_key", "rowid"))
_GLOB_CHARACTERS = ("*", "?", "[")

_BLANKS = "' ' || chr(9) || chr(10) || chr(13)"


def _key_sql(product_id: str, url: str) -> str:
    """A product's identity: ``product_id``, else ``url``; blank or empty is no identifier."""
    return (
        f"coalesce(nullif(trim({product_id}, {_BLANKS}), ''), nullif(trim({url}, {_BLANKS}), ''))"
    )


#: The variants table: fixed columns and types, in order. ``product_key`` is a virtual column
#: (``product_id``, else ``url``, blank counting as missing; computed when read): it costs
#: nothing to load.
VARIANT_COLUMNS: tuple[tuple[str, str], ...] = (
    (
        "product_key",
        f"VARCHAR GENERATED ALWAYS AS ({_key_sql('product_id', 'url')}) VIRTUAL",
    ),
    ("product_id", "VARCHAR"),
    ("group_id", "VARCHAR"),
    ("url", "VARCHAR"),
    ("title", "VARCHAR"),
    ("brand", "VARCHAR"),
    ("variant_id", "VARCHAR"),
    ("opt1", "VARCHAR"),
    ("opt2", "VARCHAR"),
    ("opt3", "VARCHAR"),
    ("gtin", "VARCHAR"),
    ("mpn", "VARCHAR"),
    ("price_amount", "DOUBLE"),
    ("full_amount", "DOUBLE"),
    ("currency", "VARCHAR"),
    ("in_stock", "BOOLEAN"),
    ("quantity", "BIGINT"),
    ("condition", "VARCHAR"),
    ("seller", "VARCHAR"),
    ("seller_type", "VARCHAR"),
    ("run_id", "VARCHAR"),
    ("extracted_at", "TIMESTAMPTZ"),
)

_RUNS_COLUMNS: tuple[tuple[str, str], ...] = (
    ("run_id", "VARCHAR"),
    ("source", "VARCHAR"),
    ("robot_id", "VARCHAR"),
    ("robot_name", "VARCHAR"),
    ("status", "VARCHAR"),
    ("extracted", "BIGINT"),
    ("credits", "BIGINT"),
    ("budget", "BIGINT"),
    ("created_at", "TIMESTAMPTZ"),
    ("started_at", "TIMESTAMPTZ"),
    ("duration_seconds", "DOUBLE"),
    ("dagster_run_id", "VARCHAR"),
    ("export_format", "VARCHAR"),
    ("rows_loaded", "BIGINT"),
    ("bytes_downloaded", "BIGINT"),
    ("loaded_at", "TIMESTAMPTZ"),
)


# --- Errors -------------------------------------------------------------------------------


class WarehouseError(ExtraltError):
    """A load or a connection failed; the warehouse is as it was before the call.

    ``retryable`` says whether the same call may succeed later: True for a held lock, an I/O
    error (disk full) or a transaction conflict; False for what fails the same way every time
    (a binder or catalog error, a schema conflict, a corrupt export, a bad argument).
    """

    def __init__(self, message: str, *, retryable: bool = False) -> None:
        super().__init__(message)
        self.retryable = retryable


class WarehouseSchemaError(WarehouseError):
    """The export changed a column's type in a way the history table cannot absorb."""

    def __init__(self, message: str, *, column: str, old_type: str, new_type: str) -> None:
        super().__init__(message)
        self.column = column
        self.old_type = old_type
        self.new_type = new_type


class WarehouseExportError(WarehouseError):
    """The export file is corrupt or not an export: loading it again cannot help."""

    def __init__(self, message: str, *, path: str, location: str | None = None) -> None:
        super().__init__(message)
        self.path = path
        #: Where the damage is, when it can be told ("row group 2 of 10, counting from 0; ...").
        self.location = location


class WarehouseLockedError(WarehouseError):
    """Another process holds the DuckDB file's lock and kept it past the timeout."""

    def __init__(self, message: str, *, database: str, holder_pid: int | None = None) -> None:
        super().__init__(message, retryable=True)
        self.database = database
        #: The process holding the lock, as DuckDB reports it (None if it did not say).
        self.holder_pid = holder_pid


# --- Public values ------------------------------------------------------------------------


def _q(name: str) -> str:
    """A quoted SQL identifier; safe for any string."""
    return '"' + name.replace('"', '""') + '"'


def _lit(value: str) -> str:
    """A SQL string literal, for the few places DuckDB takes no parameter."""
    return "'" + value.replace("'", "''") + "'"


@dataclass(frozen=True)
class Target:
    """Where one source's data lives. Both names are validated identifiers, always quoted.

    ``catalog`` is the DuckDB database (attached catalog) the names are qualified with. DuckDB
    names a file's catalog after the file, so ``extralt.duckdb`` holds catalog ``extralt``, and
    ``extralt.t`` is then ambiguous between catalog and schema: the loader always binds the
    target to the connection's catalog (``in_catalog``) and writes ``catalog.schema.table``.
    """

    source: str
    schema: str = DEFAULT_SCHEMA
    catalog: str | None = None

    def __post_init__(self) -> None:
        validate_identifier(self.source, "source name")
        validate_identifier(self.schema, "schema")
        if self.catalog is not None and (not isinstance(self.catalog, str) or not self.catalog):
            raise WarehouseError(f"catalog must be a non-empty string, got {self.catalog!r}")

    def in_catalog(self, catalog: str) -> Target:
        """The same target, every SQL name qualified with ``catalog``."""
        return dataclasses.replace(self, catalog=catalog)

    @property
    def schema_sql(self) -> str:
        """Quoted ``catalog.schema`` (just ``schema`` when no catalog is bound)."""
        if self.catalog is None:
            return _q(self.schema)
        return f"{_q(self.catalog)}.{_q(self.schema)}"

    def _qualified(self, table: str) -> str:
        return f"{self.schema_sql}.{_q(table)}"

    @property
    def captures_in_schema(self) -> str:
        """Quoted ``source_captures`` alone: how the products view names its table. A view
        resolves a bare name in its own schema first, and DuckDB stores a view's catalog-
        qualified references without the catalog, which makes ``extralt.t`` ambiguous again
        when the catalog and the schema share a name."""
        return _q(f"{self.source}_captures")

    @property
    def captures(self) -> str:
        """Quoted ``schema.source_captures`` (history table)."""
        return self._qualified(f"{self.source}_captures")

    @property
    def products(self) -> str:
        """Quoted ``schema.source_products`` (view)."""
        return self._qualified(f"{self.source}_products")

    @property
    def variants(self) -> str:
        """Quoted ``schema.source_variants`` (table)."""
        return self._qualified(f"{self.source}_variants")

    @property
    def runs(self) -> str:
        """Quoted ``schema.runs`` (run log, shared by the schema's sources)."""
        return self._qualified("runs")

    @property
    def table_names(self) -> dict[str, str]:
        """Plain dotted names, for display: captures, products, variants, runs."""
        return {
            "captures": f"{self.schema}.{self.source}_captures",
            "products": f"{self.schema}.{self.source}_products",
            "variants": f"{self.schema}.{self.source}_variants",
            "runs": f"{self.schema}.runs",
        }


@dataclass(frozen=True)
class RunRecord:
    """The Extralt run being loaded, as the run log records it."""

    run_id: str
    robot_id: str | None = None
    robot_name: str | None = None
    status: str | None = None
    extracted: int | None = None
    budget: int | None = None
    created_at: datetime | None = None
    started_at: datetime | None = None
    duration_seconds: float | None = None
    dagster_run_id: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.run_id, str) or not self.run_id.strip():
            raise WarehouseError(f"run_id must be a non-empty string, got {self.run_id!r}")

    @property
    def credits(self) -> int | None:
        return None if self.extracted is None else self.extracted * CREDITS_PER_CAPTURE

    @classmethod
    def from_run(cls, run: ExtraltRun, *, dagster_run_id: str | None = None) -> RunRecord:
        return cls(
            run_id=run.id,
            robot_id=run.robot_id,
            robot_name=run.robot_name,
            status=str(run.status),
            extracted=run.extracted,
            budget=run.budget,
            created_at=run.created_at,
            started_at=run.started_at,
            duration_seconds=run.duration,
            dagster_run_id=dagster_run_id,
        )


@dataclass(frozen=True)
class LoadResult:
    """What one ``load_export`` did; counts are after the load unless named ``*_for_run``."""

    run_id: str
    #: Captures of this run now in history (= rows in the export).
    rows: int
    history_rows: int
    #: Rows of the products view (distinct non-NULL product keys in history).
    products: int
    variants: int
    variants_for_run: int
    #: Rows in the run log for this source.
    runs_logged: int
    #: True when this load created the history table (no drift is reported then).
    created: bool
    #: Columns new to history, then fields new to a nested column, by path
    #: (``variants[].offers[].warranty``).
    columns_added: tuple[str, ...]
    #: History columns, then nested fields by path, that the export lacks (loaded as NULL).
    columns_missing: tuple[str, ...]
    #: (path, old type, new type) for each column, or nested field, whose type this load widened.
    columns_widened: tuple[tuple[str, str, str], ...]
    #: Export columns named like a loader column (run_id, robot_id, loaded_at, product_key).
    columns_ignored: tuple[str, ...]
    #: The history table's columns and real DuckDB types, after the load.
    column_types: tuple[tuple[str, str], ...]
    #: Captures of this run whose id repeats an earlier one of the run (count - distinct).
    duplicate_ids: int
    null_price_rows: int
    inverted_price_rows: int
    load_seconds: float
    #: Up to 5 captures of the run: title, brand, min_price, currency, available.
    preview: tuple[dict[str, Any], ...] = field(default=())
    #: Seconds per step: prepare, history, variants, products_view_and_run_log, checks, commit.
    phase_seconds: Mapping[str, float] = field(default_factory=dict)
    table_names: Mapping[str, str] = field(default_factory=dict)
    #: The DuckDB catalog loaded into (named after the file): ``catalog.schema.table`` always
    #: works, and ``schema.table`` is ambiguous for readers when the two names are the same.
    catalog: str | None = None
    #: Captures the run document says the run extracted; None when it does not say.
    extracted: int | None = None
    #: (column, placeholder type, real type) for each column that held no value in history
    #: (an earlier load had no type for it: NULL everywhere, empty lists) and that this load
    #: gave its real type. Not drift: a placeholder is not a type.
    columns_typed: tuple[tuple[str, str, str], ...] = ()
    #: Captures of this run whose ``extracted_at`` is set but is no instant (NaN, infinite, out
    #: of TIMESTAMPTZ's range, unparseable): history keeps the value, variants have NULL.
    unconverted_extracted_at: int = 0

    @property
    def drifted(self) -> bool:
        return bool(self.columns_added or self.columns_missing or self.columns_widened)

    @property
    def distinct_captures(self) -> int:
        """Captures of this run in the export, a repeated id counted once (rows without an id
        each count)."""
        return self.rows - self.duplicate_ids

    @property
    def missing_captures(self) -> int | None:
        """Captures the run extracted that the export lacks; None when ``extracted`` is unknown."""
        if self.extracted is None:
            return None
        return max(0, self.extracted - self.distinct_captures)


@dataclass(frozen=True)
class WarehouseStats:
    """Row counts of a source's objects (0 for an object that does not exist yet)."""

    captures: int
    products: int
    variants: int
    runs: int
    last_loaded_at: datetime | None


# --- Connection -----------------------------------------------------------------------------

_LOCK_MESSAGE = "could not set lock on file"


def connect(
    database: str | os.PathLike[str],
    *,
    config: Mapping[str, Any] | None = None,
    lock_timeout_seconds: float = 60.0,
    read_only: bool = False,
) -> duckdb.DuckDBPyConnection:
    """Open ``database``, waiting (bounded exponential backoff) while another process holds it.

    DuckDB lets one process write a file at a time. ``config`` is passed to DuckDB on top of
    ``DEFAULT_SETTINGS`` (e.g. ``{"memory_limit": "4GB", "threads": 4}``). After
    ``lock_timeout_seconds`` of ``Could not set lock`` errors this raises
    ``WarehouseLockedError``; other errors propagate as DuckDB raised them.
    """
    path = os.fspath(database)
    if not read_only and path != ":memory:" and not path.startswith("md:"):
        # A user's first load: `data/warehouse.duckdb` must not fail for want of `data/`.
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    settings = {**DEFAULT_SETTINGS, **(config or {})}
    if path != ":memory:" and not path.startswith("md:"):
        settings.setdefault("storage_compatibility_version", STORAGE_COMPATIBILITY_VERSION)
    deadline = time.monotonic() + max(0.0, lock_timeout_seconds)
    delay = 0.05
    attempts = 0
    while True:
        attempts += 1
        try:
            return duckdb.connect(path, read_only=read_only, config=settings)
        except duckdb.IOException as exc:
            if _LOCK_MESSAGE not in str(exc).lower():
                raise
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise _locked_error(path, exc, lock_timeout_seconds, attempts) from exc
            time.sleep(min(delay, remaining))
            delay = min(delay * 2, 2.0)


_LOCK_HOLDER = re.compile(r"Conflicting lock is held in (?P<program>.*?) \(PID (?P<pid>\d+)\)")


def _locked_error(
    path: str, exc: duckdb.Error, timeout: float, attempts: int
) -> WarehouseLockedError:
    """The lock error, naming the file and the holding process. DuckDB's own text ends by
    suggesting read-only mode, which is true for a second reader but misleading here: a
    read-only connection in another process blocks every load as well, so it is left out."""
    said = str(exc)
    holder = _LOCK_HOLDER.search(said)
    pid = int(holder["pid"]) if holder else None
    who = f"process {pid} ({holder['program']})" if holder else "another process"
    if holder:
        said = said[: holder.end()] + "."
    return WarehouseLockedError(
        f"DuckDB file {path!r} is open in {who}, and it did not let go within {timeout:g} s "
        f"({attempts} attempts), so nothing was loaded. DuckDB lets one process open a file "
        "for writing, or several open it read-only, never both: while any other process has it "
        "open, read-only connections included (a DuckDB CLI, even with -readonly, a BI tool, a "
        "notebook, another Dagster step), no load can start. Close those connections while "
        "loads run, "
        "or let readers query a copy of the file taken after a load; or raise "
        "lock_timeout_seconds. A later release adds a shared warehouse target (DuckLake) where "
        f"readers and loads coexist. DuckDB said: {said}",
        database=path,
        holder_pid=pid,
    )


# --- Types --------------------------------------------------------------------------------
# A small model of DuckDB types, enough to compare an export's schema with the table's and
# to compute a type both fit in.


@dataclass(frozen=True)
class _Type:
    kind: str  # "scalar" | "struct" | "list" | "map" | "null" | "json"
    sql: str
    children: tuple[tuple[str, _Type], ...] = ()

    @property
    def child(self) -> _Type:
        return self.children[0][1]

    def field(self, name: str) -> _Type | None:
        """A struct field by case-insensitive name."""
        lname = name.lower()
        for fname, ftype in self.children:
            if fname.lower() == lname:
                return ftype
        return None

    def field_name(self, name: str) -> str:
        lname = name.lower()
        return next(f for f, _ in self.children if f.lower() == lname)


def _struct(fields: Sequence[tuple[str, _Type]]) -> _Type:
    body = ", ".join(f"{_q(n)} {t.sql}" for n, t in fields)
    return _Type("struct", f"STRUCT({body})", tuple(fields))


def _list(child: _Type) -> _Type:
    return _Type("list", f"{child.sql}[]", (("child", child),))


def _map(key: _Type, value: _Type) -> _Type:
    return _Type("map", f"MAP({key.sql}, {value.sql})", (("key", key), ("value", value)))


_VARCHAR = _Type("scalar", "VARCHAR")
#: Type kinds that carry no information: a NULL-typed column, JSON inferred from empty lists.
_PLACEHOLDER_KINDS = ("null", "json")


def _from_duckdb(t: duckdb.typing.DuckDBPyType) -> _Type:
    tid = t.id
    text = str(t)
    if tid == "null":
        return _Type("null", text)
    if text == "JSON":
        return _Type("json", text)
    if tid == "struct":
        return _struct([(n, _from_duckdb(c)) for n, c in t.children])
    if tid == "list":
        return _list(_from_duckdb(t.children[0][1]))
    if tid == "map":
        return _map(_from_duckdb(t.children[0][1]), _from_duckdb(t.children[1][1]))
    return _Type("scalar", text)


_OPTION = 'STRUCT("name" VARCHAR, "values" VARCHAR[])'
_OFFER = (
    "STRUCT(price STRUCT(amount DOUBLE, full_amount DOUBLE, currency VARCHAR), "
    "availability STRUCT(in_stock BOOLEAN, quantity INTEGER), condition VARCHAR, "
    "seller VARCHAR, seller_type VARCHAR)"
)
#: The export's columns as ../shared/EXTRALT_API.md documents them, in the DuckDB types a
#: Parquet export carries. A column that arrives with no type (NULL everywhere, empty lists,
#: JSON lines) is created with its documented type, never with a guess.
DOCUMENTED_TYPES: Mapping[str, str] = {
    "id": "VARCHAR",
    "url": "VARCHAR",
    "extracted_at": "DOUBLE",
    "product_id": "VARCHAR",
    "group_id": "VARCHAR",
    "title": "VARCHAR",
    "subtitle": "VARCHAR",
    "brand": "VARCHAR",
    "description": "VARCHAR",
    "min_price": "DOUBLE",
    "max_price": "DOUBLE",
    "currency": "VARCHAR",
    "available": "BOOLEAN",
    "sku_count": "INTEGER",
    "image_url": "VARCHAR",
    "options": f"STRUCT(opt1 {_OPTION}, opt2 {_OPTION})",
    "variants": (
        "STRUCT(id VARCHAR, opt1 VARCHAR, opt2 VARCHAR, "
        f"identifiers STRUCT(gtin VARCHAR, mpn VARCHAR), offers {_OFFER}[])[]"
    ),
}
_DOCUMENTED = {n: _from_duckdb(duckdb.sqltype(t)) for n, t in DOCUMENTED_TYPES.items()}


def _documented(name: str) -> _Type | None:
    return _DOCUMENTED.get(name.lower())


_SIGNED = ("TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT")
_UNSIGNED = ("UTINYINT", "USMALLINT", "UINTEGER", "UBIGINT", "UHUGEINT")
_FLOATS = ("FLOAT", "DOUBLE")
_INT_DIGITS = dict(zip(_SIGNED + _UNSIGNED, (3, 5, 10, 19, 39, 3, 5, 10, 20, 39), strict=True))
_DECIMAL_RE = re.compile(r"^DECIMAL\((\d+),\s*(\d+)\)$")
_STRINGY = ("UUID", "DATE", "TIME", "TIMESTAMP", "TIMESTAMP WITH TIME ZONE")


def _numeric_supertype(a: str, b: str) -> str | None:
    """The narrowest type holding both numeric types, or None if one is not numeric."""
    da, db_ = _DECIMAL_RE.match(a), _DECIMAL_RE.match(b)
    known = set(_SIGNED + _UNSIGNED + _FLOATS)
    if not ((a in known or da) and (b in known or db_)):
        return None
    if a == b:
        return a
    if a in _FLOATS or b in _FLOATS:
        return "FLOAT" if a == b == "FLOAT" else "DOUBLE"
    if da or db_:
        p1, s1 = (int(da[1]), int(da[2])) if da else (_INT_DIGITS[a], 0)
        p2, s2 = (int(db_[1]), int(db_[2])) if db_ else (_INT_DIGITS[b], 0)
        scale = max(s1, s2)
        precision = max(p1 - s1, p2 - s2) + scale
        return f"DECIMAL({precision},{scale})" if precision <= 38 else "DOUBLE"
    if (a in _SIGNED) == (b in _SIGNED):
        family = _SIGNED if a in _SIGNED else _UNSIGNED
        return max(a, b, key=family.index)
    signed, unsigned = (a, b) if a in _SIGNED else (b, a)
    # An unsigned integer fits the signed type one size up.
    rank = max(_SIGNED.index(signed), _UNSIGNED.index(unsigned) + 1)
    return _SIGNED[rank] if rank < len(_SIGNED) else "DOUBLE"


class _Conflict(Exception):
    def __init__(self, path: str, old: _Type, new: _Type) -> None:
        super().__init__(path)
        self.path, self.old, self.new = path, old, new


def _merge(old: _Type, new: _Type, path: str) -> _Type:
    """The type that holds values of both ``old`` (the table's) and ``new`` (the file's)."""
    if old == new or new.kind == "null":
        return old
    if new.kind == "json" and old.kind != "null":
        return old
    if old.kind == "null":
        return new
    if old.kind == "struct" and new.kind == "struct":
        fields = []
        for name, otype in old.children:
            ntype = new.field(name)
            fields.append(
                (name, otype if ntype is None else _merge(otype, ntype, f"{path}.{name}"))
            )
        known = {n.lower() for n, _ in old.children}
        fields.extend((n, t) for n, t in new.children if n.lower() not in known)
        return _struct(fields)
    if old.kind == "list" and new.kind == "list":
        return _list(_merge(old.child, new.child, f"{path}[]"))
    if old.kind == "map" and new.kind == "map":
        return _map(
            _merge(old.children[0][1], new.children[0][1], f"{path}{{key}}"),
            _merge(old.children[1][1], new.children[1][1], f"{path}{{value}}"),
        )
    if old.kind == "scalar" and new.kind == "scalar":
        if old.sql == "VARCHAR":
            return old
        widened = _numeric_supertype(old.sql, new.sql)
        if widened is not None:
            return _Type("scalar", widened)
    raise _Conflict(path, old, new)


def _fill(t: _Type, default: _Type | None) -> _Type:
    """``t`` with each node that carries no type information (NULL, or JSON from JSON lines
    inference over empty lists) replaced by ``default``'s type at the same path."""
    if default is None:
        return t
    if t.kind in _PLACEHOLDER_KINDS:
        return default
    if t.kind == "struct" and default.kind == "struct":
        return _struct([(n, _fill(c, default.field(n))) for n, c in t.children])
    if t.kind == "list" and default.kind == "list":
        return _list(_fill(t.child, default.child))
    if t.kind == "map" and default.kind == "map":
        return _map(
            *(_fill(c, d) for (_, c), (_, d) in zip(t.children, default.children, strict=True))
        )
    return t


def _weaker(old: _Type, new: _Type) -> bool:
    """Whether history's ``old`` is less specific than the export's ``new`` somewhere: a
    placeholder (NULL, JSON) or a VARCHAR where the export has a real, other type. Such a
    column may hold a type a type-less first load guessed, which an empty history lets the
    export's real type replace."""
    if new.kind in _PLACEHOLDER_KINDS:
        return False
    if old.kind in _PLACEHOLDER_KINDS:
        return True
    if old.kind == "scalar" and old.sql == "VARCHAR":
        return new.kind != "scalar" or new.sql != "VARCHAR"
    if old.kind != new.kind or old.kind == "scalar":
        return False
    if old.kind == "struct":
        return any((o := old.field(n)) is not None and _weaker(o, c) for n, c in new.children)
    return any(_weaker(o, c) for (_, o), (_, c) in zip(old.children, new.children, strict=True))


def _concrete(t: _Type) -> _Type:
    """A type a column can be created with: NULL (nothing to go on) becomes VARCHAR."""
    if t.kind == "null":
        return _VARCHAR
    if t.kind == "struct":
        return _struct([(n, _concrete(c)) for n, c in t.children])
    if t.kind == "list":
        return _list(_concrete(t.child))
    if t.kind == "map":
        return _map(*(_concrete(c) for _, c in t.children))
    return t


def _json_read_type(file_t: _Type, table_t: _Type | None) -> _Type:
    """The type to read a JSON field as. Strings stay strings, even those DuckDB would guess
    to be UUID, DATE or TIMESTAMP (unless history already has that type); where inference had
    nothing to go on (all NULL, empty lists) the history type is used, else VARCHAR/JSON."""
    if file_t.kind in ("null", "json"):
        if table_t is not None:
            return table_t
        return _VARCHAR if file_t.kind == "null" else file_t
    if file_t.kind == "struct":
        sub = table_t if table_t is not None and table_t.kind == "struct" else None
        return _struct(
            [(n, _json_read_type(c, sub.field(n) if sub else None)) for n, c in file_t.children]
        )
    if file_t.kind == "list":
        sub = table_t.child if table_t is not None and table_t.kind == "list" else None
        return _list(_json_read_type(file_t.child, sub))
    if file_t.kind == "map":
        subs: list[_Type | None] = [None, None]
        if table_t is not None and table_t.kind == "map":
            subs = [table_t.children[0][1], table_t.children[1][1]]
        return _map(
            *(_json_read_type(c, s) for (_, c), s in zip(file_t.children, subs, strict=True))
        )
    if file_t.sql in ("VARCHAR", *_STRINGY):
        if table_t is not None and table_t.kind == "scalar" and table_t.sql in _STRINGY:
            return table_t
        return _VARCHAR
    return file_t


# --- Reading the export ---------------------------------------------------------------------


def _reader(fmt: str, *, json_columns: bool = False) -> str:
    """The table function reading the export; ``?`` is the path (and the JSON column types)."""
    if fmt == "parquet":
        return "read_parquet(?)"
    columns = ", columns = ?" if json_columns else ""
    return f"read_json(?, format = 'newline_delimited'{columns})"


def _file_columns(
    conn: duckdb.DuckDBPyConnection,
    path: str,
    fmt: str,
    table_cols: Sequence[tuple[str, _Type]] | None,
) -> list[tuple[str, _Type]]:
    """The export's columns, with the types to read them as (reads only the parquet footer,
    or a sample of the JSON lines)."""
    rel = conn.sql(f"SELECT * FROM {_reader(fmt)}", params=[path])
    cols = [(name, _from_duckdb(t)) for name, t in zip(rel.columns, rel.types, strict=True)]
    if fmt != "jsonl":
        return cols
    table = {n.lower(): t for n, t in table_cols or ()}
    # Where history has no such column, the documented type stands in for it: JSON lines
    # give no type for a column that is NULL everywhere.
    return [(n, _json_read_type(t, table.get(n.lower()) or _documented(n))) for n, t in cols]


def _blank(path: str) -> bool:
    """An empty file, or one of only blank lines: a JSON lines export of no captures."""
    size = os.path.getsize(path)
    if size > 65536:
        return False
    with open(path, "rb") as f:
        return not f.read().strip()


def _parquet_without_columns(path: str) -> bool:
    """True for a Parquet file with no columns (what ``pyarrow`` writes for an empty table,
    and DuckDB cannot read: "Need at least one non-root column"). Without a column there is
    no capture to load, whatever row count the footer claims: ``matches_run_count`` tells."""
    try:
        import pyarrow.parquet as pq

        return pq.read_metadata(path).num_columns == 0
    except Exception:  # not even pyarrow reads the footer: the caller reports DuckDB's error
        return False


#: Words of DuckDB's messages for a file it cannot decode (thrift page headers, compression,
#: encodings, offsets, JSON syntax).
_CORRUPTION_HINTS = (
    "ttype",
    "tprotocolexception",
    "don't know what type",
    "decompression",
    "corrupt",
    "invalid string encoding",
    "out of buffer",
    "page size",
    "dictionary",
    "malformed json",
    "failed to read file",
    "magic bytes",
    "not a parquet file",
)


def _unreadable(exc: duckdb.Error, path: str, fmt: str, run_id: str) -> WarehouseError:
    """The error for an export whose columns DuckDB cannot read."""
    return _corrupt(exc, path, fmt, run_id) or WarehouseError(
        f"Cannot read {path!r} as a {fmt} export of run {run_id}; nothing was loaded. "
        f"DuckDB said: {exc}"
    )


def _corrupt(exc: duckdb.Error, path: str, fmt: str, run_id: str) -> WarehouseExportError | None:
    """A ``WarehouseExportError`` saying where the export is damaged, if ``exc`` is DuckDB
    failing to decode it; else None. DuckDB does not say which row group it was reading:
    pyarrow reads the file again, a row group and a column at a time, to find it."""
    if isinstance(exc, duckdb.OutOfMemoryException | duckdb.InterruptException):
        return None
    location = _damaged_row_group(path) if fmt == "parquet" else None
    if location is None and not any(h in str(exc).lower() for h in _CORRUPTION_HINTS):
        return None
    where = f" ({location})" if location else ""
    return WarehouseExportError(
        f"The export of run {run_id} is corrupt{where}: {path!r} cannot be decoded, and "
        f"nothing was loaded. Loading the same file again cannot help; download the export "
        f"again, and if it is still corrupt, the run's export is damaged at Extralt. "
        f"DuckDB said: {exc}",
        path=path,
        location=location,
    )


def _damaged_row_group(path: str) -> str | None:
    """Where a Parquet file first fails to decode ("row group 2 of 10, counting from 0;
    column description"), or None when pyarrow reads it all."""
    try:
        import pyarrow.parquet as pq

        parquet = pq.ParquetFile(path)
        names = parquet.schema_arrow.names
        groups = parquet.num_row_groups
    except Exception:
        return None
    for group in range(groups):
        for name in names:
            try:
                parquet.read_row_group(group, columns=[name])
            except Exception:
                return f"row group {group} of {groups}, counting from 0; column {name}"
    return None


def _holds_no_value(
    conn: duckdb.DuckDBPyConnection, target: Target, column: str, t: _Type, run_id: str
) -> bool:
    """Whether history's ``column`` is NULL (or an empty list) in every row of other runs than
    ``run_id`` (whose rows the load replaces)."""
    col = _q(column)
    value = f"{col} IS NOT NULL"
    if t.kind == "list":
        value += f" AND len({col}) > 0"
    elif t.kind == "map":
        value += f" AND cardinality({col}) > 0"
    row = conn.execute(
        f"SELECT NOT EXISTS (SELECT 1 FROM {target.captures} "
        f"WHERE run_id IS DISTINCT FROM ? AND {value})",
        [run_id],
    ).fetchone()
    return bool(row and row[0])


def _table_columns(conn: duckdb.DuckDBPyConnection, qualified: str) -> list[tuple[str, _Type]]:
    rel = conn.sql(f"SELECT * FROM {qualified} LIMIT 0")
    return [(name, _from_duckdb(t)) for name, t in zip(rel.columns, rel.types, strict=True)]


def _exists(conn: duckdb.DuckDBPyConnection, target: Target, table: str) -> bool:
    """Whether ``table`` exists in ``target``'s (bound) catalog and schema."""
    return _table_exists(conn, target.catalog or _current_catalog(conn), target.schema, table)


def _table_exists(conn: duckdb.DuckDBPyConnection, catalog: str, schema: str, table: str) -> bool:
    row = conn.execute(
        "SELECT count(*) FROM duckdb_tables() WHERE database_name = ? "
        "AND schema_name = ? AND table_name = ?",
        [catalog, schema, table],
    ).fetchone()
    return bool(row and row[0])


def _current_catalog(conn: duckdb.DuckDBPyConnection) -> str:
    row = conn.execute("SELECT current_database()").fetchone()
    assert row is not None
    return str(row[0])


def _bind(conn: duckdb.DuckDBPyConnection, target: Target) -> Target:
    """``target`` qualified with ``conn``'s current catalog, unless it names one already."""
    return target if target.catalog is not None else target.in_catalog(_current_catalog(conn))


# --- SQL builders ---------------------------------------------------------------------------


def _scalar_expr(sql: str, t: _Type | None, target: str) -> str:
    """``sql`` (of type ``t``) as ``target``; NULL when it is missing or nested."""
    if t is None or t.kind not in ("scalar", "null", "json"):
        return f"NULL::{target}"
    if t.sql == target:
        return sql
    return f"TRY_CAST({sql} AS {target})"


def _path_expr(base: str, t: _Type | None, path: Sequence[str], target: str) -> str:
    """A field inside nested structs (``base.a.b``) as ``target``, NULL when any step is
    missing."""
    for name in path:
        if t is None or t.kind != "struct" or t.field(name) is None:
            return f"NULL::{target}"
        base = f"struct_extract({base}, {_lit(t.field_name(name))})"
        t = t.field(name)
    return _scalar_expr(base, t, target)


def _timestamp_expr(sql: str, t: _Type | None) -> str:
    """``extracted_at`` as TIMESTAMPTZ: epoch seconds (the export's form) or a timestamp."""
    if t is None or t.kind != "scalar":
        return "NULL::TIMESTAMPTZ"
    if _numeric_supertype(t.sql, "DOUBLE") is not None:
        # NaN, infinities and values outside years 1-9999 are no instant: NULL. A range test,
        # not try(): the products view stores this SQL, and DuckDB 1.2 has no try().
        seconds = f"CAST({sql} AS DOUBLE)"
        return (
            f"CASE WHEN {seconds} BETWEEN {_FIRST_INSTANT} AND {_LAST_INSTANT} "
            f"THEN to_timestamp({seconds}) END"
        )
    return f"TRY_CAST({sql} AS TIMESTAMPTZ)"


#: Epoch seconds of 0001-01-01 and 9999-12-31T23:59:59 UTC: the instants extracted_at can be.
_FIRST_INSTANT = -62_135_596_800
_LAST_INSTANT = 253_402_300_799


def _product_key_expr(cols: Mapping[str, _Type]) -> str:
    """``product_id``, falling back to ``url``: the identity of a product; an empty or blank
    value is no identifier."""
    pid = _scalar_expr(_q("product_id"), cols.get("product_id"), "VARCHAR")
    url = _scalar_expr(_q("url"), cols.get("url"), "VARCHAR")
    return _key_sql(pid, url)


def _variants_insert_sql(target: Target, cols: Mapping[str, _Type]) -> str | None:
    """INSERT of this run's variant offers (two ``?``, both the run id), or None when history
    has no list-of-struct ``variants`` column to flatten. Reads history, not the export: the
    rows just inserted, found by ``run_id``."""
    vtype = cols.get("variants")
    if vtype is None or vtype.kind != "list" or vtype.child.kind != "struct":
        return None
    v = vtype.child
    otype = v.field("offers")
    has_offers = otype is not None and otype.kind == "list" and otype.child.kind == "struct"
    o = otype.child if has_offers and otype is not None else None

    def cap(name: str, target_type: str = "VARCHAR") -> str:
        return _scalar_expr(_q(name), cols.get(name), target_type)

    # Level 1: one row per variant, capture columns computed once per capture.
    variant_level = [
        *(f"{cap(n)} AS {n}" for n in ("product_id", "group_id", "url", "title", "brand")),
        f"{cap('currency')} AS _capture_currency",
        f"{_timestamp_expr(_q('extracted_at'), cols.get('extracted_at'))} AS extracted_at",
        f"unnest({_q('variants')}) AS _v",
    ]
    # Level 2: one row per offer.
    offer_level = [
        "* EXCLUDE (_v)",
        f"{_path_expr('_v', v, ['id'], 'VARCHAR')} AS variant_id",
        *(f"{_path_expr('_v', v, [n], 'VARCHAR')} AS {n}" for n in ("opt1", "opt2", "opt3")),
        f"{_path_expr('_v', v, ['identifiers', 'gtin'], 'VARCHAR')} AS gtin",
        f"{_path_expr('_v', v, ['identifiers', 'mpn'], 'VARCHAR')} AS mpn",
        (
            f"unnest(struct_extract(_v, {_lit(v.field_name('offers'))})) AS _o"
            if has_offers
            else "NULL AS _o"
        ),
    ]
    final = [
        "* EXCLUDE (_o, _capture_currency)",
        f"{_path_expr('_o', o, ['price', 'amount'], 'DOUBLE')} AS price_amount",
        f"{_path_expr('_o', o, ['price', 'full_amount'], 'DOUBLE')} AS full_amount",
        f"coalesce({_path_expr('_o', o, ['price', 'currency'], 'VARCHAR')}, _capture_currency)"
        " AS currency",
        f"{_path_expr('_o', o, ['availability', 'in_stock'], 'BOOLEAN')} AS in_stock",
        f"{_path_expr('_o', o, ['availability', 'quantity'], 'BIGINT')} AS quantity",
        *(
            f"{_path_expr('_o', o, [n], 'VARCHAR')} AS {n}"
            for n in ("condition", "seller", "seller_type")
        ),
        "? AS run_id",
    ]
    return (
        f"INSERT INTO {target.variants} BY NAME\n"
        f"SELECT {', '.join(final)} FROM (\n"
        f"  SELECT {', '.join(offer_level)} FROM (\n"
        f"    SELECT {', '.join(variant_level)}\n"
        f"    FROM {target.captures} WHERE run_id = ?))"
    )


def _products_view_sql(target: Target, cols: Mapping[str, _Type]) -> str:
    key = _product_key_expr(cols)
    order = []
    if "extracted_at" in cols:
        # The instant, not the raw value: a NaN would otherwise sort as the newest capture.
        when = _timestamp_expr(_q("extracted_at"), cols["extracted_at"])
        order.append(f"{when} DESC NULLS LAST")
    order += ["loaded_at DESC", "run_id DESC"]
    if "id" in cols:
        order.append(f"{_q('id')} DESC NULLS LAST")
    order.append("rowid DESC")
    return (
        f"CREATE OR REPLACE VIEW {target.products} AS\n"
        f"SELECT {key} AS product_key, * FROM {target.captures_in_schema}\n"
        f"WHERE rowid IN (\n"
        f"  SELECT rowid FROM {target.captures_in_schema} WHERE {key} IS NOT NULL\n"
        f"  QUALIFY row_number() OVER (PARTITION BY {key} ORDER BY {', '.join(order)}) = 1)"
    )


def _ddl_columns(columns: Iterable[tuple[str, str]]) -> str:
    return ", ".join(f"{_q(n)} {t}" for n, t in columns)


# --- Loading --------------------------------------------------------------------------------


@dataclass
class _Plan:
    created: bool
    read_types: list[tuple[str, _Type]]  # export columns to load, with the type to read them as
    add: list[tuple[str, _Type]]
    widen: list[tuple[str, _Type, _Type]]  # (table column, old, new)
    missing: list[str]
    ignored: list[str]
    #: (table column, old, new): a column with no value in history whose type the export
    #: gives for the first time; not drift, and any type may replace it.
    typed: list[tuple[str, _Type, _Type]] = field(default_factory=list)


def _plan(
    file_cols: list[tuple[str, _Type]],
    table_cols: list[tuple[str, _Type]] | None,
    empty_in_history: Callable[[str, _Type], bool] = lambda name, t: False,
) -> _Plan:
    """Compare the export's columns (already in the types to read them as) with history's.

    ``empty_in_history(column, type)`` says whether history holds no value in a column (NULL
    or empty lists only): such a column's type is a placeholder the export's type replaces.
    """
    ignored = [n for n, _ in file_cols if n.lower() in _RESERVED]
    file_cols = [(n, t) for n, t in file_cols if n.lower() not in _RESERVED]
    seen: set[str] = set()
    for name, _ in file_cols:
        if name.lower() in seen:
            raise WarehouseError(f"The export has two columns named {name!r} (ignoring case).")
        seen.add(name.lower())
    if table_cols is None:
        created = [(n, _concrete(_fill(t, _documented(n)))) for n, t in file_cols]
        return _Plan(True, created, [], [], [], ignored)
    table = {n.lower(): (n, t) for n, t in table_cols}
    read: list[tuple[str, _Type]] = []
    add: list[tuple[str, _Type]] = []
    widen: list[tuple[str, _Type, _Type]] = []
    typed: list[tuple[str, _Type, _Type]] = []
    for name, ftype in file_cols:
        existing = table.get(name.lower())
        read.append((name, ftype))
        if existing is None:
            add.append((name, _concrete(_fill(ftype, _documented(name)))))
            continue
        old = existing[1]
        retyped = _retype(old, ftype, existing[0], empty_in_history)
        if retyped is not None:
            typed.append((existing[0], old, retyped))
            continue
        try:
            merged = _merge(old, ftype, existing[0])
        except _Conflict as exc:
            raise WarehouseSchemaError(
                f"Column {exc.path!r} of the export has type {exc.new.sql}, but the history "
                f"table has {exc.old.sql}, and one cannot hold the other. Nothing was loaded. "
                "Fix the export, or migrate the history table's column yourself.",
                column=exc.path,
                old_type=exc.old.sql,
                new_type=exc.new.sql,
            ) from None
        if merged != old:
            widen.append((existing[0], old, merged))
    file_names = {n.lower() for n, _ in file_cols}
    missing = [
        n for n, _ in table_cols if n.lower() not in file_names and n.lower() not in _RESERVED
    ]
    return _Plan(False, read, add, widen, missing, ignored, typed)


def _retype(
    old: _Type, new: _Type, column: str, empty_in_history: Callable[[str, _Type], bool]
) -> _Type | None:
    """The type replacing history's placeholder ``old`` for the export's ``new``, or None
    when ``old`` stays (and is merged as usual). Only a column that holds no value yet is
    retyped; a documented column never goes below its documented type."""
    if not _weaker(old, new) or not empty_in_history(column, old):
        return None
    documented = _documented(column)
    replacement = _fill(_fill(new, documented), old)
    if documented is not None:
        try:
            replacement = _merge(documented, replacement, column)
        except _Conflict:
            return None  # not the documented type: the usual merge decides, and may refuse
    replacement = _concrete(replacement)
    return None if replacement == old else replacement


@dataclass(frozen=True)
class _Drift:
    """How the export's columns differ from history's, as ``LoadResult`` reports it."""

    added: tuple[str, ...] = ()
    missing: tuple[str, ...] = ()
    widened: tuple[tuple[str, str, str], ...] = ()


def _drift(plan: _Plan, table_cols: Sequence[tuple[str, _Type]] | None) -> _Drift:
    """Top-level columns added and missing, then the same inside nested columns, by path: a
    widened column is compared field by field, so a new ``variants[].offers[].warranty`` is
    an addition and only the fields whose type changed are widenings."""
    added = [n for n, _ in plan.add]
    widened: list[tuple[str, str, str]] = []
    for name, old, new in plan.widen:
        nested_added, nested_widened = _type_changes(old, new, name)
        added += nested_added
        widened += nested_widened
    missing = list(plan.missing)
    table = {n.lower(): (n, t) for n, t in table_cols or ()}
    for name, file_type in plan.read_types:
        existing = table.get(name.lower())
        if existing is not None:
            missing += _fields_missing(existing[1], file_type, existing[0])
    return _Drift(tuple(added), tuple(missing), tuple(widened))


def _type_changes(
    old: _Type, new: _Type, path: str
) -> tuple[list[str], list[tuple[str, str, str]]]:
    """What widening a column from ``old`` to ``new`` changed: the fields it gained and the
    types that changed, each at the deepest path where it happened."""
    if old == new:
        return [], []
    if old.kind == new.kind and old.kind in ("struct", "list", "map"):
        added: list[str] = []
        widened: list[tuple[str, str, str]] = []
        for name, child_path, new_child in _children(new, path):
            old_child = _child(old, name)
            if old_child is None:
                added.append(child_path)
                continue
            more_added, more_widened = _type_changes(old_child, new_child, child_path)
            added += more_added
            widened += more_widened
        return added, widened
    return [], [(path, old.sql, new.sql)]


def _fields_missing(table_t: _Type, file_t: _Type, path: str) -> list[str]:
    """The nested fields of a history column that the export's column lacks, by path. A file
    type with nothing to go on (NULL, JSON) lacks nothing: it has no fields to compare."""
    if table_t.kind != file_t.kind or table_t.kind not in ("struct", "list", "map"):
        return []
    missing: list[str] = []
    for name, child_path, table_child in _children(table_t, path):
        file_child = _child(file_t, name)
        if file_child is None:
            missing.append(child_path)
        else:
            missing += _fields_missing(table_child, file_child, child_path)
    return missing


def _children(t: _Type, path: str) -> list[tuple[str, str, _Type]]:
    """(name, path, type) of a nested type's children: struct fields, a list's element, a
    map's key and value."""
    if t.kind == "struct":
        return [(n, f"{path}.{n}", c) for n, c in t.children]
    if t.kind == "list":
        return [("child", f"{path}[]", t.child)]
    return [(n, f"{path}{{{n}}}", c) for n, c in t.children]


def _child(t: _Type, name: str) -> _Type | None:
    return t.field(name) if t.kind == "struct" else dict(t.children).get(name)


def _check_format(fmt: str) -> str:
    value = str(fmt).lower()
    if value not in EXPORT_FORMATS:
        raise WarehouseError(f"format must be one of {EXPORT_FORMATS}, got {fmt!r}")
    return value


def load_export(
    conn: duckdb.DuckDBPyConnection,
    path: str | os.PathLike[str],
    *,
    target: Target,
    run: RunRecord,
    format: str = "parquet",
    bytes_downloaded: int | None = None,
) -> LoadResult:
    """Load one run's export file into ``target``'s tables, in one transaction.

    Replaces any rows an earlier load of ``run.run_id`` left, so a retry or a reload never
    duplicates. Raises ``WarehouseSchemaError`` for a type change history cannot absorb and
    ``WarehouseError`` for anything else (unreadable file, DuckDB error); in both cases no
    table has changed. ``conn`` must not be inside a transaction.
    """
    started = time.perf_counter()
    fmt = _check_format(format)
    file_path = os.fspath(path)
    if not os.path.isfile(file_path):
        raise WarehouseError(f"Export file {file_path!r} does not exist or is not a file.")
    if any(c in file_path for c in _GLOB_CHARACTERS):
        # DuckDB would expand the name as a glob pattern and might read other files.
        raise WarehouseError(
            f"Export file {file_path!r} has a glob character ({' '.join(_GLOB_CHARACTERS)}) in "
            "its path, which DuckDB would expand; save the download under a plain name."
        )
    loaded_at = datetime.now(UTC)
    empty_jsonl = fmt == "jsonl" and _blank(file_path)

    try:
        conn.execute("BEGIN TRANSACTION")
    except duckdb.Error as exc:
        raise WarehouseError(
            f"Cannot start the load transaction (is one already open on this connection?): {exc}"
        ) from exc
    try:
        result = _load(
            conn,
            file_path,
            target=target,
            run=run,
            fmt=fmt,
            empty_jsonl=empty_jsonl,
            loaded_at=loaded_at,
            bytes_downloaded=bytes_downloaded,
            started=started,
        )
        conn.execute("COMMIT")
        commit_seconds = round(time.perf_counter() - started - result.load_seconds, 4)
        result = dataclasses.replace(
            result,
            load_seconds=time.perf_counter() - started,
            phase_seconds={**result.phase_seconds, "commit": commit_seconds},
        )
    except BaseException as exc:
        with contextlib.suppress(duckdb.Error):  # already gone: nothing was committed
            conn.execute("ROLLBACK")
        if isinstance(exc, duckdb.OutOfMemoryException):
            raise WarehouseError(
                f"Loading run {run.run_id} from {file_path!r} ran out of DuckDB memory "
                f"(memory_limit {_setting(conn, 'memory_limit')}); nothing was changed. Raise "
                "memory_limit in the connect() config, or lower threads. DuckDB said: "
                f"{exc}"
            ) from exc
        if isinstance(exc, duckdb.Error):
            retryable = isinstance(exc, _RETRYABLE_DUCKDB_ERRORS)
            raise WarehouseError(
                f"Loading run {run.run_id} from {file_path!r} ({fmt}) into "
                f"{target.table_names['captures']} failed; nothing was changed. "
                + ("" if retryable else "Loading it again would fail the same way. ")
                + f"DuckDB said: {exc}",
                retryable=retryable,
            ) from exc
        raise
    return result


#: DuckDB errors a later attempt may not meet: I/O (a full disk, a file system hiccup), a
#: conflicting transaction, an interrupt. A binder, catalog, parser, conversion or constraint
#: error comes from the SQL and the data, and repeats on every attempt.
_RETRYABLE_DUCKDB_ERRORS = (
    duckdb.IOException,
    duckdb.TransactionException,
    duckdb.InterruptException,
    duckdb.HTTPException,
)


def _setting(conn: duckdb.DuckDBPyConnection, name: str) -> str:
    try:
        row = conn.execute("SELECT current_setting(?)", [name]).fetchone()
    except duckdb.Error:
        return "unknown"
    return str(row[0]) if row else "unknown"


def _migrate_variants_key(conn: duckdb.DuckDBPyConnection, target: Target) -> None:
    """Give a variants table made by an earlier release (``product_key`` =
    ``coalesce(product_id, url)``, which kept '' as a key) today's key. DuckDB cannot alter a
    generated column: the table is rebuilt, in the load's transaction."""
    row = conn.execute(
        "SELECT sql FROM duckdb_tables() WHERE database_name = ? AND schema_name = ? "
        "AND table_name = ?",
        [target.catalog, target.schema, f"{target.source}_variants"],
    ).fetchone()
    if row is None or "nullif" in str(row[0]).lower():
        return
    rebuilt = f"{target.source}_variants__rekeyed"
    stored = [n for n, _ in VARIANT_COLUMNS if n != "product_key"]
    names = ", ".join(_q(n) for n in stored)
    conn.execute(f"CREATE TABLE {target._qualified(rebuilt)} ({_ddl_columns(VARIANT_COLUMNS)})")
    conn.execute(
        f"INSERT INTO {target._qualified(rebuilt)} ({names}) SELECT {names} FROM {target.variants}"
    )
    conn.execute(f"DROP TABLE {target.variants}")
    conn.execute(
        f"ALTER TABLE {target._qualified(rebuilt)} RENAME TO {_q(f'{target.source}_variants')}"
    )


def _load(
    conn: duckdb.DuckDBPyConnection,
    path: str,
    *,
    target: Target,
    run: RunRecord,
    fmt: str,
    empty_jsonl: bool,
    loaded_at: datetime,
    bytes_downloaded: int | None,
    started: float,
) -> LoadResult:
    phases: dict[str, float] = {}
    clock = time.perf_counter()
    target = _bind(conn, target)

    def lap(name: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        phases[name] = round(now - clock, 4)
        clock = now

    conn.execute(f"CREATE SCHEMA IF NOT EXISTS {target.schema_sql}")
    conn.execute(f"CREATE TABLE IF NOT EXISTS {target.runs} ({_ddl_columns(_RUNS_COLUMNS)})")
    conn.execute(f"CREATE TABLE IF NOT EXISTS {target.variants} ({_ddl_columns(VARIANT_COLUMNS)})")
    _migrate_variants_key(conn, target)
    exists = _exists(conn, target, f"{target.source}_captures")
    table_cols = _table_columns(conn, target.captures) if exists else None
    file_cols: list[tuple[str, _Type]] = []
    if not empty_jsonl:
        try:
            file_cols = _file_columns(conn, path, fmt, table_cols)
        except duckdb.Error as exc:
            if not (fmt == "parquet" and _parquet_without_columns(path)):
                raise _unreadable(exc, path, fmt, run.run_id) from exc

    # An empty export (an empty JSON lines file, a Parquet file with no columns, what a run
    # with no captures may give) has no columns to compare: it only empties the run.
    def empty_in_history(column: str, t: _Type) -> bool:
        return _holds_no_value(conn, target, column, t, run.run_id)

    plan = (
        _plan(file_cols, table_cols, empty_in_history)
        if file_cols
        else _Plan(False, [], [], [], [], [])
    )
    lap("prepare")

    rows = 0
    if plan.created:
        meta = [("run_id", "VARCHAR"), ("robot_id", "VARCHAR"), ("loaded_at", "TIMESTAMPTZ")]
        columns = [(n, t.sql) for n, t in plan.read_types] + meta
        conn.execute(f"CREATE TABLE {target.captures} ({_ddl_columns(columns)})")
    for name, t in plan.add:
        conn.execute(f"ALTER TABLE {target.captures} ADD COLUMN {_q(name)} {t.sql}")
    for name, _old, new in plan.widen:
        conn.execute(
            f"ALTER TABLE {target.captures} ALTER COLUMN {_q(name)} SET DATA TYPE {new.sql}"
        )
    for name, _old, new in plan.typed:
        # Only NULLs and empty lists to convert (this run's own old rows are replaced anyway).
        conn.execute(
            f"ALTER TABLE {target.captures} ALTER COLUMN {_q(name)} SET DATA TYPE {new.sql} "
            f"USING CASE WHEN run_id = {_lit(run.run_id)} THEN NULL "
            f"ELSE {_q(name)}::{new.sql} END"
        )
    drift = _drift(plan, table_cols)
    has_history = exists or plan.created
    if has_history:
        conn.execute(f"DELETE FROM {target.captures} WHERE run_id = ?", [run.run_id])
    if plan.read_types:
        select = ", ".join(_q(n) for n, _ in plan.read_types)
        params: list[Any] = [run.run_id, run.robot_id, loaded_at, path]
        if fmt == "jsonl":
            params.append({n: t.sql for n, t in plan.read_types})
        try:
            inserted = conn.execute(
                f"INSERT INTO {target.captures} BY NAME SELECT {select}, ?::VARCHAR AS run_id, "
                f"?::VARCHAR AS robot_id, ?::TIMESTAMPTZ AS loaded_at "
                f"FROM {_reader(fmt, json_columns=fmt == 'jsonl')}",
                params,
            ).fetchone()
        except duckdb.Error as exc:
            # Reading the file is most of this statement: a damaged page fails here.
            corrupt = _corrupt(exc, path, fmt, run.run_id)
            if corrupt is None:
                raise
            raise corrupt from exc
        rows = int(inserted[0]) if inserted else 0
    lap("history")

    # DuckDB matches identifiers case-insensitively, quoted or not: key them by lower case.
    cols = {n.lower(): t for n, t in _table_columns(conn, target.captures)} if has_history else {}
    conn.execute(f"DELETE FROM {target.variants} WHERE run_id = ?", [run.run_id])
    variants_for_run = 0
    insert_variants = _variants_insert_sql(target, cols)
    if insert_variants is not None and rows:
        inserted = conn.execute(insert_variants, [run.run_id, run.run_id]).fetchone()
        variants_for_run = int(inserted[0]) if inserted else 0
    lap("variants")

    if has_history:
        conn.execute(_products_view_sql(target, cols))
    conn.execute(
        f"DELETE FROM {target.runs} WHERE source = ? AND run_id = ?", [target.source, run.run_id]
    )
    runs_values = (
        run.run_id,
        target.source,
        run.robot_id,
        run.robot_name,
        run.status,
        run.extracted,
        run.credits,
        run.budget,
        run.created_at,
        run.started_at,
        run.duration_seconds,
        run.dagster_run_id,
        fmt,
        rows,
        bytes_downloaded,
        loaded_at,
    )
    placeholders = ", ".join("?" for _ in _RUNS_COLUMNS)
    names = ", ".join(_q(n) for n, _ in _RUNS_COLUMNS)
    conn.execute(f"INSERT INTO {target.runs} ({names}) VALUES ({placeholders})", runs_values)
    lap("products_view_and_run_log")

    checks = _run_checks(conn, target, cols, run.run_id) if has_history else _NO_CHECKS
    stats = table_stats(conn, target)
    lap("checks")
    return LoadResult(
        run_id=run.run_id,
        rows=rows,
        history_rows=stats.captures,
        products=stats.products,
        variants=stats.variants,
        variants_for_run=variants_for_run,
        runs_logged=stats.runs,
        created=plan.created,
        columns_added=drift.added,
        columns_missing=drift.missing,
        columns_widened=drift.widened,
        columns_ignored=tuple(plan.ignored),
        columns_typed=tuple((n, old.sql, new.sql) for n, old, new in plan.typed),
        column_types=_column_types(conn, target) if has_history else (),
        duplicate_ids=checks["duplicate_ids"],
        null_price_rows=checks["null_price_rows"],
        inverted_price_rows=checks["inverted_price_rows"],
        unconverted_extracted_at=checks["unconverted_extracted_at"],
        load_seconds=time.perf_counter() - started,
        preview=checks["preview"],
        phase_seconds=phases,
        table_names=target.table_names,
        catalog=target.catalog,
        extracted=run.extracted,
    )


_NO_CHECKS: Mapping[str, Any] = {
    "duplicate_ids": 0,
    "unconverted_extracted_at": 0,
    "null_price_rows": 0,
    "inverted_price_rows": 0,
    "preview": (),
}


def _column_types(conn: duckdb.DuckDBPyConnection, target: Target) -> tuple[tuple[str, str], ...]:
    """The history table's columns with DuckDB's own type names, in table order."""
    rows = conn.execute(
        "SELECT column_name, data_type FROM duckdb_columns() "
        "WHERE database_name = ? AND schema_name = ? AND table_name = ? "
        "ORDER BY column_index",
        [target.catalog or _current_catalog(conn), target.schema, f"{target.source}_captures"],
    ).fetchall()
    return tuple((str(n), str(t)) for n, t in rows)


def _run_checks(
    conn: duckdb.DuckDBPyConnection, target: Target, cols: Mapping[str, _Type], run_id: str
) -> dict[str, Any]:
    """Data-quality counts and a small preview of one run's history rows."""
    min_price = _scalar_expr(_q("min_price"), cols.get("min_price"), "DOUBLE")
    max_price = _scalar_expr(_q("max_price"), cols.get("max_price"), "DOUBLE")
    capture_id = _scalar_expr(_q("id"), cols.get("id"), "VARCHAR")
    unconverted = "0"
    if "extracted_at" in cols:
        when = _timestamp_expr(_q("extracted_at"), cols["extracted_at"])
        unconverted = f"count(*) FILTER (WHERE {_q('extracted_at')} IS NOT NULL AND {when} IS NULL)"
    row = conn.execute(
        f"SELECT count({capture_id}) - count(DISTINCT {capture_id}), "
        f"count(*) FILTER (WHERE {min_price} IS NULL), "
        f"count(*) FILTER (WHERE {min_price} > {max_price}), {unconverted} "
        f"FROM {target.captures} WHERE run_id = ?",
        [run_id],
    ).fetchone()
    assert row is not None
    preview_columns = [
        f"{_scalar_expr(_q('title'), cols.get('title'), 'VARCHAR')} AS title",
        f"{_scalar_expr(_q('brand'), cols.get('brand'), 'VARCHAR')} AS brand",
        f"{min_price} AS min_price",
        f"{_scalar_expr(_q('currency'), cols.get('currency'), 'VARCHAR')} AS currency",
        f"{_scalar_expr(_q('available'), cols.get('available'), 'BOOLEAN')} AS available",
    ]
    order = "extracted_at, " if "extracted_at" in cols else ""
    order += "id" if "id" in cols else "rowid"
    rel = conn.execute(
        f"SELECT {', '.join(preview_columns)} FROM {target.captures} WHERE run_id = ? "
        f"ORDER BY {order} LIMIT 5",
        [run_id],
    )
    names = [d[0] for d in rel.description or ()]
    preview = tuple(dict(zip(names, r, strict=True)) for r in rel.fetchall())
    return {
        "duplicate_ids": int(row[0]),
        "null_price_rows": int(row[1]),
        "inverted_price_rows": int(row[2]),
        "unconverted_extracted_at": int(row[3]),
        "preview": preview,
    }


def table_stats(conn: duckdb.DuckDBPyConnection, target: Target) -> WarehouseStats:
    """Row counts of ``target``'s objects; zeros before the first load."""
    target = _bind(conn, target)
    if not _exists(conn, target, f"{target.source}_captures"):
        # No capture loaded yet, but runs with none may be logged.
        runs = 0
        if _exists(conn, target, "runs"):
            row = conn.execute(
                f"SELECT count(*) FROM {target.runs} WHERE source = ?", [target.source]
            ).fetchone()
            runs = int(row[0]) if row else 0
        return WarehouseStats(captures=0, products=0, variants=0, runs=runs, last_loaded_at=None)
    cols = {n.lower(): t for n, t in _table_columns(conn, target.captures)}
    variants = (
        f"(SELECT count(*) FROM {target.variants})"
        if _exists(conn, target, f"{target.source}_variants")
        else "0"
    )
    has_runs = _exists(conn, target, "runs")
    runs = f"(SELECT count(*) FROM {target.runs} WHERE source = ?)" if has_runs else "0"
    row = conn.execute(
        f"SELECT (SELECT count(*) FROM {target.captures}), "
        f"(SELECT count(DISTINCT {_product_key_expr(cols)}) FROM {target.captures}), "
        f"{variants}, {runs}, (SELECT max(loaded_at) FROM {target.captures})",
        [target.source] if has_runs else [],
    ).fetchone()
    assert row is not None
    return WarehouseStats(
        captures=int(row[0]),
        products=int(row[1]),
        variants=int(row[2]),
        runs=int(row[3] or 0),
        last_loaded_at=row[4],
    )


# --- Read-only summary (``make demo``, ``extralt-dagster summary``) -----------------------------


@dataclass(frozen=True)
class SourceSummary:
    source: str
    runs: int
    captures: int
    products: int
    variants: int
    credits: int


@dataclass(frozen=True)
class CheapOffer:
    source: str
    title: str | None
    brand: str | None
    price: float
    currency: str | None


@dataclass(frozen=True)
class Summary:
    sources: tuple[SourceSummary, ...]
    cheapest: tuple[CheapOffer, ...]


def summarize(conn: duckdb.DuckDBPyConnection, *, schema: str = DEFAULT_SCHEMA) -> Summary:
    """Per-source counts from the run log and tables, and the cheapest in-stock products."""
    validate_identifier(schema, "schema")
    catalog = _current_catalog(conn)
    if not _table_exists(conn, catalog, schema, "runs"):
        return Summary(sources=(), cheapest=())
    rows = conn.execute(
        f"SELECT source, count(*), coalesce(sum(credits), 0) "
        f"FROM {_q(catalog)}.{_q(schema)}.{_q('runs')} GROUP BY source ORDER BY source"
    ).fetchall()
    sources, cheapest = [], []
    for source, runs, credits in rows:
        try:
            target = Target(source=source, schema=schema, catalog=catalog)
        except ExtraltError:
            continue  # a row this loader did not write
        stats = table_stats(conn, target)
        sources.append(
            SourceSummary(
                source, int(runs), stats.captures, stats.products, stats.variants, int(credits)
            )
        )
        if stats.products:
            cheapest += [
                CheapOffer(source, title, brand, float(price), currency)
                for title, brand, price, currency in conn.execute(
                    f"SELECT title, brand, min_price, currency FROM {target.products} "
                    "WHERE available AND min_price IS NOT NULL ORDER BY min_price, title LIMIT 3"
                ).fetchall()
            ]
    return Summary(sources=tuple(sources), cheapest=tuple(cheapest))
