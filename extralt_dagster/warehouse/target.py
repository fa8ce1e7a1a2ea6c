"""Where the warehouse lives and how to open it: the one seam a second kind of target plugs into.

- The database: a DuckDB file (``DEFAULT_DUCKDB_PATH`` unless configured), ``:memory:``, or a
  MotherDuck ``md:`` path. ``ensure_folder`` creates a file's folder (DuckDB creates none);
  ``connect`` opens it with ``DEFAULT_SETTINGS``, waiting while another process holds the
  file's lock, then raising ``WarehouseLockedError`` naming the holder.
- The catalog a connection writes to (``attached_catalog``; for a file, the file itself) and the
  names of one source's objects in it (``Target``, bound to that catalog by ``bind``).
- What that catalog can hold (``Capabilities``: generated columns, views), read from the
  catalog's type, which the SQL builders and the load consult instead of assuming a file.

A DuckLake target (issue 17) is a second database kind here: ``connect`` attaches the lake
(``ATTACH 'ducklake:...'``, ``USE``), and ``CAPABILITIES`` gains its entry (no generated
columns); the loader and the SQL builders then follow ``capabilities()``.
"""

from __future__ import annotations

import dataclasses
import os
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, get_args

import duckdb

from ..api.models import validate_identifier
from .errors import WarehouseError, WarehouseLockedError
from .quote import _q

__all__ = [
    "CAPABILITIES",
    "DEFAULT_DUCKDB_PATH",
    "DEFAULT_SCHEMA",
    "DEFAULT_SETTINGS",
    "OLDEST_READER",
    "STORAGE_COMPATIBILITY_VERSION",
    "Capabilities",
    "Target",
    "attached_catalog",
    "bind",
    "capabilities",
    "connect",
    "ensure_folder",
    "exists",
    "is_local_file",
    "table_exists",
]

#: The warehouse file of ``make dev``, the YAML sources and the code location, relative to the
#: working directory (``EXTRALT_DUCKDB_PATH`` overrides it where those read the environment).
DEFAULT_DUCKDB_PATH = os.path.join("data", "warehouse.duckdb")
#: The schema a source's tables go in unless configured.
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


#: The objects of one source, by kind (``Target.table``).
TableKind = Literal[
    "captures", "products", "variants", "current_variants", "latest_captures", "runs"
]


# --- The names of one source's objects ---------------------------------------------------------


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

    def qualified(self, table: str) -> str:
        """Quoted ``catalog.schema.table`` for any table of the schema."""
        return f"{self.schema_sql}.{_q(table)}"

    def table(self, kind: TableKind) -> str:
        """The bare name of one of the source's objects: ``<source>_captures`` (history),
        ``<source>_products``, ``<source>_variants``, ``<source>_current_variants``; ``runs``
        is the schema's run log."""
        return "runs" if kind == "runs" else f"{self.source}_{kind}"

    def in_schema(self, kind: TableKind) -> str:
        """Quoted bare name of one of the source's objects: how a view names the tables it
        reads. A view resolves a bare name in its own schema first, and DuckDB stores a view's
        catalog-qualified references without the catalog, which makes ``extralt.t`` ambiguous
        again when the catalog and the schema share a name."""
        return _q(self.table(kind))

    @property
    def captures(self) -> str:
        """Quoted ``schema.source_captures`` (history table)."""
        return self.qualified(self.table("captures"))

    @property
    def products(self) -> str:
        """Quoted ``schema.source_products`` (view: each product's newest capture)."""
        return self.qualified(self.table("products"))

    @property
    def variants(self) -> str:
        """Quoted ``schema.source_variants`` (table)."""
        return self.qualified(self.table("variants"))

    @property
    def current_variants(self) -> str:
        """Quoted ``schema.source_current_variants`` (view: the products' offers)."""
        return self.qualified(self.table("current_variants"))

    @property
    def latest_captures(self) -> str:
        """Quoted ``schema.source_latest_captures`` (table: which capture is each key's newest)."""
        return self.qualified(self.table("latest_captures"))

    @property
    def runs(self) -> str:
        """Quoted ``schema.runs`` (run log, shared by the schema's sources)."""
        return self.qualified(self.table("runs"))

    @property
    def table_names(self) -> dict[str, str]:
        """Plain dotted names, for display: captures, products, variants, current_variants,
        latest_captures, runs."""
        return {kind: f"{self.schema}.{self.table(kind)}" for kind in get_args(TableKind)}


# --- The database: a file, :memory: or md: ----------------------------------------------------


def is_local_file(database: str | os.PathLike[str]) -> bool:
    """Whether ``database`` names a file on this machine (not ``:memory:``, not MotherDuck)."""
    path = os.fspath(database)
    return path != ":memory:" and not path.startswith("md:")


def ensure_folder(database: str | os.PathLike[str]) -> str:
    """``database`` as a string, its folder created if it is a local file: a user's first load
    into ``data/warehouse.duckdb`` must not fail for want of ``data/``."""
    path = os.fspath(database)
    if is_local_file(path):
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    return path


def _settings(path: str, config: Mapping[str, Any] | None) -> dict[str, Any]:
    settings = {**DEFAULT_SETTINGS, **(config or {})}
    if is_local_file(path):
        settings.setdefault("storage_compatibility_version", STORAGE_COMPATIBILITY_VERSION)
    return settings


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
    path = ensure_folder(database) if not read_only else os.fspath(database)
    settings = _settings(path, config)
    return _wait_for_lock(
        lambda: duckdb.connect(path, read_only=read_only, config=settings),
        path,
        lock_timeout_seconds,
    )


_LOCK_MESSAGE = "could not set lock on file"


def _wait_for_lock(
    open_: Callable[[], duckdb.DuckDBPyConnection], path: str, lock_timeout_seconds: float
) -> duckdb.DuckDBPyConnection:
    """``open_()``, retried with a doubling delay (up to 2 s) while DuckDB reports the file's
    lock held, until ``lock_timeout_seconds`` have passed."""
    deadline = time.monotonic() + max(0.0, lock_timeout_seconds)
    delay = 0.05
    attempts = 0
    while True:
        attempts += 1
        try:
            return open_()
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


# --- The catalog a connection writes to, and what it can hold ---------------------------------


@dataclass(frozen=True)
class Capabilities:
    """What a catalog can hold, where targets differ: the loader asks instead of assuming."""

    #: Generated columns: only a catalog with them can hold an earlier release's variants
    #: table, whose ``product_key`` is generated (today's is stored, filled by the insert).
    generated_columns: bool = True
    #: Views. None of today's objects is one (earlier releases' products view was).
    views: bool = True


#: Capabilities by DuckDB's catalog type (``duckdb_databases().type``). A DuckDB file, memory
#: and MotherDuck have them all; a type not listed is treated as a DuckDB file (as it always was).
CAPABILITIES: Mapping[str, Capabilities] = {"duckdb": Capabilities()}


def capabilities(conn: duckdb.DuckDBPyConnection, catalog: str) -> Capabilities:
    """What ``catalog`` (attached to ``conn``) can hold."""
    row = conn.execute(
        "SELECT type FROM duckdb_databases() WHERE database_name = ?", [catalog]
    ).fetchone()
    return CAPABILITIES.get(str(row[0]).lower() if row else "duckdb", CAPABILITIES["duckdb"])


def attached_catalog(conn: duckdb.DuckDBPyConnection) -> str:
    """The catalog ``conn`` writes to: for a DuckDB file, the file (named after it)."""
    row = conn.execute("SELECT current_database()").fetchone()
    assert row is not None
    return str(row[0])


def bind(conn: duckdb.DuckDBPyConnection, target: Target) -> Target:
    """``target`` qualified with ``conn``'s catalog, unless it names one already."""
    return target if target.catalog is not None else target.in_catalog(attached_catalog(conn))


def table_exists(conn: duckdb.DuckDBPyConnection, catalog: str, schema: str, table: str) -> bool:
    row = conn.execute(
        "SELECT count(*) FROM duckdb_tables() WHERE database_name = ? "
        "AND schema_name = ? AND table_name = ?",
        [catalog, schema, table],
    ).fetchone()
    return bool(row and row[0])


def exists(conn: duckdb.DuckDBPyConnection, target: Target, table: str) -> bool:
    """Whether ``table`` exists in ``target``'s (bound) catalog and schema."""
    return table_exists(conn, target.catalog or attached_catalog(conn), target.schema, table)
