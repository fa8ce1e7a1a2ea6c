"""A short, human summary of what is in the warehouse, and one query's result (both read-only),
for `make demo` and `extralt-dagster summary` / `query`."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TextIO

import duckdb

from . import warehouse


def print_summary(
    database: str | Path | warehouse.Lake,
    schema: str = warehouse.DEFAULT_SCHEMA,
    out: TextIO | None = None,
) -> int:
    """Print sources, runs, captures, products, credits and the cheapest in-stock products.

    ``database`` is a DuckDB file or a ``warehouse.Lake``. Returns 0 when there is data to
    show, 1 otherwise (so `make demo` fails on an empty load).
    """
    where = database if isinstance(database, warehouse.Lake) else str(database)
    con = warehouse.connect(where, read_only=True, lock_timeout_seconds=30)
    try:
        summary = warehouse.summarize(con, schema=schema)
    finally:
        con.close()
    if not summary.sources:
        print(f"No Extralt data in {database} (schema {schema}).", file=out)
        return 1
    print(f"\n{_title(database)}", file=out)
    header = (
        f"{'source':<12}{'runs':>6}{'captures':>10}{'products':>10}{'variants':>10}{'credits':>9}"
    )
    print(header, file=out)
    print("-" * len(header), file=out)
    for s in summary.sources:
        print(
            f"{s.source:<12}{s.runs:>6}{s.captures:>10,}{s.products:>10,}{s.variants:>10,}"
            f"{s.credits:>9,}",
            file=out,
        )
    total = sum(s.runs for s in summary.sources)
    extralt = sum(s.extralt_runs for s in summary.sources)
    print(
        f"Runs by origin ({schema}.runs): {total - extralt:,} started by Dagster, {extralt:,} "
        "by Extralt (its schedules or dashboard)",
        file=out,
    )
    print(f"\nCheapest in-stock products (from {schema}.<source>_products):", file=out)
    for row in summary.cheapest:
        print(
            f"  {row.source:<10} {row.price:>9.2f} {row.currency or '':<4} "
            f"{(row.brand or '')[:16]:<16} {(row.title or '')[:48]}",
            file=out,
        )
    return 0


def _title(database: str | Path | warehouse.Lake) -> str:
    if isinstance(database, warehouse.Lake):  # its URI has no password
        return f"DuckLake: {database.uri} (data in {database.data_path})"
    return f"DuckDB warehouse: {database}"


def print_query(database: str | Path | warehouse.Lake, sql: str, out: TextIO | None = None) -> int:
    """Run one query on the warehouse, read-only, and print its result as a table; a lake is
    in ``USE``, so ``extralt.shoes_products`` and ``lake.extralt.shoes_products`` both work.
    Returns 0, or 1 with DuckDB's message when the query fails."""
    where = database if isinstance(database, warehouse.Lake) else str(database)
    con = warehouse.connect(where, read_only=True, lock_timeout_seconds=30)
    try:
        result = con.sql(sql)
        if result is None:
            print("(no result)", file=out)
            return 0
        print(result, file=out)  # DuckDB's table, long results cut in the middle
    except duckdb.Error as exc:
        print(f"The query failed: {exc}", file=sys.stderr)
        return 1
    finally:
        con.close()
    return 0
