"""A short, human summary of what is in the warehouse, and one query's result (both read-only),
for `make demo` and `extralt-dagster summary` / `query`."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import duckdb

from . import warehouse
from .credits import Period
from .spec import DEFAULT_TIMEZONE, CreditLimit, ExtraltSources, SourceDefaults


def print_summary(
    database: str | Path | warehouse.Lake,
    schema: str = warehouse.DEFAULT_SCHEMA,
    out: TextIO | None = None,
    *,
    sources: ExtraltSources | None = None,
    now: float | None = None,
) -> int:
    """Print sources, runs, captures, products, credits (all time, and this period beside the
    cap `sources` sets) and the cheapest in-stock products.

    ``database`` is a DuckDB file or a ``warehouse.Lake``. Without `sources` a period is the
    calendar month in UTC. Returns 0 when there is data to show, 1 otherwise (so `make demo`
    fails on an empty load).
    """
    periods = _Periods(sources, time.time() if now is None else now)
    where = database if isinstance(database, warehouse.Lake) else str(database)
    con = warehouse.connect(where, read_only=True, lock_timeout_seconds=30)
    try:
        summary = warehouse.summarize(con, schema=schema)
        spent = periods.spent(con, [s.source for s in summary.sources], schema)
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
    _print_credits(spent, periods, schema, out)
    print(f"\nCheapest in-stock products (from {schema}.<source>_products):", file=out)
    for row in summary.cheapest:
        print(
            f"  {row.source:<10} {row.price:>9.2f} {row.currency or '':<4} "
            f"{(row.brand or '')[:16]:<16} {(row.title or '')[:48]}",
            file=out,
        )
    return 0


@dataclass(frozen=True)
class _PeriodSpend:
    """Credits of one source (or, `source` None, the location) in its period so far."""

    source: str | None
    period: Period
    credits: int
    limit: CreditLimit | None


class _Periods:
    """Each source's credit period now: its cap's (`credit_limit`, in its time zone), else the
    calendar month; and the location's cap (`location_credit_limit`), if the sources set one."""

    def __init__(self, sources: ExtraltSources | None, now: float) -> None:
        self.now = now
        defaults = (sources.defaults if sources else None) or SourceDefaults()
        self.timezone = defaults.timezone if sources else DEFAULT_TIMEZONE
        self.specs = {s.name: s.with_defaults(defaults) for s in sources.sources} if sources else {}
        self.location = sources.location_credit_limit if sources else None

    def _period(self, per: str, timezone: str) -> Period:
        return Period.containing(per, timezone, self.now)

    def spent(
        self, con: duckdb.DuckDBPyConnection, logged: list[str], schema: str
    ) -> list[_PeriodSpend]:
        by_start: dict[tuple[str, str], dict[str, int]] = {}

        def credits_in(period: Period) -> dict[str, int]:
            key = (period.per, period.timezone)
            if key not in by_start:
                by_start[key] = warehouse.credits_since(con, period.start, schema=schema)
            return by_start[key]

        rows = []
        for name in logged:
            spec = self.specs.get(name)
            limit = spec.credit_limit if spec else None
            timezone = (spec.timezone if spec else None) or self.timezone
            period = self._period(limit.per if limit else "month", timezone)
            rows.append(_PeriodSpend(name, period, credits_in(period).get(name, 0), limit))
        if self.location is not None:
            period = self._period(self.location.per, self.timezone)
            total = sum(credits_in(period).get(name, 0) for name in self.specs)
            rows.append(_PeriodSpend(None, period, total, self.location))
        return rows


def _print_credits(
    spent: list[_PeriodSpend], periods: _Periods, schema: str, out: TextIO | None
) -> None:
    print(
        f"\nCredits this period, from {schema}.runs (loaded runs created since it began; the "
        "run asset's\ncap, read from Dagster, also counts runs still crawling, at budget x 2):",
        file=out,
    )
    header = f"{'source':<12}{'period':<40}{'credits':>9}{'cap':>10}{'used':>7}"
    print(header, file=out)
    print("-" * len(header), file=out)
    for row in spent:
        name = row.source or "(location)"
        cap = (
            f"{row.limit.credits:>10,}{row.credits / row.limit.credits:>7.0%}"
            if row.limit
            else f"{'none':>10}"
        )
        print(f"{name:<12}{row.period.describe():<40}{row.credits:>9,}{cap}", file=out)


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
