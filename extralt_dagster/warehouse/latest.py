"""The latest products and their current offers, at a cost that follows the run's size, never
history's length: a small pointer table kept per load, and two views that join it.

``<source>_latest_captures`` (TABLE) holds, per product key, which capture is history's newest
by ``_ranking``: its ``run_id``, ``export_row`` and ``loaded_at``, plus the ranking's own
columns. ``<source>_products`` (VIEW) joins it to history, ``<source>_current_variants`` (VIEW)
to the variants table, on ``(loaded_at, run_id, export_row)``. Why that is fast: one load's rows
share one ``loaded_at`` and sit together in their own row groups, so DuckDB's join hands the
pointers' ``loaded_at`` range to the history scan, whose zone maps skip every older load's row
groups; a filter on ``product_key`` or ``product_id`` (the views take both from the pointers)
narrows the pointers first, then history to one load. The views' text changes only when
history's columns do, so a load re-creates neither unless it evolved the schema.

A load changes only the pointers it must:

- a new run (no pointer names it): its own newest capture of each key against that key's
  pointer, the newer of the two kept;
- a reload of a run that pointers name, and a retention that drops such runs: those keys are
  ranked again over the history that remains (DELETE, then INSERT; never ``INSERT OR
  REPLACE``, which is much slower in DuckDB);
- no pointer table, or one with other columns than history's give (history gained or retyped a
  ranking column): rebuilt from all of history (scalar columns only: seconds for millions).

The changed keys are kept in a connection-local temporary table while the load runs.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from datetime import datetime

import duckdb

from .quote import _lit, _q
from .schema import _table_columns, _Type
from .sql import VARIANT_COLUMNS, _product_key_expr, _timestamp_expr
from .target import Target, exists

#: The temporary table of the pointers a load changed.
_CHANGED = "temp.main._extralt_changed_keys"
#: What joins a pointer to its capture in history and to its offers in the variants table.
JOIN_COLUMNS = ("loaded_at", "run_id", "export_row")
#: A pointer's columns after ``product_key``, in order, those history has: the join's, plus
#: ``product_id`` (so a lookup filters the pointers, not history) and the ranking's.
_POINTER_COLUMNS = ("product_id", *JOIN_COLUMNS, "extracted_at", "id")


def _ranking(cols: Mapping[str, _Type]) -> list[tuple[str, str]]:
    """How captures of one key rank, newest first, as (expression, direction): the instant of
    ``extracted_at``, then ``loaded_at``, ``run_id``, the capture ``id`` and its row in the
    export. Every expression reads columns pointers carry, so it ranks pointers alike."""
    order = []
    if "extracted_at" in cols:
        # The instant, not the raw value: a NaN would otherwise sort as the newest capture.
        order.append((_timestamp_expr(_q("extracted_at"), cols["extracted_at"]), "DESC NULLS LAST"))
    order += [("loaded_at", "DESC"), ("run_id", "DESC")]
    if "id" in cols:
        order.append((_q("id"), "DESC NULLS LAST"))
    order.append(("export_row", "DESC NULLS LAST"))
    return order


def _pointer_columns(cols: Mapping[str, _Type]) -> list[str]:
    """A pointer's columns after ``product_key``, in order."""
    return [c for c in _POINTER_COLUMNS if c in cols]


def _pointers_sql(target: Target, cols: Mapping[str, _Type], where: str) -> str:
    """The pointer of each key of history's rows matching ``where``: its newest capture there.
    The key is computed once, in a materialized CTE: inlined, DuckDB computed it three times
    (filter, partition, projection), twice the CPU time at 1M captures (BENCHMARKS.md)."""
    key = _product_key_expr(cols)
    order = ", ".join(f"{e} {d}" for e, d in _ranking(cols))
    names = ", ".join(_q(c) for c in _pointer_columns(cols))
    return (
        f"WITH keyed AS MATERIALIZED (\n"
        f"  SELECT {key} AS product_key, {names} FROM {target.captures} WHERE {where})\n"
        f"SELECT product_key, {names} FROM keyed WHERE product_key IS NOT NULL\n"
        f"QUALIFY row_number() OVER (PARTITION BY product_key ORDER BY {order}) = 1"
    )


def maintain_latest(
    conn: duckdb.DuckDBPyConnection,
    target: Target,
    cols: Mapping[str, _Type],
    run_id: str,
    loaded_at: datetime,
) -> None:
    """Bring the pointers and both views up to date after history's rows of ``run_id`` were
    replaced by rows loaded at ``loaded_at``. Filtering the run's rows on ``loaded_at`` too lets
    zone maps skip every other load's row groups: ``run_id`` alone would read that column of all
    of history (DuckDB keeps only a string's first bytes in its zone maps)."""
    if _rebuild_needed(conn, target, cols):
        conn.execute(f"DROP TABLE IF EXISTS {target.latest_captures}")
        conn.execute(
            f"CREATE TABLE {target.latest_captures} AS {_pointers_sql(target, cols, 'true')}"
        )
    else:
        stale = conn.execute(
            f"SELECT count(*) FROM {target.latest_captures} WHERE run_id = ?", [run_id]
        ).fetchone()
        if stale and stale[0]:
            # A reload: this run's pointers may have lost their capture. Rank its keys and
            # those of the run's new rows again, over all of history.
            key = _product_key_expr(cols)
            conn.execute(
                f"CREATE OR REPLACE TEMP TABLE _extralt_changed_keys AS "
                f"SELECT product_key FROM {target.latest_captures} WHERE run_id = $run UNION "
                f"SELECT {key} FROM {target.captures} "
                f"WHERE loaded_at = $at AND run_id = $run AND {key} IS NOT NULL",
                {"run": run_id, "at": loaded_at},
            )
            _rerank_changed(conn, target, cols)
        else:
            _take_newer_of_run(conn, target, cols, run_id, loaded_at)
    ensure_views(conn, target, cols)


def _take_newer_of_run(
    conn: duckdb.DuckDBPyConnection,
    target: Target,
    cols: Mapping[str, _Type],
    run_id: str,
    loaded_at: datetime,
) -> None:
    """Point each key at the run's newest capture of it where that is newer than its pointer."""
    ranking = _ranking(cols)
    order = ", ".join(f"{e} {d}" for e, d in ranking)
    names = ", ".join(_q(c) for c in ["product_key", *_pointer_columns(cols)])
    conn.execute(
        f"CREATE OR REPLACE TEMP TABLE _extralt_changed_keys AS\n"
        f"WITH run AS ({_pointers_sql(target, cols, 'loaded_at = $at AND run_id = $run')}),\n"
        f"ranked AS (\n"
        f"  SELECT {names}, 1 AS _mine FROM run\n"
        f"  UNION ALL\n"
        f"  SELECT {names}, 0 AS _mine FROM {target.latest_captures}\n"
        f"  WHERE product_key IN (SELECT product_key FROM run))\n"
        f"SELECT {names} FROM ranked\n"
        f"QUALIFY row_number() OVER (PARTITION BY product_key ORDER BY {order}, _mine) = 1 "
        f"AND _mine = 1",
        {"run": run_id, "at": loaded_at},
    )
    conn.execute(
        f"DELETE FROM {target.latest_captures} "
        f"WHERE product_key IN (SELECT product_key FROM {_CHANGED})"
    )
    conn.execute(f"INSERT INTO {target.latest_captures} SELECT {names} FROM {_CHANGED}")
    conn.execute(f"DROP TABLE {_CHANGED}")


def _rerank_changed(
    conn: duckdb.DuckDBPyConnection, target: Target, cols: Mapping[str, _Type]
) -> None:
    """Rank the changed keys again over all of history (a key with no capture left leaves)."""
    key = _product_key_expr(cols)
    conn.execute(
        f"DELETE FROM {target.latest_captures} "
        f"WHERE product_key IN (SELECT product_key FROM {_CHANGED})"
    )
    where = f"{key} IN (SELECT product_key FROM {_CHANGED})"
    names = ", ".join(_q(c) for c in ["product_key", *_pointer_columns(cols)])
    conn.execute(
        f"INSERT INTO {target.latest_captures} ({names}) {_pointers_sql(target, cols, where)}"
    )
    conn.execute(f"DROP TABLE {_CHANGED}")


def rerank_keys_of_runs(
    conn: duckdb.DuckDBPyConnection,
    target: Target,
    cols: Mapping[str, _Type],
    run_ids: Iterable[str],
) -> None:
    """After ``run_ids`` left history: rank again the keys whose pointer named them."""
    conn.execute(
        f"CREATE OR REPLACE TEMP TABLE _extralt_changed_keys AS "
        f"SELECT product_key FROM {target.latest_captures} WHERE run_id IN "
        f"(SELECT unnest($runs::VARCHAR[]))",
        {"runs": list(run_ids)},
    )
    _rerank_changed(conn, target, cols)


def _rebuild_needed(
    conn: duckdb.DuckDBPyConnection, target: Target, cols: Mapping[str, _Type]
) -> bool:
    """No pointer table, or one whose columns are not those history's columns give now."""
    if not exists(conn, target, target.table("latest_captures")):
        return True
    have = [(n.lower(), t.sql) for n, t in _table_columns(conn, target.latest_captures)]
    want = [("product_key", "VARCHAR")] + [(c, cols[c].sql) for c in _pointer_columns(cols)]
    return have != want


# --- The views ---------------------------------------------------------------------------------


def _products_view_sql(target: Target, history: list[str]) -> str:
    """``product_key`` and history's columns, in history's order; the pointer's own columns
    from the pointer, so a filter on them narrows the pointers and, through the join, history."""
    select = ", ".join(
        f"p.{_q(c)}" if c.lower() in _POINTER_COLUMNS else f"h.{_q(c)}" for c in history
    )
    on = " AND ".join(f"h.{_q(c)} = p.{_q(c)}" for c in JOIN_COLUMNS)
    return (
        f"SELECT p.product_key, {select}\n"
        f"FROM {target.in_schema('latest_captures')} AS p\n"
        f"JOIN {target.in_schema('captures')} AS h ON {on}"
    )


def _current_variants_view_sql(target: Target, has_product_id: bool) -> str:
    """The variants table's columns, ``product_key`` (and ``product_id``) from the pointer."""
    from_pointer = {"product_key", *JOIN_COLUMNS} | ({"product_id"} if has_product_id else set())
    select = ", ".join(
        f"p.{_q(n)}" if n in from_pointer else f"v.{_q(n)}" for n, _ in VARIANT_COLUMNS
    )
    on = " AND ".join(f"v.{_q(c)} = p.{_q(c)}" for c in JOIN_COLUMNS)
    return (
        f"SELECT {select}\n"
        f"FROM {target.in_schema('latest_captures')} AS p\n"
        f"JOIN {target.in_schema('variants')} AS v ON {on}"
    )


def ensure_views(
    conn: duckdb.DuckDBPyConnection, target: Target, cols: Mapping[str, _Type]
) -> None:
    """Create both views where they are missing, are tables (this branch's first form) or say
    something else than they should now. Unchanged views are left alone: re-creating one on
    every load would make concurrent loads of a shared catalog conflict."""
    history = [n for n, _ in _table_columns(conn, target.captures)]
    wanted = {
        "products": _products_view_sql(target, history),
        "current_variants": _current_variants_view_sql(target, "product_id" in cols),
    }
    for kind, sql in wanted.items():
        name = target.table(kind)  # type: ignore[arg-type]
        mark = f"{_MARK} {hashlib.sha256(sql.encode()).hexdigest()[:16]}"
        comment = _view_comment(conn, target, name)
        if comment == mark:
            continue
        if comment is None and exists(conn, target, name):
            conn.execute(f"DROP TABLE {target.qualified(name)}")
        conn.execute(f"CREATE OR REPLACE VIEW {target.qualified(name)} AS {sql}")
        conn.execute(f"COMMENT ON VIEW {target.qualified(name)} IS {_lit(mark)}")


#: The start of the views' comment, then a digest of their SQL: DuckDB keeps a view's text
#: only re-written, so the digest tells whether a view is this release's as it should be now.
_MARK = "extralt-dagster:"


def _view_comment(conn: duckdb.DuckDBPyConnection, target: Target, name: str) -> str | None:
    """The view's comment ("" for a view without one); None when ``name`` is no view."""
    row = conn.execute(
        "SELECT coalesce(comment, '') FROM duckdb_views() WHERE database_name = ? "
        "AND schema_name = ? AND view_name = ?",
        [target.catalog, target.schema, name],
    ).fetchone()
    return None if row is None else str(row[0])
