"""The analyst of the DuckLake soak: `python -m soak.analyst <catalog> <data path>`.

A notebook kept open for the whole soak: plain DuckDB, the lake attached with DuckDB's own
`ATTACH` (no option of this package), and every 0.5 s one transaction that reads the snapshot
it sees and counts every source's `_products` (the sources loaded so far). One JSON line per
query on stdout, until stdin closes. `soak.verify` checks each count against the snapshot.
"""

import json
import select
import sys
import time

import duckdb

#: How often the analyst queries, in seconds.
INTERVAL_SECONDS = 0.5
ALIAS = "lake"
PRODUCTS = f"""
SELECT table_name FROM duckdb_tables() WHERE database_name = '{ALIAS}'
  AND schema_name = ? AND suffix(table_name, '_products')
UNION ALL
SELECT view_name FROM duckdb_views() WHERE database_name = '{ALIAS}'
  AND schema_name = ? AND suffix(view_name, '_products')
ORDER BY 1
"""


def attach(conn: duckdb.DuckDBPyConnection, catalog: str, data_path: str) -> None:
    """The lake attached as an analyst would; the extensions from the pip packages when this
    DuckDB has them (offline), else from DuckDB's repository."""
    from extralt_dagster.warehouse.target import _packaged_extension

    for name in ("ducklake", "sqlite_scanner"):
        packaged = _packaged_extension(name)
        conn.execute(f"INSTALL '{packaged}'" if packaged else f"INSTALL {name}")
        conn.execute(f"LOAD {name}")
    conn.execute(f"ATTACH 'ducklake:{catalog}' AS {ALIAS} (DATA_PATH '{data_path}')")


def query(conn: duckdb.DuckDBPyConnection, schema: str) -> dict:
    """One transaction, so one snapshot: its id and each products table's count in it."""
    conn.execute("BEGIN TRANSACTION")
    try:
        [(snapshot,)] = conn.execute(f"SELECT id FROM {ALIAS}.current_snapshot()").fetchall()
        names = [n for (n,) in conn.execute(PRODUCTS, [schema, schema]).fetchall()]
        counts = {}
        if names:
            sql = ", ".join(f'(SELECT count(*) FROM {ALIAS}.{schema}."{n}")' for n in names)
            row = conn.execute(f"SELECT {sql}").fetchone()
            counts = dict(zip(names, row or (), strict=True))
    finally:
        conn.execute("ROLLBACK")
    return {"snapshot": snapshot, "counts": counts}


def main(catalog: str, data_path: str, schema: str = "extralt") -> int:
    conn = duckdb.connect()
    attach(conn, catalog, data_path)
    print(json.dumps({"attached": True}), flush=True)
    while True:
        started, clock = time.time(), time.perf_counter()
        try:
            line = {"started": started, **query(conn, schema)}
            line["seconds"] = time.perf_counter() - clock
        except duckdb.Error as exc:
            line = {"started": started, "error": f"{type(exc).__name__}: {exc}"}
        print(json.dumps(line), flush=True)
        readable, _, _ = select.select([sys.stdin], [], [], INTERVAL_SECONDS)
        if readable and not sys.stdin.readline():
            return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
