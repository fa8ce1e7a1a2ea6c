"""History growth: the same products loaded night after night, one Extralt run per load.

A year of nightly loads must query as fast as the first night, and load as fast. This loads
``products`` products ``loads`` times through ``warehouse.load_export`` into one file, and after
the loads named in ``checkpoints`` (1, 10 and 40 in ``make bench``; 1 and 10 in
``bench-quick``) times, on a read-only connection, what an analyst runs: a full scan of
``_products``, one product's latest capture, one product's current offers, and the file size.

Each query runs once to warm up, then ``QUERY_REPEAT`` times; the median is reported. Exports
come from the emulator's generator (same products, new prices and capture ids per run, one day
apart), cached in the benchmark's folder: 40 of 100,000 captures take 5-15 min to write once.
"""

from __future__ import annotations

import os
import statistics
import time
from pathlib import Path
from typing import Any

QUERY_REPEAT = 5
DAY = 86_400.0
START = 1_767_225_600.0  # 2026-01-01T00:00:00Z

#: What an analyst asks, by name; ``?`` is one product id.
QUERIES = {
    "products_scan": "SELECT count(*), max(min_price), max(length(description)) FROM {products}",
    "product_lookup": "SELECT * FROM {products} WHERE product_id = ?",
    "offers_lookup": "SELECT * FROM {current_variants} WHERE product_id = ?",
    "offers_scan": "SELECT count(*), min(price_amount) FROM {current_variants}",
}


def export_paths(cache: Path, products: int, loads: int) -> list[Path]:
    """The exports of ``loads`` nightly runs, written once into ``cache``."""
    from extralt_dagster.emulator import write_captures

    cache.mkdir(parents=True, exist_ok=True)
    paths = []
    for night in range(loads):
        path = cache / f"night-{night:03d}-{products}.parquet"
        if not path.exists():
            tmp = path.with_suffix(".tmp")
            write_captures(
                tmp,
                run_id=f"run_night_{night:03d}",
                count=products,
                started_at=START + night * DAY,
            )
            os.replace(tmp, path)
        paths.append(path)
    return paths


def _timed(conn: Any, sql: str, params: list[Any]) -> tuple[float, int]:
    conn.execute(sql, params).fetchall()  # warm-up
    seconds, rows = [], 0
    for _ in range(QUERY_REPEAT):
        t0 = time.perf_counter()
        rows = len(conn.execute(sql, params).fetchall())
        seconds.append(time.perf_counter() - t0)
    return statistics.median(seconds), rows


def _queries(db: str, target: Any) -> dict[str, Any]:
    import duckdb

    names = {"products": target.products, "current_variants": target.current_variants}
    with duckdb.connect(db, read_only=True) as conn:
        conn.execute(f"USE {target.catalog}")
        # A product from the middle of the catalogue, by id.
        row = conn.execute(
            f"SELECT product_id FROM {target.latest_captures} ORDER BY product_id "
            f"LIMIT 1 OFFSET (SELECT count(*) // 2 FROM {target.latest_captures})"
        ).fetchone()
        assert row is not None, "no products to look up"
        out: dict[str, Any] = {}
        for name, sql in QUERIES.items():
            params = [row[0]] if "?" in sql else []
            seconds, rows = _timed(conn, sql.format(**names), params)
            out[name] = {"seconds": seconds, "rows": rows}
        (history,) = conn.execute(f"SELECT count(*) FROM {target.captures}").fetchone() or (0,)
    out["history_rows"] = history
    return out


def run(p: dict[str, Any]) -> dict[str, Any]:
    """The child's side: load every export in turn, measuring at the checkpoints."""
    from extralt_dagster import warehouse

    db = p["db"]
    for suffix in ("", ".wal"):
        Path(db + suffix).unlink(missing_ok=True)
    checkpoints = set(p["checkpoints"])
    loads: list[float] = []
    at: dict[str, Any] = {}
    for night, path in enumerate(p["files"], start=1):
        t0 = time.perf_counter()
        conn = warehouse.connect(db)
        result = warehouse.load_export(
            conn,
            path,
            target=warehouse.Target("growth"),
            run=warehouse.RunRecord(run_id=f"run_night_{night - 1:03d}", robot_id="rbt_shoes"),
        )
        conn.close()
        loads.append(time.perf_counter() - t0)
        if night in checkpoints:
            target = warehouse.Target("growth").in_catalog(result.catalog)
            at[str(night)] = {
                "load_seconds": loads[-1],
                "phase_seconds": dict(result.phase_seconds),
                "file_bytes": os.path.getsize(db),
                **_queries(db, target),
            }
    return {"load_seconds": loads, "at": at}
