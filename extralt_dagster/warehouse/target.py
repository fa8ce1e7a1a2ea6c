"""Where the warehouse lives and how to open it: the one seam both kinds of target plug into.

- The database: a DuckDB file (``DEFAULT_DUCKDB_PATH`` unless configured), ``:memory:``, a
  MotherDuck ``md:`` path, or a DuckLake (``Lake``: a catalog in SQLite or PostgreSQL, the data
  as Parquet files in a folder or an object store). ``ensure_folder`` creates a file's folder
  (DuckDB creates none); ``connect`` opens a file with ``DEFAULT_SETTINGS``, waiting while
  another process holds the file's lock, then raising ``WarehouseLockedError`` naming the
  holder; for a ``Lake`` it opens an in-memory DuckDB, attaches the lake and ``USE``s it.
- The catalog a connection writes to (``attached_catalog``; for a file, the file itself; for a
  lake, its alias) and the names of one source's objects in it (``Target``, bound to that
  catalog by ``bind``).
- What that catalog can hold (``Capabilities``), read from the catalog's type, which the SQL
  builders and the load consult instead of assuming a file.

DuckLake, and why its objects are laid out as they are (issue 17). DuckLake has no generated
columns, keys, indexes or ``INSERT OR REPLACE``, and ``ALTER COLUMN ... SET TYPE`` only widens:
the variants tables store ``product_key``; a placeholder column (no value yet) that gets its
real type is copied into a new column of that type, which takes its name (it moves to the end
of the table). Every committed
transaction is one snapshot: a load is one transaction, its snapshot id is in
``LoadResult.snapshot_id``, found by a token the load writes as the snapshot's commit message
(``ducklake_set_commit_message``), so it is right even when other writers commit meanwhile;
a load whose commit produced no snapshot (DuckDB's ``COMMIT`` after a failed statement
applies nothing and says nothing) is an error.

Concurrency, decided: with a PostgreSQL catalog loads of different sources run at the same
time, and DuckLake fails a commit that deletes from a table another transaction appended to,
or that replaces a view another transaction replaced. So on a lake no object is shared by the
loads of different sources: each source has its own run log, ``<schema>.<source>_runs``
(``Target.runs``; a reload still replaces its row, retention still deletes), and
``<schema>.runs`` is a view, the union of every source's run log, that a load creates or
replaces only when a source's run log is new to it: the first load of a source, not every
load. Two first loads racing still conflict on that view; the loser is retried. A SQLite
catalog is one writer at a time (keep the Dagster pool at 1); ``LAKE_SQLITE_OPTIONS`` put its
catalog in WAL mode with a busy timeout, so readers never block the writer.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

import duckdb

from ..api.models import validate_identifier
from .errors import WarehouseError, WarehouseLockedError
from .quote import _lit, _q

__all__ = [
    "CAPABILITIES",
    "DEFAULT_DUCKDB_PATH",
    "DEFAULT_LAKE_ALIAS",
    "DEFAULT_SCHEMA",
    "DEFAULT_SETTINGS",
    "LAKE_SQLITE_OPTIONS",
    "OLDEST_READER",
    "STORAGE_COMPATIBILITY_VERSION",
    "Capabilities",
    "Lake",
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
    #: Where the run log is: ``"schema"``, one ``<schema>.runs`` table shared by the schema's
    #: sources (a DuckDB file); ``"source"``, a ``<schema>.<source>_runs`` table per source,
    #: under a ``<schema>.runs`` view (a lake: see the module docstring). ``bind`` sets it.
    run_log: Literal["schema", "source"] = "schema"

    def __post_init__(self) -> None:
        validate_identifier(self.source, "source name")
        validate_identifier(self.schema, "schema")
        if self.catalog is not None and (not isinstance(self.catalog, str) or not self.catalog):
            raise WarehouseError(f"catalog must be a non-empty string, got {self.catalog!r}")
        if self.run_log not in ("schema", "source"):
            raise WarehouseError(f"run_log must be 'schema' or 'source', got {self.run_log!r}")

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
        is the run log: the schema's ``runs``, or the source's ``<source>_runs`` on a lake."""
        if kind == "runs" and self.run_log == "schema":
            return "runs"
        return f"{self.source}_{kind}"

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
        """Quoted ``schema.runs`` (run log, shared by the schema's sources), or
        ``schema.source_runs`` (the source's own run log, on a lake)."""
        return self.qualified(self.table("runs"))

    @property
    def runs_view(self) -> str:
        """Quoted ``schema.runs``: on a lake, the view of every source's run log."""
        return self.qualified("runs")

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
    database: str | os.PathLike[str] | Lake,
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

    A ``Lake`` is attached to a new in-memory DuckDB and made the connection's default catalog
    (``USE``); ``lock_timeout_seconds`` is then how long a SQLite catalog waits for another
    writer (``META_BUSY_TIMEOUT``). Errors attaching it are ``WarehouseError``.
    """
    if isinstance(database, Lake):
        return _connect_lake(database, config, lock_timeout_seconds, read_only)
    path = ensure_folder(database) if not read_only else os.fspath(database)
    settings = _settings(path, config)
    return _wait_for_lock(
        lambda: duckdb.connect(path, read_only=read_only, config=settings),
        path,
        lock_timeout_seconds,
    )


# --- A DuckLake ---------------------------------------------------------------------------------

#: The name a lake is attached under unless configured: its tables are ``lake.<schema>.<table>``.
DEFAULT_LAKE_ALIAS = "lake"
#: ATTACH options for a SQLite catalog: WAL, so that readers (an analyst's open transaction)
#: never block the loader's commit; the busy timeout (``connect``'s ``lock_timeout_seconds``,
#: in ms) is how long a writer waits for another writer (SQLite has one at a time).
LAKE_SQLITE_OPTIONS: Mapping[str, str] = {"META_JOURNAL_MODE": "WAL"}
_CATALOG_KINDS = {"sqlite": "sqlite_scanner", "postgres": "postgres_scanner"}
_PASSWORD_IN_DSN = re.compile(r"(^|\s)password\s*=", re.IGNORECASE)


@dataclass(frozen=True)
class Lake:
    """A DuckLake: where its catalog is and where its data files go.

    ``catalog`` is ``"sqlite:<path>"`` (one machine; one writer at a time) or
    ``"postgres:<libpq connection string>"`` (``"dbname=lake host=db.internal user=etl"``),
    without the password: that is ``password``, kept out of every repr, message and the
    connection string (DuckDB gets it as a temporary PostgreSQL secret). ``data_path`` is a
    local folder (created if missing) or an object-store URL (``s3://bucket/prefix/``, with
    DuckDB's credentials for it configured as secrets). ``alias`` is the catalog name the lake
    is attached under (``lake.extralt.shoes_products``).
    """

    catalog: str
    data_path: str
    password: str | None = field(default=None, repr=False, compare=False)
    alias: str = DEFAULT_LAKE_ALIAS

    def __post_init__(self) -> None:
        kind, sep, location = str(self.catalog).partition(":")
        if not isinstance(self.catalog, str) or not sep or kind not in _CATALOG_KINDS:
            raise WarehouseError(
                "catalog must be 'sqlite:<path to the catalog file>' or "
                f"'postgres:<libpq connection string>', got {self.catalog!r}."
            )
        if not location.strip():
            raise WarehouseError(
                f"catalog {self.catalog!r} names no {kind} database: write "
                + (
                    "'sqlite:data/lake.sqlite'."
                    if kind == "sqlite"
                    else "'postgres:dbname=lake host=...'."
                )
            )
        if kind == "postgres" and _PASSWORD_IN_DSN.search(location):
            raise WarehouseError(
                "catalog has a password= in its connection string: take it out and give the "
                "password separately (DuckLakeResource's catalog_password, from an EnvVar), so "
                "it never reaches logs or metadata. (The catalog is not repeated here.)"
            )
        if kind == "sqlite" and self.password is not None:
            raise WarehouseError(
                "password is for a PostgreSQL catalog; a SQLite catalog has none: leave it unset."
            )
        if not isinstance(self.data_path, str) or not self.data_path.strip():
            raise WarehouseError(
                "data_path must name the folder (or object-store URL, such as "
                f"'s3://bucket/prefix/') for the lake's Parquet files, got {self.data_path!r}."
            )
        validate_identifier(self.alias, "lake alias")

    @property
    def kind(self) -> str:
        """``"sqlite"`` or ``"postgres"``."""
        return self.catalog.partition(":")[0]

    @property
    def location(self) -> str:
        """The catalog database: the SQLite file, or the libpq connection string."""
        return self.catalog.partition(":")[2]

    @property
    def uri(self) -> str:
        """``ducklake:<catalog>``, a SQLite path made absolute (no password: it is never in
        ``catalog``)."""
        if self.kind == "sqlite":
            return f"ducklake:sqlite:{Path(self.location).resolve()}"
        return f"ducklake:{self.catalog}"

    def __str__(self) -> str:
        return self.uri


def _is_url(path: str) -> bool:
    return "://" in path


def _packaged_extension(name: str) -> str | None:
    """The extension file of the pip package ``duckdb-extension-<name>`` for this DuckDB, when
    that package is installed (offline installs); None otherwise: DuckDB then installs the
    extension from its own repository."""
    spec = importlib.util.find_spec(f"duckdb_extension_{name}")
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        path = Path(folder, "extensions", f"v{duckdb.__version__}", f"{name}.duckdb_extension")
        if path.is_file():
            return str(path)
    return None


def _load_extensions(conn: duckdb.DuckDBPyConnection, lake: Lake) -> None:
    """``ducklake`` and the catalog's scanner, installed and loaded. DuckDB checks each
    extension's signature at ``LOAD``: unsigned extensions are never allowed."""
    for name in ("ducklake", _CATALOG_KINDS[lake.kind]):
        packaged = _packaged_extension(name)
        try:
            conn.execute(f"INSTALL {_lit(packaged)}" if packaged else f"INSTALL {name}")
            conn.execute(f"LOAD {name}")
        except duckdb.Error as exc:
            raise WarehouseError(
                f"DuckDB {duckdb.__version__} could not install or load its {name!r} extension "
                f"for the lake {lake.uri!r}. Online, DuckDB downloads it from its repository; "
                "offline, install the packaged extensions (pip install "
                f"'extralt-dagster[ducklake]', which needs duckdb=={duckdb.__version__} to "
                f"match). DuckDB said: {exc}"
            ) from None


def _attach_sql(lake: Lake, busy_timeout_ms: int, read_only: bool) -> str:
    options = [f"DATA_PATH {_lit(lake.data_path)}"]
    if lake.kind == "sqlite":
        options += [f"{k} {_lit(v)}" for k, v in LAKE_SQLITE_OPTIONS.items()]
        options.append(f"META_BUSY_TIMEOUT {int(busy_timeout_ms)}")
    if read_only:
        options.append("READ_ONLY")
    return f"ATTACH {_lit('ducklake:' + lake.catalog)} AS {_q(lake.alias)} ({', '.join(options)})"


def _connect_lake(
    lake: Lake, config: Mapping[str, Any] | None, lock_timeout_seconds: float, read_only: bool
) -> duckdb.DuckDBPyConnection:
    settings = {**DEFAULT_SETTINGS, **(config or {})}
    if not read_only:
        if lake.kind == "sqlite":
            ensure_folder(lake.location)
        if not _is_url(lake.data_path):
            os.makedirs(lake.data_path, exist_ok=True)
    attempts = 0
    while True:
        attempts += 1
        try:
            return _attach(lake, settings, lock_timeout_seconds, read_only)
        except duckdb.Error as exc:
            said = str(exc)
            if lake.password:
                said = said.replace(lake.password, "***")
            if _INITIALIZING in said and attempts < _INIT_ATTEMPTS:
                # Two processes attaching a new lake at once both create its catalog tables;
                # one loses, and the next attempt finds them made.
                time.sleep(0.1 * attempts)
                continue
            raise WarehouseError(
                f"Cannot attach the lake {lake.uri!r} (data path {lake.data_path!r}): {said}",
                retryable=isinstance(exc, duckdb.IOException) or _INITIALIZING in said,
            ) from None


_INITIALIZING = "Failed to initialize DuckLake"
_INIT_ATTEMPTS = 5


def _attach(
    lake: Lake, settings: Mapping[str, Any], lock_timeout_seconds: float, read_only: bool
) -> duckdb.DuckDBPyConnection:
    conn = duckdb.connect(":memory:", config=dict(settings))
    try:
        _load_extensions(conn, lake)
        if lake.password is not None:
            # The default PostgreSQL secret: libpq takes the password from it, and it is in no
            # connection string (duckdb_databases() shows the ATTACH path to every reader).
            conn.execute(f"CREATE TEMPORARY SECRET (TYPE postgres, PASSWORD {_lit(lake.password)})")
        conn.execute(_attach_sql(lake, round(lock_timeout_seconds * 1000), read_only))
        conn.execute(f"USE {_q(lake.alias)}")
    except BaseException:
        conn.close()
        raise
    return conn


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
        "lock_timeout_seconds. Where readers and loads must coexist, load into a DuckLake "
        "instead (extralt_dagster.DuckLakeResource under the duckdb resource key, or "
        f"EXTRALT_DUCKLAKE_CATALOG): readers never block its loads. DuckDB said: {said}",
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
    #: Views. The lake's ``<schema>.runs`` is one (earlier releases' products view was).
    views: bool = True
    #: ``ALTER COLUMN ... SET DATA TYPE`` to any type (``USING``). Without it (DuckLake only
    #: widens), a placeholder column that gets its real type is dropped and added again.
    any_type_change: bool = True
    #: Each commit is a numbered snapshot (DuckLake): the load reports its snapshot id.
    snapshots: bool = False
    #: One run log shared by the schema's sources; without it, one per source (``Target``).
    shared_run_log: bool = True


#: Capabilities by DuckDB's catalog type (``duckdb_databases().type``). A DuckDB file, memory
#: and MotherDuck have them all; a type not listed is treated as a DuckDB file (as it always was).
CAPABILITIES: Mapping[str, Capabilities] = {
    "duckdb": Capabilities(),
    "ducklake": Capabilities(
        generated_columns=False, any_type_change=False, snapshots=True, shared_run_log=False
    ),
}


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
    """``target`` qualified with ``conn``'s catalog, unless it names one already, with the run
    log where that catalog keeps it."""
    bound = target if target.catalog is not None else target.in_catalog(attached_catalog(conn))
    caps = capabilities(conn, bound.catalog or "")
    return dataclasses.replace(bound, run_log="schema" if caps.shared_run_log else "source")


def table_exists(
    conn: duckdb.DuckDBPyConnection, catalog: str, schema: str, table: str, *, views: bool = False
) -> bool:
    """Whether ``catalog.schema.table`` is a table (or, with ``views``, a table or a view)."""
    view_sql = (
        " UNION ALL SELECT database_name, schema_name, view_name FROM duckdb_views()"
        if views
        else ""
    )
    row = conn.execute(
        "SELECT count(*) FROM (SELECT database_name, schema_name, table_name FROM duckdb_tables()"
        f"{view_sql}) t(d, s, n) WHERE d = ? AND s = ? AND n = ?",
        [catalog, schema, table],
    ).fetchone()
    return bool(row and row[0])


def exists(conn: duckdb.DuckDBPyConnection, target: Target, table: str) -> bool:
    """Whether ``table`` exists in ``target``'s (bound) catalog and schema."""
    return table_exists(conn, target.catalog or attached_catalog(conn), target.schema, table)
