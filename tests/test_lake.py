"""The DuckLake target itself: attaching a lake, its snapshots, its per-source run logs, nested
types through inlined writes, a reader that never blocks a load, and the Dagster resource.

The warehouse behaviour both targets share (evolution, atomicity, reloads, retention,
products) is tested on both by test_warehouse.py, test_latest.py and the export tests."""

import contextlib
import io
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import duckdb
import pyarrow.parquet as pq
import pytest

from extralt_dagster import (
    DuckLakeResource,
    build_extralt_assets,
    load_extralt_definitions,
    warehouse,
)
from extralt_dagster.emulator.datagen import write_captures
from extralt_dagster.lake import warehouse_at
from extralt_dagster.naming import captures_asset_key
from extralt_dagster.sources import SourcesFileError, _warehouse_resource
from extralt_dagster.summary import print_summary
from extralt_dagster.warehouse import Lake, RunRecord, Target, WarehouseError, load_export
from extralt_dagster.warehouse import load as load_module

from .support import fast_extralt, materialization_metadata
from .targets import lake_at

T0 = 1_767_225_600.0
FIXTURES = Path(__file__).parent / "fixtures"
SHOES = Target("shoes")
BOOTS = Target("boots")


@pytest.fixture
def lake(tmp_path):
    return lake_at(tmp_path)


@pytest.fixture
def conn(lake):
    con = warehouse.connect(lake)
    yield con
    con.close()


def export(tmp_path, run_id, count, day=0, **kw):
    return write_captures(
        tmp_path / f"{run_id}_{count}.parquet",
        run_id=run_id,
        count=count,
        started_at=T0 + day * 86_400,
        **kw,
    )


def load(conn, path, run_id, target=SHOES, **kw):
    run = RunRecord(run_id=run_id, created_at=datetime(2026, 1, 1, tzinfo=UTC))
    return load_export(conn, path, target=target, run=run, **kw)


def test_connect_attaches_the_lake_and_uses_it(conn, lake):
    assert conn.execute("SELECT current_database()").fetchone() == ("lake",)
    [(kind, path)] = conn.execute(
        "SELECT type, path FROM duckdb_databases() WHERE database_name = 'lake'"
    ).fetchall()
    assert (kind, path) == ("ducklake", lake.catalog)
    # WAL, so that a reader's open transaction never blocks the loader's commit.
    # (WAL is a property of the SQLite file: any connection to it reports it.)
    with contextlib.closing(sqlite3.connect(lake.location)) as catalog:
        assert catalog.execute("PRAGMA journal_mode").fetchone() == ("wal",)


def test_a_three_capture_run_round_trips_its_nested_types_through_inlined_writes(conn, tmp_path):
    path = export(tmp_path, "r1", 3)
    result = load(conn, path, "r1")

    # Fewer rows than DuckLake's inlining limit: the rows live in the SQLite catalog, where
    # nested values are stored as text. They come back with their types and values.
    changes = conn.execute(
        "SELECT changes FROM ducklake_snapshots('lake') WHERE snapshot_id = ?",
        [result.snapshot_id],
    ).fetchone()[0]
    assert "inlined_insert" in changes
    file = pq.read_table(path)
    types = dict(result.column_types)
    file_types = dict(
        conn.execute("DESCRIBE SELECT * FROM read_parquet(?)", [str(path)]).fetchall()[i][:2]
        for i in range(file.num_columns)
    )
    assert {k: types[k] for k in file_types} == file_types
    assert types["variants"].startswith("STRUCT(") and "offers STRUCT(" in types["variants"]
    stored = conn.execute(
        f"SELECT * EXCLUDE (run_id, robot_id, loaded_at, export_row) FROM {SHOES.captures} ORDER BY id"
    ).to_arrow_table()
    assert stored.to_pylist() == file.sort_by("id").to_pylist()
    # The offers flattened from them, and the products table, read the nested values too.
    offers = sum(len(v["offers"] or []) for r in file.to_pylist() for v in r["variants"] or [])
    assert result.variants == offers > 3 and result.products == 3
    [(prices,)] = conn.execute(
        f"SELECT count(*) FROM {SHOES.current_variants} WHERE price_amount > 0"
    ).fetchall()
    assert prices == offers

    # A new session reads them the same way.
    with warehouse.connect(lake_at(tmp_path)) as other:
        again = other.execute(
            f"SELECT * EXCLUDE (run_id, robot_id, loaded_at, export_row) FROM {SHOES.captures} ORDER BY id"
        ).to_arrow_table()
    assert again.to_pylist() == stored.to_pylist()


def test_each_load_is_one_snapshot_and_time_travel_reads_the_tables_after_it(conn, tmp_path):
    first = load(conn, export(tmp_path, "r1", 20), "r1")
    second = load(conn, export(tmp_path, "r2", 30, day=1), "r2")

    assert second.snapshot_id == first.snapshot_id + 1
    [(author, message)] = conn.execute(
        "SELECT author, commit_message FROM ducklake_snapshots('lake') WHERE snapshot_id = ?",
        [second.snapshot_id],
    ).fetchall()
    assert (author, message) == ("extralt-dagster", "load shoes run r2")
    counts = [
        conn.execute(
            f"SELECT count(*) FROM {SHOES.captures} AT (VERSION => ?)", [r.snapshot_id]
        ).fetchone()[0]
        for r in (first, second)
    ]
    assert counts == [20, 50]


def test_a_load_that_commits_no_snapshot_is_an_error(conn, tmp_path, monkeypatch):
    # What DuckDB's COMMIT does after a failed statement: returns, and applies nothing.
    monkeypatch.setattr(load_module, "_mark_snapshot", lambda job: None)
    with pytest.raises(WarehouseError, match="no snapshot of this load exists") as info:
        load(conn, export(tmp_path, "r1", 5), "r1")
    assert info.value.retryable


def test_each_source_has_its_own_run_log_under_one_runs_view(conn, tmp_path):
    load(conn, export(tmp_path, "r1", 5), "r1")
    load(conn, export(tmp_path, "b1", 5), "b1", target=BOOTS)
    again = load(conn, export(tmp_path, "r2", 5, day=1), "r2")

    tables = {
        t
        for (t,) in conn.execute(
            "SELECT table_name FROM duckdb_tables() WHERE schema_name = 'extralt'"
        ).fetchall()
    }
    assert {"shoes_runs", "boots_runs"} <= tables and "runs" not in tables
    assert again.table_names["runs"] == "extralt.shoes_runs" and again.runs_logged == 2
    assert conn.execute("SELECT source, run_id FROM extralt.runs ORDER BY ALL").fetchall() == [
        ("boots", "b1"),
        ("shoes", "r1"),
        ("shoes", "r2"),
    ]
    # Loads of a source the view already covers never touch it: nothing shared is written.
    [(changes,)] = conn.execute(
        "SELECT changes::VARCHAR FROM ducklake_snapshots('lake') WHERE snapshot_id = ?",
        [again.snapshot_id],
    ).fetchall()
    assert "view" not in changes
    summary = warehouse.summarize(conn)
    assert [(s.source, s.runs, s.captures) for s in summary.sources] == [
        ("boots", 1, 5),
        ("shoes", 2, 10),
    ]


def test_a_reader_holding_a_transaction_never_blocks_a_load(conn, lake, tmp_path):
    load(conn, export(tmp_path, "r1", 20), "r1")
    reader = warehouse.connect(lake, read_only=True, lock_timeout_seconds=0.5)
    try:
        reader.execute("BEGIN")
        before = reader.execute(f"SELECT count(*) FROM {SHOES.products}").fetchone()[0]
        # Busy timeout of 0.5 s on the writer too: a blocked commit would fail, not wait.
        with warehouse.connect(lake, lock_timeout_seconds=0.5) as writer:
            load(writer, export(tmp_path, "r2", 40, day=1), "r2")
        # The reader's snapshot stays whole; after its transaction it sees the new load.
        assert reader.execute(f"SELECT count(*) FROM {SHOES.products}").fetchone()[0] == before
        reader.execute("COMMIT")
        assert reader.execute(f"SELECT count(*) FROM {SHOES.products}").fetchone()[0] == 40
    finally:
        reader.close()


# --- Describing a lake --------------------------------------------------------------------------


def test_the_password_stays_out_of_reprs_and_the_connection_string():
    lake = Lake(catalog="postgres:dbname=lake host=db", data_path="s3://b/p/", password="s3cr3t")
    assert "s3cr3t" not in repr(lake) and "s3cr3t" not in str(lake) and "s3cr3t" not in lake.uri
    resource = DuckLakeResource(
        catalog="postgres:dbname=lake host=db", data_path="s3://b/p/", catalog_password="s3cr3t"
    )
    assert "s3cr3t" not in repr(resource) and "s3cr3t" not in str(resource)
    assert "s3cr3t" not in warehouse_at(resource).uri
    assert "s3cr3t" not in warehouse_at(resource).name
    with pytest.raises(WarehouseError, match="password= in its connection string") as info:
        Lake(catalog="postgres:dbname=lake password=s3cr3t", data_path="/tmp/x")
    assert "s3cr3t" not in str(info.value)


@pytest.mark.parametrize(
    ("catalog", "data_path", "message"),
    [
        ("lake.sqlite", "/d", "catalog must be 'sqlite:<path"),
        ("mysql:db", "/d", "catalog must be 'sqlite:<path"),
        ("sqlite:", "/d", "names no sqlite database"),
        ("sqlite:/c.sqlite", "", "data_path must name the folder"),
        ("sqlite:/c.sqlite", "/d", "password is for a PostgreSQL catalog"),
    ],
)
def test_a_bad_lake_names_the_field(catalog, data_path, message):
    password = "pw" if "password" in message else None
    with pytest.raises(WarehouseError, match=message) as info:
        Lake(catalog=catalog, data_path=data_path, password=password)
    assert "pw" not in str(info.value).replace("password", "")


def test_the_sources_file_selects_the_lake_from_the_environment(tmp_path):
    env = {
        "EXTRALT_DUCKLAKE_CATALOG": f"sqlite:{tmp_path / 'c.sqlite'}",
        "EXTRALT_DUCKLAKE_DATA_PATH": str(tmp_path / "data"),
    }
    resource = _warehouse_resource(None, "sources.yaml", env)
    assert (
        isinstance(resource, DuckLakeResource)
        and resource.catalog == env["EXTRALT_DUCKLAKE_CATALOG"]
    )
    assert isinstance(
        _warehouse_resource(str(tmp_path / "w.duckdb"), "x", env), dg.ConfigurableResource
    )
    assert not isinstance(
        _warehouse_resource(str(tmp_path / "w.duckdb"), "x", env), DuckLakeResource
    )
    with pytest.raises(SourcesFileError, match="EXTRALT_DUCKLAKE_DATA_PATH is not"):
        _warehouse_resource(None, "sources.yaml", {"EXTRALT_DUCKLAKE_CATALOG": "sqlite:c"})
    with pytest.raises(SourcesFileError, match="EXTRALT_DUCKLAKE_CATALOG: catalog must be"):
        _warehouse_resource(None, "sources.yaml", {**env, "EXTRALT_DUCKLAKE_CATALOG": "c.db"})


# --- Through Dagster ----------------------------------------------------------------------------


def test_the_captures_asset_loads_into_a_lake_under_the_duckdb_key(
    emulator, instance, tmp_path, lake
):
    assets = build_extralt_assets("shoes", "rbt_shoes", budget=30, export_dir=str(tmp_path / "x"))
    resource = DuckLakeResource(catalog=lake.catalog, data_path=lake.data_path)
    result = dg.materialize(
        assets,
        instance=instance,
        resources={"extralt": fast_extralt(emulator), "duckdb": resource},
        raise_on_error=False,
    )
    assert result.success
    metadata = materialization_metadata(result, captures_asset_key("shoes"))
    assert metadata["dagster/uri"] == lake.uri
    snapshot = metadata["extralt/snapshot_id"]
    with warehouse.connect(lake, read_only=True) as con:
        [(rows,)] = con.execute(
            f"SELECT count(*) FROM {SHOES.captures} AT (VERSION => ?)", [snapshot]
        ).fetchall()
        [(runs,)] = con.execute("SELECT count(*) FROM extralt.runs").fetchall()
    assert rows == metadata["dagster/row_count"] == 30 and runs == 1
    # The demo's summary reads a lake as it reads a file.
    out = io.StringIO()
    assert print_summary(lake, out=out) == 0
    text = out.getvalue()
    assert f"DuckLake: {lake.uri}" in text and "shoes" in text and "Cheapest" in text


def test_a_commit_conflict_is_retried_then_fails_naming_the_table(conn, tmp_path, monkeypatch):
    """What a PostgreSQL catalog says when another writer changed the same table (here raised
    by hand: a SQLite catalog has one writer)."""
    load(conn, export(tmp_path, "r0", 5), "r0")
    [(index,)] = conn.execute(
        "SELECT table_id FROM __ducklake_metadata_lake.ducklake_table "
        "WHERE table_name = 'shoes_captures'"
    ).fetchall()
    said = (
        "TransactionContext Error: Failed to commit: Transaction conflict - attempting to "
        f'delete from table with index "{index}" but another transaction has inserted into it'
    )
    real = load_module._attempt
    calls = []

    def conflicting(*args, fail=2, **kwargs):
        calls.append(1)
        if len(calls) <= fail:
            try:
                raise duckdb.TransactionException(said)
            except duckdb.TransactionException as exc:
                raise WarehouseError(f"Loading failed. DuckDB said: {exc}", retryable=True) from exc
        return real(*args, **kwargs)

    delays = []
    monkeypatch.setattr(load_module.time, "sleep", delays.append)
    monkeypatch.setattr(load_module, "_attempt", conflicting)
    result = load(conn, export(tmp_path, "r1", 5), "r1")
    assert (len(calls), result.rows, result.history_rows, delays) == (3, 5, 10, [0.2, 0.4])

    calls.clear()
    monkeypatch.setattr(load_module, "_attempt", lambda *a, **k: conflicting(*a, fail=99, **k))
    with pytest.raises(WarehouseError, match="another transaction has inserted") as info:
        load(conn, export(tmp_path, "r2", 5, day=1), "r2")
    assert len(calls) == load_module.CONFLICT_RETRIES + 1 and info.value.retryable
    assert f"Gave up after {load_module.CONFLICT_RETRIES + 1} attempts" in str(info.value)
    assert f"(index {index} is extralt.shoes_captures)" in str(info.value)


def test_a_sources_file_loads_into_the_lake_the_environment_names(monkeypatch, tmp_path):
    monkeypatch.setenv("EXTRALT_DUCKLAKE_CATALOG", f"sqlite:{tmp_path / 'c.sqlite'}")
    monkeypatch.setenv("EXTRALT_DUCKLAKE_DATA_PATH", str(tmp_path / "data"))
    monkeypatch.setenv("EXTRALT_DUCKLAKE_PASSWORD", "not-for-sqlite")
    defs = load_extralt_definitions(FIXTURES / "sources_valid.yaml")
    resource = defs.resources["duckdb"]
    assert isinstance(resource, DuckLakeResource)
    assert resource.catalog == f"sqlite:{tmp_path / 'c.sqlite'}"
    assert resource.catalog_password is None  # a SQLite catalog has none
