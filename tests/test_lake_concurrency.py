"""DuckLake under concurrent use, against real catalogs (issue 17).

- The PostgreSQL server the PostgreSQL tests use (tests/pg_server.py): it starts, needs its
  password, holds a DuckLake catalog, and leaves nothing behind.
"""

import importlib.util
import os
from pathlib import Path

import duckdb
import pytest

from tests.pg_server import PostgresServer, postgres_server  # noqa: F401

# --- helpers --------------------------------------------------------------------------------


def _install(conn: duckdb.DuckDBPyConnection, name: str) -> None:
    """From the pip package (`extralt-dagster[ducklake]`) when present, else DuckDB's repository."""
    spec = importlib.util.find_spec(f"duckdb_extension_{name}")
    if spec is not None and spec.submodule_search_locations:
        folder = Path(next(iter(spec.submodule_search_locations)))
        found = sorted(folder.glob(f"extensions/v{duckdb.__version__}/{name}.duckdb_extension"))
        if found:
            conn.execute(f"INSTALL '{found[0]}'")
            return
    conn.execute(f"INSTALL {name}")


def _pg_lake(dsn: str, password: str | None, data_path: Path) -> duckdb.DuckDBPyConnection:
    conn = duckdb.connect()
    for name in ("ducklake", "postgres_scanner"):
        _install(conn, name)
        conn.execute(f"LOAD {name}")
    if password is not None:
        # libpq takes the password from DuckDB's default postgres secret: it is in no string.
        conn.execute(f"CREATE TEMPORARY SECRET (TYPE postgres, PASSWORD '{password}')")
    conn.execute(f"ATTACH 'ducklake:postgres:{dsn}' AS lake (DATA_PATH '{data_path}/')")
    return conn


# --- the PostgreSQL server ------------------------------------------------------------------


def test_a_ducklake_with_a_postgres_catalog_round_trips(postgres_server, tmp_path):  # noqa: F811
    dsn = postgres_server.create_database("round_trip")
    assert "password" not in dsn and postgres_server.password not in dsn
    data = tmp_path / "data"
    nested = "STRUCT(title VARCHAR, offers STRUCT(price DOUBLE, sizes VARCHAR[])[])[]"
    with _pg_lake(dsn, postgres_server.password, data) as conn:
        conn.execute(f"CREATE TABLE lake.t (k INTEGER, v {nested})")
        # 3 rows are inlined into the catalog (nested values as VARCHAR there), 20 go to Parquet.
        for first, n in ((0, 3), (3, 20)):
            conn.execute(
                "INSERT INTO lake.t SELECT range, "
                "[{'title': 'p' || range, 'offers': [{'price': range * 1.5, 'sizes': ['S', 'M']}]}] "
                f"FROM range({first}, {first + n})"
            )
    with _pg_lake(dsn, postgres_server.password, data) as conn:
        rows = conn.execute(
            "SELECT count(*), sum(k), typeof(any_value(v)), "
            "max(v[1].offers[1].price), min(v[1].offers[1].sizes[2]) FROM lake.t"
        ).fetchone()
        assert rows == (23, sum(range(23)), nested, 22 * 1.5, "M")
        assert conn.execute("SELECT count(*) FROM lake.snapshots()").fetchone()[0] == 4
        assert len(list(data.rglob("*.parquet"))) == 1
    # The catalog is in PostgreSQL: its tables are there.
    tables = postgres_server.psql(
        "SELECT count(*) FROM information_schema.tables WHERE table_name = 'ducklake_snapshot'",
        "round_trip",
    )
    assert tables.strip() == "1"


def test_the_postgres_server_needs_its_password(postgres_server, tmp_path):  # noqa: F811
    dsn = postgres_server.create_database("needs_password")
    saved = os.environ.pop("PGPASSWORD", None)
    try:
        with pytest.raises(duckdb.Error, match="password"):
            _pg_lake(dsn, None, tmp_path)
        with pytest.raises(duckdb.Error, match="password authentication failed"):
            _pg_lake(dsn, "not-the-password", tmp_path)
    finally:
        if saved is not None:
            os.environ["PGPASSWORD"] = saved


def test_the_postgres_server_runs_unprivileged_and_leaves_nothing_behind():
    server = PostgresServer().start()
    root, pid = server.root, server._proc.pid
    assert root is not None and (root / "data" / "PG_VERSION").is_file()
    uid = os.stat(f"/proc/{pid}").st_uid
    assert uid != 0
    assert server.psql("SELECT current_setting('listen_addresses')").strip() == "127.0.0.1"
    server.stop()
    assert not root.exists()
    assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text()
