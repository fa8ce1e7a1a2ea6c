"""Load Extralt exports into DuckDB: ``load_export``, one transaction per run's export.

Plain ``duckdb`` and the standard library: no Dagster, no pandas, no row-by-row Python. The
warehouse package holds every DuckDB SQL statement of the project: ``target`` (where the data
lives, how to open it, the names of a source's objects), ``schema`` (the type algebra),
``evolution`` (how an export's columns meet history's), ``sql`` (the statements' text),
``export`` (reading the file), ``stats`` (counts) and this module, the load as named steps.

Objects, per source (``Target``), in schema ``extralt`` unless overridden:

``<schema>.<source>_captures`` -- TABLE. History: one row per capture per Extralt run, every
    export column plus ``run_id``, ``robot_id``, ``loaded_at`` (TIMESTAMPTZ) and ``export_row``
    (the capture's row in the export). Loading a run replaces that run's rows (``DELETE`` +
    ``INSERT BY NAME``, never ``INSERT OR REPLACE``).
``<schema>.<source>_variants`` -- TABLE. One row per variant offer, flat, with the fixed columns
    of ``VARIANT_COLUMNS``; maintained per load from this run's history rows only (the export
    is read once). A variant without offers has no row here; the capture keeps it.
``<schema>.<source>_products``, ``<schema>.<source>_current_variants`` -- VIEWS. One row per
    product key (``product_id``, else ``url``, blank counting as none): its newest capture
    (``product_key`` plus every history column); and that capture's offers. They join
    ``<schema>.<source>_latest_captures``, a TABLE of one pointer per key kept per load from
    this run's rows only: ``latest``.
``<schema>.runs`` -- TABLE. Run log shared by all sources of the schema: one row per
    (source, run_id) loaded, replaced on reload. On a lake each source has its own,
    ``<schema>.<source>_runs``, and ``<schema>.runs`` is a view of them all (``target``).

History retention (off by default): ``retention``. Why pointers and views: BENCHMARKS.md.

All changes of one load run in one transaction: a corrupt or truncated file, a schema
conflict or any error leaves every object exactly as it was. The load stops at the first
failed statement (DuckDB's ``COMMIT`` after a failed statement applies nothing, silently); on
a lake, a commit that produced no snapshot is an error too, and a commit that conflicts with
another writer's (a PostgreSQL catalog) is retried whole, ``CONFLICT_RETRIES`` times.

Schema evolution of the history table, the JSON lines types and placeholders: ``evolution``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import duckdb

from .errors import _RETRYABLE_DUCKDB_ERRORS, WarehouseError, _setting
from .evolution import _drift, _Plan, _plan, _variants_key_stored
from .export import (
    _blank,
    _check_format,
    _check_path,
    _corrupt,
    _file_columns,
    _parquet_without_columns,
    _reader,
    _threads_for_parquet,
    _unreadable,
)
from .latest import maintain_latest
from .quote import _lit, _q
from .records import LoadResult, RunRecord
from .retention import HistoryRetention, apply_retention
from .schema import _holds_no_value, _table_columns, _Type
from .sql import (
    _RUNS_COLUMNS,
    META_COLUMN_TYPES,
    VARIANT_COLUMNS,
    _ddl_columns,
    _variants_insert_sql,
)
from .stats import _Checks, _column_types, _run_checks, table_stats
from .target import Capabilities, Target, bind, capabilities, exists

__all__ = ["CONFLICT_RETRIES", "load_export"]

#: Attempts after the first when a lake's commit conflicts with another writer's, with a
#: doubling delay from ``_CONFLICT_DELAY`` seconds (0.2, 0.4, ... 3.2: about 6 s in all).
CONFLICT_RETRIES = 5
_CONFLICT_DELAY = 0.2
#: Who a lake's snapshots of loads are by (``ducklake_snapshots().author``).
SNAPSHOT_AUTHOR = "extralt-dagster"


def load_export(
    conn: duckdb.DuckDBPyConnection,
    path: str | os.PathLike[str],
    *,
    target: Target,
    run: RunRecord,
    format: str = "parquet",
    bytes_downloaded: int | None = None,
    include_variants: bool = True,
    history_retention: HistoryRetention | None = None,
) -> LoadResult:
    """Load one run's export file into ``target``'s tables, in one transaction.

    Replaces any rows an earlier load of ``run.run_id`` left, so a retry or a reload never
    duplicates. Raises ``WarehouseSchemaError`` for a type change history cannot absorb and
    ``WarehouseError`` for anything else (unreadable file, DuckDB error); in both cases no
    table has changed. ``conn`` must not be inside a transaction.

    ``include_variants=False`` loads history, the products table and the run log but not the
    variants table: this run's earlier variant rows are removed and none are written (the
    benchmark's history-only load).

    ``history_retention`` (off by default) drops, in the same transaction, the source's runs
    it no longer keeps (``retention``).
    """
    started = time.perf_counter()
    fmt = _check_format(format)
    file_path = _check_path(path)
    empty_jsonl = fmt == "jsonl" and _blank(file_path)
    attempt = 0
    while True:
        try:
            return _attempt(
                conn,
                file_path,
                target=target,
                run=run,
                fmt=fmt,
                started=started,
                empty_jsonl=empty_jsonl,
                bytes_downloaded=bytes_downloaded,
                include_variants=include_variants,
                history_retention=history_retention,
            )
        except WarehouseError as exc:
            if not _conflict(exc) or attempt >= CONFLICT_RETRIES:
                if _conflict(exc):
                    named = _conflicting_objects(conn, str(exc.__cause__))
                    raise WarehouseError(
                        f"{exc}{named} (Gave up after {attempt + 1} attempts: another writer "
                        "kept committing changes to the same object.)",
                        retryable=True,
                    ) from exc
                raise
            time.sleep(_CONFLICT_DELAY * 2**attempt)
            attempt += 1


def _conflict(exc: WarehouseError) -> bool:
    """Whether a load failed because another transaction committed a conflicting change."""
    cause = exc.__cause__
    return isinstance(cause, duckdb.TransactionException) and "conflict" in str(cause).lower()


_OBJECT_INDEX = re.compile(r'(?:table|view) with index "?(\d+)"?')


def _conflicting_objects(conn: duckdb.DuckDBPyConnection, said: str) -> str:
    """`` (index 7 is extralt.shoes_runs)``: DuckLake names a conflicting table or view by
    its index in the catalog; this reads the name there. Empty when it cannot tell."""
    names = []
    for index in dict.fromkeys(_OBJECT_INDEX.findall(said)):
        with contextlib.suppress(duckdb.Error):
            meta = _q(f"__ducklake_metadata_{_current_catalog(conn)}")
            row = conn.execute(
                f"SELECT s.schema_name || '.' || o.name FROM (SELECT table_id AS id, schema_id, "
                f"table_name AS name, begin_snapshot FROM {meta}.ducklake_table UNION ALL "
                f"SELECT view_id, schema_id, view_name, begin_snapshot FROM {meta}.ducklake_view) o "
                f"JOIN {meta}.ducklake_schema s USING (schema_id) WHERE o.id = ? "
                "ORDER BY o.begin_snapshot DESC LIMIT 1",
                [int(index)],
            ).fetchone()
            if row:
                names.append(f"index {index} is {row[0]}")
    return f" ({'; '.join(names)})" if names else ""


def _current_catalog(conn: duckdb.DuckDBPyConnection) -> str:
    row = conn.execute("SELECT current_database()").fetchone()
    return str(row[0]) if row else ""


def _attempt(
    conn: duckdb.DuckDBPyConnection,
    file_path: str,
    *,
    target: Target,
    run: RunRecord,
    fmt: str,
    started: float,
    empty_jsonl: bool,
    bytes_downloaded: int | None,
    include_variants: bool,
    history_retention: HistoryRetention | None,
) -> LoadResult:
    """One attempt of the load: one transaction."""
    loaded_at = datetime.now(UTC)
    _begin(conn)
    try:
        bound = bind(conn, target)
        job = _Job(
            conn=conn,
            target=bound,
            caps=capabilities(conn, bound.catalog or ""),
            run=run,
            path=file_path,
            fmt=fmt,
            loaded_at=loaded_at,
            empty_jsonl=empty_jsonl,
            bytes_downloaded=bytes_downloaded,
            include_variants=include_variants,
            retention=history_retention,
            token=uuid.uuid4().hex,
        )
        _mark_snapshot(job)
        return _commit(job, _load(job, started), started)
    except BaseException as exc:
        with contextlib.suppress(duckdb.Error):  # already gone: nothing was committed
            conn.execute("ROLLBACK")
        error = _load_error(exc, conn, run, file_path, fmt, target)
        if error is None:
            raise
        raise error from exc


@dataclass
class _VariantsTable:
    """The variants table as this load found it."""

    #: It predates ``export_row``: refill it from history (once).
    refill: bool = False
    #: Its ``product_key`` is stored (this release), not generated (``GENERATED_KEY``).
    key_stored: bool = True


@dataclass(frozen=True)
class _Job:
    """One load: what every step reads. ``target`` is bound to the connection's catalog."""

    conn: duckdb.DuckDBPyConnection
    target: Target
    caps: Capabilities
    run: RunRecord
    path: str
    fmt: str
    loaded_at: datetime
    empty_jsonl: bool
    bytes_downloaded: int | None
    include_variants: bool
    retention: HistoryRetention | None = None
    #: Unique to this attempt: the commit message of its snapshot, on a lake.
    token: str = ""
    #: What ``_prepare`` found of the variants table.
    variants_table: _VariantsTable = dataclasses.field(default_factory=_VariantsTable)


def _begin(conn: duckdb.DuckDBPyConnection) -> None:
    try:
        conn.execute("BEGIN TRANSACTION")
    except duckdb.Error as exc:
        raise WarehouseError(
            f"Cannot start the load transaction (is one already open on this connection?): {exc}"
        ) from exc


def _mark_snapshot(job: _Job) -> None:
    """On a lake: name the snapshot this transaction will commit, so that it can be found."""
    if not job.caps.snapshots:
        return
    info = json.dumps({"source": job.target.source, "run_id": job.run.run_id, "load": job.token})
    job.conn.execute(
        f"CALL ducklake_set_commit_message({_lit(job.target.catalog or '')}, "
        f"{_lit(SNAPSHOT_AUTHOR)}, {_lit(f'load {job.target.source} run {job.run.run_id}')}, "
        f"extra_info => {_lit(info)})"
    )


def _commit(job: _Job, result: LoadResult, started: float) -> LoadResult:
    """Commit: where DuckDB compresses and writes the rows. Its time is the ``commit`` phase.
    On a lake, the snapshot the commit made is found by its token; none is an error."""
    conn = job.conn
    conn.execute("COMMIT")
    commit_seconds = round(time.perf_counter() - started - result.load_seconds, 4)
    snapshot_id = _committed_snapshot(job) if job.caps.snapshots else None
    return dataclasses.replace(
        result,
        load_seconds=time.perf_counter() - started,
        phase_seconds={**result.phase_seconds, "commit": commit_seconds},
        snapshot_id=snapshot_id,
    )


def _committed_snapshot(job: _Job) -> int:
    row = job.conn.execute(
        f"SELECT max(snapshot_id) FROM ducklake_snapshots({_lit(job.target.catalog or '')}) "
        "WHERE author = ? AND json_extract_string(commit_extra_info, '$.load') = ?",
        [SNAPSHOT_AUTHOR, job.token],
    ).fetchone()
    if row is None or row[0] is None:
        raise WarehouseError(
            f"Loading run {job.run.run_id} into {job.target.table_names['captures']}: the "
            "lake's COMMIT returned, but no snapshot of this load exists, so nothing was "
            "loaded. A statement of the transaction must have failed unseen; load the run "
            "again.",
            retryable=True,
        )
    return int(row[0])


def _load_error(
    exc: BaseException,
    conn: duckdb.DuckDBPyConnection,
    run: RunRecord,
    path: str,
    fmt: str,
    target: Target,
) -> WarehouseError | None:
    """The ``WarehouseError`` a DuckDB error of the load becomes; None for any other error,
    which propagates as it was raised."""
    if isinstance(exc, duckdb.OutOfMemoryException):
        return WarehouseError(
            f"Loading run {run.run_id} from {path!r} ran out of DuckDB memory "
            f"(memory_limit {_setting(conn, 'memory_limit')}); nothing was changed. Raise "
            "memory_limit in the connect() config, or lower threads. DuckDB said: "
            f"{exc}"
        )
    if not isinstance(exc, duckdb.Error):
        return None
    retryable = isinstance(exc, _RETRYABLE_DUCKDB_ERRORS)
    return WarehouseError(
        f"Loading run {run.run_id} from {path!r} ({fmt}) into "
        f"{target.table_names['captures']} failed; nothing was changed. "
        + ("" if retryable else "Loading it again would fail the same way. ")
        + f"DuckDB said: {exc}",
        retryable=retryable,
    )


class _Clock:
    """Seconds per phase, in the names ``LoadResult.phase_seconds`` reports."""

    def __init__(self) -> None:
        self.phases: dict[str, float] = {}
        self._last = time.perf_counter()

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.phases[name] = round(now - self._last, 4)
        self._last = now


def _load(job: _Job, started: float) -> LoadResult:
    """The load, step by step, inside the transaction ``load_export`` opened."""
    clock = _Clock()
    table_cols, plan = _prepare(job)
    clock.lap("prepare")
    has_history = table_cols is not None or plan.created
    _evolve(job, plan, table_cols)
    rows = _history(job, plan, has_history)
    clock.lap("history")
    # DuckDB matches identifiers case-insensitively, quoted or not: key them by lower case.
    cols = _history_types(job) if has_history else {}
    variants_for_run = _variants(job, cols, rows)
    clock.lap("variants")
    if has_history:
        _products(job, cols)
    _run_log(job, rows)
    dropped = _retain(job, cols if has_history else None)
    _runs_view(job)
    clock.lap("products_and_run_log")
    checks = (
        _run_checks(job.conn, job.target, cols, job.run.run_id, job.loaded_at)
        if has_history
        else _Checks()
    )
    result = _result(job, plan, table_cols, rows, variants_for_run, checks, has_history)
    clock.lap("checks")
    return dataclasses.replace(
        result,
        load_seconds=time.perf_counter() - started,
        phase_seconds=clock.phases,
        runs_dropped=dropped,
    )


def _prepare(job: _Job) -> tuple[list[tuple[str, _Type]] | None, _Plan]:
    """Plan: the schema's fixed tables exist, then the export's columns meet history's.
    History's columns come back too (None when there is no history table yet)."""
    conn, target = job.conn, job.target
    conn.execute(f"CREATE SCHEMA IF NOT EXISTS {target.schema_sql}")
    conn.execute(f"CREATE TABLE IF NOT EXISTS {target.runs} ({_ddl_columns(_RUNS_COLUMNS)})")
    _migrate_run_log(conn, target)
    conn.execute(f"CREATE TABLE IF NOT EXISTS {target.variants} ({_ddl_columns(VARIANT_COLUMNS)})")
    job.variants_table.refill = _add_capture_columns(conn, target)
    # Only a catalog with generated columns can hold an earlier release's variants table.
    job.variants_table.key_stored = not job.caps.generated_columns or _variants_key_stored(
        conn, target
    )
    has_table = exists(conn, target, target.table("captures"))
    table_cols = _table_columns(conn, target.captures) if has_table else None
    file_cols = _export_columns(job, table_cols)
    if not file_cols:
        # An empty export (an empty JSON lines file, a Parquet file with no columns, what a run
        # with no captures may give) has no columns to compare: it only empties the run.
        return table_cols, _Plan(False, [], [], [], [], [])

    def empty_in_history(column: str, t: _Type) -> bool:
        return _holds_no_value(conn, target.captures, column, t, job.run.run_id)

    return table_cols, _plan(file_cols, table_cols, empty_in_history)


def _export_columns(
    job: _Job, table_cols: list[tuple[str, _Type]] | None
) -> list[tuple[str, _Type]]:
    """The export's columns and the types to read them as; none for an empty export."""
    if job.empty_jsonl or (job.fmt == "parquet" and _parquet_without_columns(job.path)):
        # Asked before DuckDB reads it: DuckDB fails on a Parquet file with no columns, and a
        # failed statement aborts the transaction (and, on a lake, makes COMMIT a silent no-op).
        return []
    try:
        return _file_columns(job.conn, job.path, job.fmt, table_cols)
    except duckdb.Error as exc:
        raise _unreadable(exc, job.path, job.fmt, job.run.run_id) from exc


def _migrate_run_log(conn: duckdb.DuckDBPyConnection, target: Target) -> None:
    """Give a run log made before ``origin`` the column; its rows were all Dagster's runs."""
    if "origin" in {n.lower() for n, _ in _table_columns(conn, target.runs)}:
        return
    conn.execute(f"ALTER TABLE {target.runs} ADD COLUMN origin VARCHAR")
    conn.execute(f"UPDATE {target.runs} SET origin = 'dagster'")


def _add_capture_columns(conn: duckdb.DuckDBPyConnection, target: Target) -> bool:
    """Give a variants table made before ``export_row`` its capture columns; True when it had
    rows then, which only a refill from history can point at their captures."""
    names = {n.lower() for n, _ in _table_columns(conn, target.variants)}
    if "export_row" in names:
        return False
    for name, sql_type in (("loaded_at", "TIMESTAMPTZ"), ("export_row", "BIGINT")):
        if name not in names:
            conn.execute(f"ALTER TABLE {target.variants} ADD COLUMN {_q(name)} {sql_type}")
    row = conn.execute(f"SELECT count(*) FROM {target.variants}").fetchone()
    return bool(row and row[0])


def _evolve(job: _Job, plan: _Plan, table_cols: list[tuple[str, _Type]] | None) -> None:
    """Evolve: create the history table, or add, widen and retype its columns as planned."""
    conn, captures = job.conn, job.target.captures
    if plan.created:
        columns = [(n, t.sql) for n, t in plan.read_types] + list(META_COLUMN_TYPES)
        conn.execute(f"CREATE TABLE {captures} ({_ddl_columns(columns)})")
    elif table_cols is not None and "export_row" not in {n.lower() for n, _ in table_cols}:
        # History from before ``export_row``: any number unique within a run names its rows.
        conn.execute(f"ALTER TABLE {captures} ADD COLUMN export_row BIGINT")
        conn.execute(f"UPDATE {captures} SET export_row = rowid")
    for name, t in plan.add:
        conn.execute(f"ALTER TABLE {captures} ADD COLUMN {_q(name)} {t.sql}")
    for name, _old, new in plan.widen:
        conn.execute(f"ALTER TABLE {captures} ALTER COLUMN {_q(name)} SET DATA TYPE {new.sql}")
    for name, _old, new in plan.typed:
        if not job.caps.any_type_change:
            _retype_by_copy(job, name, new)
            continue
        # Only NULLs and empty lists to convert (this run's own old rows are replaced anyway).
        conn.execute(
            f"ALTER TABLE {captures} ALTER COLUMN {_q(name)} SET DATA TYPE {new.sql} "
            f"USING CASE WHEN run_id = {_lit(job.run.run_id)} THEN NULL "
            f"ELSE {_q(name)}::{new.sql} END"
        )


def _retype_by_copy(job: _Job, name: str, new: _Type) -> None:
    """A placeholder column retyped where ALTER only widens (DuckLake): dropped and added
    again with its real type (it moves to the end of the table; the products table is
    rebuilt), and the values it held (empty lists, none of this run's) put back, cast, by row
    id. Not ADD, UPDATE, DROP and RENAME in one transaction: DuckLake 1.0 commits that, and
    then cannot read the lake's schema again (INTERNAL Error, every later connection)."""
    conn, captures = job.conn, job.target.captures
    column = _q(name)
    held = conn.execute(
        f"CREATE OR REPLACE TEMP TABLE _extralt_retyped AS SELECT rowid AS _rid, {column} AS _v "
        f"FROM {captures} WHERE {column} IS NOT NULL AND run_id IS DISTINCT FROM ?",
        [job.run.run_id],
    ).fetchone()
    conn.execute(f"ALTER TABLE {captures} DROP COLUMN {column}")
    conn.execute(f"ALTER TABLE {captures} ADD COLUMN {column} {new.sql}")
    if held and held[0]:
        conn.execute(
            f"UPDATE {captures} AS h SET {column} = k._v::{new.sql} "
            "FROM temp.main._extralt_retyped k WHERE h.rowid = k._rid"
        )
    conn.execute("DROP TABLE temp.main._extralt_retyped")


def _history(job: _Job, plan: _Plan, has_history: bool) -> int:
    """History: replace this run's rows with the export's; the rows inserted."""
    conn, run, captures = job.conn, job.run, job.target.captures
    if has_history:
        conn.execute(f"DELETE FROM {captures} WHERE run_id = ?", [run.run_id])
    if not plan.read_types:
        return 0
    select = ", ".join(_q(n) for n, _ in plan.read_types)
    params: list[Any] = [run.run_id, run.robot_id, job.loaded_at, job.path]
    if job.fmt == "jsonl":
        params.append({n: t.sql for n, t in plan.read_types})
    # Parquet numbers its rows for free; JSON lines (rare, and slow anyway) by a window.
    row = "file_row_number" if job.fmt == "parquet" else "row_number() OVER () - 1"
    threads = _threads_for_parquet(conn, job.path) if job.fmt == "parquet" else None
    try:
        with _fewer_threads(conn, threads):
            inserted = conn.execute(
                f"INSERT INTO {captures} BY NAME SELECT {select}, ?::VARCHAR AS run_id, "
                f"?::VARCHAR AS robot_id, ?::TIMESTAMPTZ AS loaded_at, {row} AS export_row "
                f"FROM {_reader(job.fmt, json_columns=job.fmt == 'jsonl', row_numbers=True)}",
                params,
            ).fetchone()
    except duckdb.Error as exc:
        # Reading the file is most of this statement: a damaged page fails here.
        corrupt = _corrupt(exc, job.path, job.fmt, run.run_id)
        if corrupt is None:
            raise
        raise corrupt from exc
    return int(inserted[0]) if inserted else 0


@contextlib.contextmanager
def _fewer_threads(conn: duckdb.DuckDBPyConnection, threads: int | None) -> Iterator[None]:
    """Run with ``threads`` DuckDB threads (when given), then the connection's own again."""
    if threads is None:
        yield
        return
    row = conn.execute("SELECT current_setting('threads')").fetchone()
    conn.execute(f"SET threads = {int(threads)}")
    try:
        yield
    finally:
        conn.execute(f"SET threads = {int(row[0]) if row else 1}")


def _history_types(job: _Job) -> dict[str, _Type]:
    """History's columns after the load, by lower-case name."""
    return {n.lower(): t for n, t in _table_columns(job.conn, job.target.captures)}


def _variants(job: _Job, cols: Mapping[str, _Type], rows: int) -> int:
    """Variants: replace this run's variant offers with those of its history rows."""
    conn, run_id = job.conn, job.run.run_id
    refill = job.variants_table.refill and job.include_variants
    stored_key = job.variants_table.key_stored
    conn.execute(
        f"DELETE FROM {job.target.variants}" + ("" if refill else " WHERE run_id = ?"),
        [] if refill else [run_id],
    )
    if not job.include_variants:
        return 0
    if refill and (
        other := _variants_insert_sql(job.target, cols, stored_key=stored_key, where="run_id <> ?")
    ):
        conn.execute(other, [run_id])
    # loaded_at as well: zone maps then skip every other load's row groups of history.
    this_load = "loaded_at = ? AND run_id = ?"
    insert = _variants_insert_sql(job.target, cols, stored_key=stored_key, where=this_load)
    if insert is None or not rows:
        return 0
    inserted = conn.execute(insert, [job.loaded_at, run_id]).fetchone()
    return int(inserted[0]) if inserted else 0


def _products(job: _Job, cols: Mapping[str, _Type]) -> None:
    """Products and current offers: the keys this run changed (``latest``)."""
    maintain_latest(job.conn, job.target, cols, job.run.run_id, job.loaded_at)


def _retain(job: _Job, cols: Mapping[str, _Type] | None) -> tuple[str, ...]:
    """Retention: drop the runs the source no longer keeps (none when it keeps all)."""
    if job.retention is None:
        return ()
    return apply_retention(job.conn, job.target, cols, job.retention, job.loaded_at)


def _run_log(job: _Job, rows: int) -> None:
    """Run log: replace this (source, run) row with one built by column name."""
    conn, run, target = job.conn, job.run, job.target
    conn.execute(
        f"DELETE FROM {target.runs} WHERE source = ? AND run_id = ?", [target.source, run.run_id]
    )
    row = _run_log_row(job, rows)
    names = [n for n, _ in _RUNS_COLUMNS]
    conn.execute(
        f"INSERT INTO {target.runs} ({', '.join(_q(n) for n in names)}) "
        f"VALUES ({', '.join('?' for _ in names)})",
        [row[n] for n in names],  # a column missing from the row is a KeyError, never a NULL
    )


def _runs_view(job: _Job) -> None:
    """On a lake: ``<schema>.runs``, the view of every source's run log, (re)created only when
    it does not cover this source's yet, so that loads of known sources never touch it."""
    target = job.target
    if target.run_log != "source":
        return
    conn = job.conn
    names = [
        str(r[0])
        for r in conn.execute(
            "SELECT table_name FROM duckdb_columns() WHERE database_name = ? AND schema_name = ? "
            "AND table_name LIKE '%\\_runs' ESCAPE '\\' AND column_name IN ('source', 'run_id') "
            "GROUP BY table_name HAVING count(*) = 2 ORDER BY table_name",
            [target.catalog, target.schema],
        ).fetchall()
    ]
    row = conn.execute(
        "SELECT sql FROM duckdb_views() WHERE database_name = ? AND schema_name = ? "
        "AND view_name = 'runs'",
        [target.catalog, target.schema],
    ).fetchone()
    if row is None and exists(conn, target, "runs"):
        return  # a table of that name, not ours: left alone
    current = str(row[0]) if row else ""
    # DuckDB stores the view's SQL re-rendered: names unquoted where they need no quotes.
    if row is not None and all(
        re.search(rf"FROM\s+(?:{re.escape(n)}|{re.escape(_q(n))})(?=[\s);]|$)", current)
        for n in names
    ):
        return
    # Bare names: a view resolves them in its own schema, whatever the reader's catalog alias.
    union = " UNION ALL BY NAME ".join(f"SELECT * FROM {_q(n)}" for n in names)
    conn.execute(f"CREATE OR REPLACE VIEW {target.runs_view} AS {union}")


def _run_log_row(job: _Job, rows: int) -> dict[str, Any]:
    run = job.run
    return {
        "run_id": run.run_id,
        "source": job.target.source,
        "robot_id": run.robot_id,
        "robot_name": run.robot_name,
        "status": run.status,
        "extracted": run.extracted,
        "credits": run.credits,
        "budget": run.budget,
        "created_at": run.created_at,
        "started_at": run.started_at,
        "duration_seconds": run.duration_seconds,
        "dagster_run_id": run.dagster_run_id,
        "export_format": job.fmt,
        "rows_loaded": rows,
        "bytes_downloaded": job.bytes_downloaded,
        "loaded_at": job.loaded_at,
        "origin": run.origin,
    }


def _result(
    job: _Job,
    plan: _Plan,
    table_cols: list[tuple[str, _Type]] | None,
    rows: int,
    variants_for_run: int,
    checks: _Checks,
    has_history: bool,
) -> LoadResult:
    """Checks: the counts after the load, the drift and the data-quality counts of the run."""
    conn, target, run = job.conn, job.target, job.run
    stats = table_stats(conn, target)
    drift = _drift(plan, table_cols)
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
        duplicate_ids=checks.duplicate_ids,
        null_price_rows=checks.null_price_rows,
        inverted_price_rows=checks.inverted_price_rows,
        unconverted_extracted_at=checks.unconverted_extracted_at,
        load_seconds=0.0,
        preview=checks.preview,
        table_names=target.table_names,
        catalog=target.catalog,
        extracted=run.extracted,
    )
