"""The run log's `origin`: `dagster` for runs Dagster started, `extralt` for runs Extralt's
schedules or dashboard started; a run log from before the column is migrated (its rows were all
Dagster's), on a DuckDB file and on a lake."""

import io
from datetime import UTC, datetime

import pytest

from extralt_dagster import warehouse
from extralt_dagster.emulator.datagen import write_captures
from extralt_dagster.summary import print_summary
from extralt_dagster.warehouse import RunRecord, Target, WarehouseError, load_export

from .targets import is_lake, target_fixture

conn = target_fixture()
SHOES = Target("shoes")


def load(conn, tmp_path, run_id, **record):
    path = write_captures(tmp_path / f"{run_id}.parquet", run_id=run_id, count=5)
    run = RunRecord(run_id=run_id, created_at=datetime(2026, 1, 1, tzinfo=UTC), **record)
    return load_export(conn, path, target=SHOES, run=run)


def origins(conn):
    return dict(conn.execute("SELECT run_id, origin FROM extralt.runs ORDER BY 1").fetchall())


def test_the_run_log_records_who_started_each_run(conn, tmp_path):
    load(conn, tmp_path, "run_by_dagster")
    load(conn, tmp_path, "run_by_extralt", origin="extralt")
    assert origins(conn) == {"run_by_dagster": "dagster", "run_by_extralt": "extralt"}
    [shoes] = warehouse.summarize(conn).sources
    assert (shoes.runs, shoes.extralt_runs) == (2, 1)


def test_a_run_log_from_before_origin_is_migrated_with_dagster_rows(conn, tmp_path):
    load(conn, tmp_path, "run_old")
    log = "extralt.shoes_runs" if is_lake(conn) else "extralt.runs"
    conn.execute(f"ALTER TABLE {log} DROP COLUMN origin")  # as an earlier release made it
    [shoes] = warehouse.summarize(conn).sources  # reads an unmigrated log too
    assert (shoes.runs, shoes.extralt_runs) == (1, 0)
    load(conn, tmp_path, "run_new", origin="extralt")
    assert origins(conn) == {"run_old": "dagster", "run_new": "extralt"}
    load(conn, tmp_path, "run_old")  # a reload keeps its origin: Dagster's
    assert origins(conn) == {"run_old": "dagster", "run_new": "extralt"}


def test_the_summary_says_how_many_runs_extralt_started(tmp_path):
    database = tmp_path / "wh.duckdb"
    with warehouse.connect(database) as con:
        load(con, tmp_path, "run_1")
        load(con, tmp_path, "run_2", origin="extralt")
        load(con, tmp_path, "run_3", origin="extralt")
    out = io.StringIO()
    assert print_summary(database, out=out) == 0
    assert "Runs by origin (extralt.runs): 1 started by Dagster, 2 by Extralt" in out.getvalue()


@pytest.mark.parametrize("origin", ["", "Dagster", "schedule", None])
def test_an_unknown_origin_is_refused(origin):
    with pytest.raises(WarehouseError, match="origin must be one of dagster, extralt"):
        RunRecord(run_id="run_1", origin=origin)
