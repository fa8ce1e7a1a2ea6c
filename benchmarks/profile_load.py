"""Where ``warehouse.load_export``'s time goes, statement by statement, with DuckDB's profiler.

    python -m benchmarks.profile_load EXPORT.parquet [--db PATH] [--tree]

Loads the file through the real ``load_export`` (fresh database, the asset's default settings),
on a connection that times every statement and keeps DuckDB's profile of it (operators,
their time and cardinality). Prints the statements by time, then the operator trees of the
slowest (``--tree``). The ``COMMIT`` line is where DuckDB compresses and writes the rows the
transaction inserted. Not part of ``make bench``: a tool for when a target is missed.
"""

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

from extralt_dagster import warehouse


class ProfiledConnection:
    """Forwards to a DuckDB connection, timing each ``execute``/``sql`` and keeping its profile."""

    def __init__(self, conn: Any) -> None:
        self._conn = conn
        self.records: list[dict[str, Any]] = []
        conn.execute("SET enable_profiling = 'no_output'")
        conn.execute("SET profiling_mode = 'detailed'")

    def execute(self, sql: str, *args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        result = self._conn.execute(sql, *args, **kwargs)
        self._record(sql, time.perf_counter() - started)
        return result

    def sql(self, sql: str, *args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        result = self._conn.sql(sql, *args, **kwargs)
        self._record(sql, time.perf_counter() - started)
        return result

    def _record(self, sql: str, seconds: float) -> None:
        try:
            profile = json.loads(self._conn.get_profiling_information(format="json"))
        except Exception:  # no profile for this statement (e.g. BEGIN)
            profile = None
        self.records.append({"sql": " ".join(sql.split()), "seconds": seconds, "profile": profile})

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)


def _operators(node: dict[str, Any], depth: int = 0) -> list[tuple[int, str, float, Any]]:
    """(depth, operator, seconds, rows out) for an operator and its children, DuckDB 1.x/2.x."""
    if "operator" in node and "name" not in node:  # DuckDB 2 profile root
        return [op for child in node["operator"] for op in _operators(child, depth)]
    name = node.get("name") or node.get("operator_name") or node.get("operator_type", "")
    timing = node.get("timing", node.get("operator_timing", 0.0)) or 0.0
    rows = node.get("intermediate_rows", node.get("operator_cardinality"))
    out = [(depth, str(name).strip(), float(timing), rows)]
    for child in node.get("children", []):
        out.extend(_operators(child, depth + 1))
    return out


def _summary(profile: dict[str, Any]) -> str:
    query, system, io = (profile.get(k, {}) for k in ("query", "system", "io"))
    parts = [
        f"cpu {query.get('cpu_time', 0):.2f}s",
        f"peak buffer {system.get('peak_buffer_memory', 0) / 2**20:,.0f} MB",
        f"spilled {system.get('total_bytes_spilled', 0) / 2**20:,.0f} MB",
        f"written {io.get('total_bytes_written', 0) / 2**20:,.0f} MB",
        f"write time {io.get('total_write_time', 0):.2f}s",
    ]
    return ", ".join(parts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.profile_load")
    parser.add_argument("export", type=Path)
    parser.add_argument("--db", type=Path, default=Path("benchmarks/.cache/profile.duckdb"))
    parser.add_argument("--tree", type=int, default=3, help="operator trees of the N slowest")
    args = parser.parse_args(argv)
    for suffix in ("", ".wal"):
        Path(f"{args.db}{suffix}").unlink(missing_ok=True)
    args.db.parent.mkdir(parents=True, exist_ok=True)
    conn = warehouse.connect(args.db)
    profiled = ProfiledConnection(conn)
    run = warehouse.RunRecord(run_id="run_profile", robot_id="rbt_profile")
    started = time.perf_counter()
    result = warehouse.load_export(
        profiled,  # type: ignore[arg-type]
        args.export,
        target=warehouse.Target("bench"),
        run=run,
        bytes_downloaded=os.path.getsize(args.export),
    )
    conn.close()
    total = time.perf_counter() - started
    print(f"load_export: {result.rows:,} rows, {result.variants_for_run:,} variants, {total:.2f}s")
    print("phases: " + ", ".join(f"{k} {v:.2f}" for k, v in result.phase_seconds.items()))
    slow = sorted(profiled.records, key=lambda r: -r["seconds"])
    print("\nstatements by time:")
    for rec in slow[:12]:
        print(f"  {rec['seconds']:7.2f}s  {rec['sql'][:150]}")
    for rec in slow[: args.tree]:
        if not rec["profile"]:
            continue
        print(f"\n{rec['seconds']:.2f}s  {rec['sql'][:200]}")
        print(f"  {_summary(rec['profile'])}")
        for depth, name, timing, rows in _operators(rec["profile"]):
            if timing >= 0.01 or depth == 0:
                print(f"  {'  ' * depth}{name:<28} {timing:7.2f}s  rows {rows}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
