"""The latest products and their current offers: two tables kept, inside each load's
transaction, equal to what ranking all of history would give, at a cost that follows the run's
size and the catalogue's, never history's length.

``<source>_products`` holds, per product key, history's newest capture by ``_ranking``;
``<source>_current_variants`` holds the offers of exactly those captures, in the variants
table's columns. A load changes only the keys it must:

- a new run (none of its rows hold a key's products row): its own newest capture of each key
  against the products row of that key, the newer of the two kept;
- a reload of a run that holds products rows, and a retention that drops runs holding some:
  those keys are ranked again over the history that remains (DELETE, then INSERT from history;
  never ``INSERT OR REPLACE``, which is much slower in DuckDB);
- a products object that is missing, a view (an earlier release's) or has other columns than
  history (history gained or retyped a column): both tables rebuilt from all of history.

The changed keys are kept in a connection-local temporary table while the load runs.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import duckdb

from .quote import _q
from .schema import _table_columns, _Type
from .sql import (
    _ddl_columns,
    _product_key_expr,
    _timestamp_expr,
    _variant_columns,
    _variants_insert_sql,
)
from .target import Capabilities, Target, exists

#: The temporary table of the product keys a load changed.
_CHANGED = "temp.main._extralt_changed_keys"


def _ranking(cols: Mapping[str, _Type]) -> list[tuple[str, str]]:
    """How captures of one key rank, newest first, as (expression, direction): the instant of
    ``extracted_at``, then ``loaded_at``, ``run_id`` and the capture ``id``. History's
    ``rowid`` breaks the last ties (captures of one run alike in all of these)."""
    order = []
    if "extracted_at" in cols:
        # The instant, not the raw value: a NaN would otherwise sort as the newest capture.
        order.append((_timestamp_expr(_q("extracted_at"), cols["extracted_at"]), "DESC NULLS LAST"))
    order += [("loaded_at", "DESC"), ("run_id", "DESC")]
    if "id" in cols:
        order.append((_q("id"), "DESC NULLS LAST"))
    return order


def _newest_rowids_sql(target: Target, cols: Mapping[str, _Type], where: str) -> str:
    """The ``rowid`` of each key's newest capture among history's rows matching ``where``."""
    key = _product_key_expr(cols)
    order = ", ".join(f"{e} {d}" for e, d in _ranking(cols))
    return (
        f"SELECT rowid FROM {target.captures} WHERE {key} IS NOT NULL AND ({where})\n"
        f"QUALIFY row_number() OVER (PARTITION BY {key} ORDER BY {order}, rowid DESC) = 1"
    )


def _products_select_sql(target: Target, cols: Mapping[str, _Type], where: str = "true") -> str:
    """The products rows of the keys of history's rows matching ``where``: ``product_key``
    and every history column of each key's newest capture."""
    key = _product_key_expr(cols)
    return (
        f"SELECT {key} AS product_key, * FROM {target.captures}\n"
        f"WHERE rowid IN ({_newest_rowids_sql(target, cols, where)})"
    )


def maintain_latest(
    conn: duckdb.DuckDBPyConnection,
    target: Target,
    caps: Capabilities,
    cols: Mapping[str, _Type],
    run_id: str,
    *,
    include_variants: bool = True,
) -> None:
    """Bring both tables up to date after history's rows of ``run_id`` were replaced."""
    if _rebuild_needed(conn, target, cols):
        _rebuild(conn, target, caps, cols, include_variants=include_variants)
        return
    stale = conn.execute(
        f"SELECT count(*) FROM {target.products} WHERE run_id = ?", [run_id]
    ).fetchone()
    if stale and stale[0]:
        # A reload: this run's products rows may have lost their capture. Rank its keys and
        # those of the run's new rows again, over all of history.
        key = _product_key_expr(cols)
        conn.execute(
            f"CREATE OR REPLACE TEMP TABLE _extralt_changed_keys AS "
            f"SELECT product_key FROM {target.products} WHERE run_id = $run UNION "
            f"SELECT {key} FROM {target.captures} WHERE run_id = $run AND {key} IS NOT NULL",
            {"run": run_id},
        )
        _rerank_changed(conn, target, caps, cols, include_variants=include_variants)
        return
    _newer_of_run(conn, target, cols, run_id)
    _replace_changed(conn, target, caps, cols, include_variants=include_variants)


def _newer_of_run(
    conn: duckdb.DuckDBPyConnection, target: Target, cols: Mapping[str, _Type], run_id: str
) -> None:
    """The keys whose newest capture is now the run's, with that capture's history ``rowid``:
    the run's newest capture of each key against the key's products row."""
    key = _product_key_expr(cols)
    ranking = _ranking(cols)
    values = ", ".join(f"{e} AS _o{i}" for i, (e, _) in enumerate(ranking))
    order = ", ".join(f"_o{i} {d}" for i, (_, d) in enumerate(ranking))
    conn.execute(
        f"CREATE OR REPLACE TEMP TABLE _extralt_changed_keys AS\n"
        f"WITH run AS (\n"
        f"  SELECT {key} AS product_key, rowid AS _rowid, {values} FROM {target.captures}\n"
        f"  WHERE rowid IN ({_newest_rowids_sql(target, cols, 'run_id = $run')})),\n"
        f"ranked AS (\n"
        f"  SELECT product_key, _rowid, 1 AS _mine, * EXCLUDE (product_key, _rowid) FROM run\n"
        f"  UNION ALL BY NAME\n"
        f"  SELECT p.product_key, NULL AS _rowid, 0 AS _mine, {values} FROM {target.products} p\n"
        f"  WHERE p.product_key IN (SELECT product_key FROM run))\n"
        f"SELECT product_key, _rowid FROM ranked\n"
        f"QUALIFY row_number() OVER (PARTITION BY product_key ORDER BY {order}, _mine) = 1 "
        f"AND _mine = 1",
        {"run": run_id},
    )


def _replace_changed(
    conn: duckdb.DuckDBPyConnection,
    target: Target,
    caps: Capabilities,
    cols: Mapping[str, _Type],
    *,
    include_variants: bool,
) -> None:
    """Replace the products rows of the changed keys with the captures at their ``_rowid``."""
    key = _product_key_expr(cols)
    conn.execute(
        f"DELETE FROM {target.products} WHERE product_key IN (SELECT product_key FROM {_CHANGED})"
    )
    conn.execute(
        f"INSERT INTO {target.products} BY NAME SELECT {key} AS product_key, * "
        f"FROM {target.captures} WHERE rowid IN (SELECT _rowid FROM {_CHANGED})"
    )
    _current_offers(conn, target, caps, cols, include_variants=include_variants)


def _rerank_changed(
    conn: duckdb.DuckDBPyConnection,
    target: Target,
    caps: Capabilities,
    cols: Mapping[str, _Type],
    *,
    include_variants: bool,
) -> None:
    """Rank the changed keys again over all of history (a key with no capture left leaves)."""
    key = _product_key_expr(cols)
    conn.execute(
        f"DELETE FROM {target.products} WHERE product_key IN (SELECT product_key FROM {_CHANGED})"
    )
    where = f"{key} IN (SELECT product_key FROM {_CHANGED})"
    conn.execute(
        f"INSERT INTO {target.products} BY NAME {_products_select_sql(target, cols, where)}"
    )
    _current_offers(conn, target, caps, cols, include_variants=include_variants)


def rerank_keys_of_runs(
    conn: duckdb.DuckDBPyConnection,
    target: Target,
    caps: Capabilities,
    cols: Mapping[str, _Type],
    run_ids: Iterable[str],
    *,
    include_variants: bool = True,
) -> None:
    """After ``run_ids`` left history: rank again the keys whose products row they held."""
    conn.execute(
        f"CREATE OR REPLACE TEMP TABLE _extralt_changed_keys AS "
        f"SELECT product_key FROM {target.products} WHERE run_id IN "
        f"(SELECT unnest($runs::VARCHAR[]))",
        {"runs": list(run_ids)},
    )
    _rerank_changed(conn, target, caps, cols, include_variants=include_variants)


def _current_offers(
    conn: duckdb.DuckDBPyConnection,
    target: Target,
    caps: Capabilities,
    cols: Mapping[str, _Type],
    *,
    include_variants: bool,
) -> None:
    """Replace the current offers of the changed keys with those of their products rows."""
    changed = f"(SELECT product_key FROM {_CHANGED})"
    conn.execute(f"DELETE FROM {target.current_variants} WHERE product_key IN {changed}")
    insert = _variants_insert_sql(
        target,
        cols,
        caps,
        into=target.current_variants,
        source=target.products,
        where=f"product_key IN {changed}",
    )
    if include_variants and insert is not None:
        conn.execute(insert)
    conn.execute(f"DROP TABLE IF EXISTS {_CHANGED}")


def _rebuild_needed(
    conn: duckdb.DuckDBPyConnection, target: Target, cols: Mapping[str, _Type]
) -> bool:
    """Whether the products table is missing, a view, or has other columns than history."""
    if not exists(conn, target, target.table("products")):
        return True  # missing, or an earlier release's view (``exists`` finds tables only)
    if not exists(conn, target, target.table("current_variants")):
        return True
    have = [(n.lower(), t) for n, t in _table_columns(conn, target.products)]
    want = [("product_key", _Type("scalar", "VARCHAR")), *cols.items()]
    return have != want


def _rebuild(
    conn: duckdb.DuckDBPyConnection,
    target: Target,
    caps: Capabilities,
    cols: Mapping[str, _Type],
    *,
    include_variants: bool,
) -> None:
    """Both tables from all of history: the first load, a migration, a schema change."""
    if _is_view(conn, target, target.table("products")):
        conn.execute(f"DROP VIEW {target.products}")
    conn.execute(
        f"CREATE OR REPLACE TABLE {target.products} AS {_products_select_sql(target, cols)}"
    )
    conn.execute(
        f"CREATE OR REPLACE TABLE {target.current_variants} "
        f"({_ddl_columns(_variant_columns(caps))})"
    )
    insert = _variants_insert_sql(
        target, cols, caps, into=target.current_variants, source=target.products, where="true"
    )
    if include_variants and insert is not None:
        conn.execute(insert)


def _is_view(conn: duckdb.DuckDBPyConnection, target: Target, name: str) -> bool:
    row = conn.execute(
        "SELECT count(*) FROM duckdb_views() WHERE database_name = ? AND schema_name = ? "
        "AND view_name = ?",
        [target.catalog, target.schema, name],
    ).fetchone()
    return bool(row and row[0])
