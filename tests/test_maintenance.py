"""Lake maintenance on a real DuckLake (SQLite catalog, data in tmp_path) after real loads:
files merged, old snapshots expired, unused and orphaned files deleted, no data changed; then
the Dagster job, its schedule, and how the sources file and the Component turn them on."""

import contextlib
import logging
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import duckdb
import pytest
from dagster_duckdb import DuckDBResource

from extralt_dagster import (
    DuckLakeResource,
    build_extralt_maintenance_job,
    build_extralt_maintenance_schedule,
    load_extralt_definitions,
    warehouse,
)
from extralt_dagster.api.errors import ExtraltValidationError
from extralt_dagster.emulator.datagen import write_captures
from extralt_dagster.naming import MAINTENANCE_JOB, MAINTENANCE_OP, MAINTENANCE_SCHEDULE
from extralt_dagster.sources import SourcesFileError
from extralt_dagster.warehouse import RunRecord, Target, WarehouseError, load_export
from extralt_dagster.warehouse.maintenance import MaintenancePolicy, maintain, parse_duration

from .support import wait_until
from .targets import lake_at

T0 = 1_767_225_600.0
SHOES = Target("shoes")
DAY = 86_400


@pytest.fixture
def lake(tmp_path):
    return lake_at(tmp_path)


def nightly_loads(lake, tmp_path, nights=4, count=30):
    """`nights` loads of the same `count` products, one snapshot each; their snapshot ids."""
    snapshots = []
    with warehouse.connect(lake) as conn:
        for night in range(nights):
            path = write_captures(
                tmp_path / f"n{night}.parquet",
                run_id=f"r{night}",
                count=count,
                started_at=T0 + night * DAY,
            )
            run = RunRecord(run_id=f"r{night}", created_at=datetime(2026, 1, 1 + night, tzinfo=UTC))
            snapshots.append(load_export(conn, path, target=SHOES, run=run).snapshot_id)
    return snapshots


def parquet_files(lake) -> set[Path]:
    return set(Path(lake.data_path).rglob("*.parquet"))


def contents(conn, version=None):
    """Every count an analyst sees, at the current snapshot or at `version`."""
    at = f" AT (VERSION => {int(version)})" if version is not None else ""
    history = [
        conn.execute(f"SELECT count(*), count(DISTINCT run_id) FROM {table}{at}").fetchone()
        for table in (SHOES.captures, SHOES.variants)
    ]
    return (
        *history,
        conn.execute(f"SELECT count(*), sum(min_price) FROM {SHOES.products}").fetchone(),
        conn.execute(f"SELECT count(*) FROM {SHOES.current_variants}").fetchone(),
        conn.execute("SELECT count(*) FROM extralt.runs").fetchone(),
    )


def backdate(lake, *, snapshots_up_to=None, days=10, scheduled_files=False):
    """Age parts of the catalog by `days`, as if they had been written that long ago."""
    when = (datetime.now(UTC) - timedelta(days=days)).strftime("%Y-%m-%d %H:%M:%S.%f+00")
    with contextlib.closing(sqlite3.connect(lake.location)) as catalog, catalog:
        if snapshots_up_to is not None:
            catalog.execute(
                "UPDATE ducklake_snapshot SET snapshot_time = ? WHERE snapshot_id <= ?",
                [when, snapshots_up_to],
            )
        if scheduled_files:
            catalog.execute(
                "UPDATE ducklake_files_scheduled_for_deletion SET schedule_start = ?", [when]
            )


def age_file(path: Path, days: float) -> None:
    then = time.time() - days * DAY
    os.utime(path, (then, then))


# --- The plain part --------------------------------------------------------------------------


def test_maintenance_merges_expires_and_deletes_without_changing_the_data(lake, tmp_path):
    snapshots = nightly_loads(lake, tmp_path)
    with warehouse.connect(lake) as conn:
        before = contents(conn)
        at_second = contents(conn, snapshots[1])
    files_after_loads = parquet_files(lake)

    # Right after the loads, the default policy (7 days, 1 day) only merges: nothing is old.
    with warehouse.connect(lake) as conn:
        first = maintain(conn)
        assert contents(conn) == before
        # Merged files keep every snapshot readable: time travel is unchanged.
        assert contents(conn, snapshots[1]) == at_second
    assert first.files_merged >= 2 * len(snapshots)  # history and the variants, per load
    assert first.live_files_after < first.live_files_before
    assert (first.snapshots_expired, first.files_deleted, first.bytes_freed) == (0, 0, 0)
    assert files_after_loads < parquet_files(lake)  # the merged files are written, none gone

    # Ten days on for the first two loads and for the merged-away files: they go.
    backdate(lake, snapshots_up_to=snapshots[1], scheduled_files=True)
    on_disk = {p: p.stat().st_size for p in parquet_files(lake)}
    with warehouse.connect(lake) as conn:
        second = maintain(conn)
        assert contents(conn) == before
        with pytest.raises(duckdb.Error, match=r"(?i)snapshot"):
            contents(conn, snapshots[1])
        assert contents(conn, snapshots[2])[0][0] == 3 * 30  # recent snapshots still read
    gone = set(on_disk) - parquet_files(lake)
    assert second.snapshots_expired == snapshots[1] + 1  # snapshot 0 (the empty lake) too
    assert second.oldest_snapshot == snapshots[2]
    assert second.old_files_deleted == len(gone) > 0 and second.orphans_deleted == 0
    assert second.bytes_freed == sum(on_disk[p] for p in gone)
    assert len(parquet_files(lake)) < len(files_after_loads)


def test_orphaned_files_go_once_older_than_the_age_and_fresh_ones_stay(lake, tmp_path):
    nightly_loads(lake, tmp_path, nights=2)
    folder = Path(lake.data_path, "extralt", "shoes_captures")
    # What a killed load leaves: Parquet files no snapshot knows. One from two days ago, one
    # being written now by a load that has not committed yet.
    old, fresh = folder / "ducklake-old-orphan.parquet", folder / "ducklake-new-orphan.parquet"
    old.write_bytes(b"PAR1" + b"\0" * 4096)
    fresh.write_bytes(b"PAR1" + b"\0" * 512)
    age_file(old, days=2)
    with warehouse.connect(lake) as conn:
        before = contents(conn)
        result = maintain(conn)
        assert contents(conn) == before
    assert not old.exists() and fresh.exists()
    assert (result.orphans_deleted, result.bytes_freed) == (1, 4100)

    # A shorter age catches the fresh one once it is older than that.
    age_file(fresh, days=0.1)
    with warehouse.connect(lake) as conn:
        policy = MaintenancePolicy.parse(delete_files_older_than="1 hour")
        assert maintain(conn, policy).orphans_deleted == 1
    assert not fresh.exists()


KILLED_LOAD = """
import sys
from datetime import UTC, datetime
from extralt_dagster import warehouse
from extralt_dagster.warehouse import RunRecord, Target, load_export
lake = warehouse.Lake(catalog=sys.argv[1], data_path=sys.argv[2])
with warehouse.connect(lake) as conn:
    run = RunRecord(run_id="killed", created_at=datetime(2026, 2, 1, tzinfo=UTC))
    load_export(conn, sys.argv[3], target=Target("shoes"), run=run)
"""


def test_the_files_of_a_killed_load_stay_while_fresh_and_go_once_old(lake, tmp_path):
    nightly_loads(lake, tmp_path, nights=2)
    export = write_captures(tmp_path / "big.parquet", run_id="killed", count=20_000)
    with warehouse.connect(lake) as conn:
        before = contents(conn)
    known = parquet_files(lake)
    child = subprocess.Popen(
        [sys.executable, "-c", KILLED_LOAD, lake.catalog, lake.data_path, str(export)]
    )
    try:
        # SIGKILL as soon as the load has written its first file: long before its commit.
        wait_until(lambda: parquet_files(lake) - known or child.poll() is not None, what="a file")
        child.kill()
    finally:
        child.wait()
    left = parquet_files(lake) - known
    assert left and child.returncode == -signal.SIGKILL

    with warehouse.connect(lake) as conn:
        assert contents(conn) == before  # nothing of it is visible
        # As fresh as a running load's files: kept.
        assert maintain(conn).orphans_deleted == 0
    assert left <= parquet_files(lake)
    sizes = sum(p.stat().st_size for p in left)
    for path in left:
        age_file(path, days=2)
    with warehouse.connect(lake) as conn:
        result = maintain(conn)
        assert contents(conn) == before
    assert (result.orphans_deleted, result.bytes_freed) == (len(left), sizes)
    assert not left & parquet_files(lake)


def test_a_duckdb_file_is_refused(tmp_path):
    with (
        warehouse.connect(tmp_path / "w.duckdb") as conn,
        pytest.raises(WarehouseError, match="Maintenance is for a DuckLake"),
    ):
        maintain(conn)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("7 days", timedelta(days=7)),
        ("7d", timedelta(days=7)),
        ("1 day", timedelta(days=1)),
        ("12 hours", timedelta(hours=12)),
        ("30m", timedelta(minutes=30)),
        ("2 weeks", timedelta(weeks=2)),
        ("0s", timedelta(0)),
    ],
)
def test_durations(text, expected):
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["7", "seven days", "-1 day", "1.5 days", "7 dayz", 7, None])
def test_a_bad_duration_names_the_field(text):
    with pytest.raises(WarehouseError, match=r"^expire_snapshots_older_than must be a duration"):
        MaintenancePolicy.parse(expire_snapshots_older_than=text)


# --- The Dagster job and schedule --------------------------------------------------------------


def test_the_job_maintains_the_lake_under_the_duckdb_key_and_reports_it(lake, tmp_path, instance):
    nightly_loads(lake, tmp_path, nights=3)
    orphan = Path(lake.data_path, "ducklake-orphan.parquet")
    orphan.write_bytes(b"PAR1" * 100)
    age_file(orphan, days=3)
    resource = DuckLakeResource(catalog=lake.catalog, data_path=lake.data_path)
    result = build_extralt_maintenance_job().execute_in_process(
        instance=instance, resources={"duckdb": resource}
    )
    assert result.success
    [output] = [e for e in result.all_events if e.is_successful_output]
    metadata = {k: v.value for k, v in output.step_output_data.metadata.items()}
    assert metadata["extralt/files_merged"] >= 6
    assert metadata["extralt/live_files_after"] < metadata["extralt/live_files_before"]
    assert metadata["extralt/snapshots_expired"] == 0
    assert (metadata["extralt/files_deleted"], metadata["extralt/orphans_deleted"]) == (1, 1)
    assert metadata["extralt/bytes_freed"] == 400
    assert not orphan.exists()
    assert all(k.startswith("extralt/") for k in metadata)

    # Run config changes the ages for one run: every snapshot but the newest expires.
    config = {"ops": {MAINTENANCE_OP: {"config": {"expire_snapshots_older_than": "0s"}}}}
    again = build_extralt_maintenance_job().execute_in_process(
        run_config=config, instance=instance, resources={"duckdb": resource}
    )
    [output] = [e for e in again.all_events if e.is_successful_output]
    assert output.step_output_data.metadata["extralt/snapshots_expired"].value >= 4


def test_a_bad_age_in_run_config_fails_naming_the_field(lake, instance):
    resource = DuckLakeResource(catalog=lake.catalog, data_path=lake.data_path)
    config = {"ops": {MAINTENANCE_OP: {"config": {"delete_files_older_than": "a while"}}}}
    result = build_extralt_maintenance_job().execute_in_process(
        run_config=config, instance=instance, resources={"duckdb": resource}, raise_on_error=False
    )
    [failure] = [e for e in result.all_events if e.is_step_failure]
    message = failure.step_failure_data.error.message
    assert "config.delete_files_older_than must be a duration" in message
    assert "got 'a while'" in message and "Nothing was changed" in message


def test_the_job_on_a_duckdb_file_fails_saying_why(tmp_path, instance):
    resource = DuckDBResource(database=str(tmp_path / "w.duckdb"))
    result = build_extralt_maintenance_job().execute_in_process(
        instance=instance, resources={"duckdb": resource}, raise_on_error=False
    )
    [failure] = [e for e in result.all_events if e.is_step_failure]
    assert "is for a DuckLake" in failure.step_failure_data.error.message
    assert not (tmp_path / "w.duckdb").exists()  # not even opened


def test_the_schedule_is_stopped_by_default_and_checked_at_definition_time(instance):
    schedule = build_extralt_maintenance_schedule()
    assert (schedule.name, schedule.job_name) == (MAINTENANCE_SCHEDULE, MAINTENANCE_JOB)
    assert schedule.default_status == dg.DefaultScheduleStatus.STOPPED
    assert schedule.cron_schedule == "0 4 * * 0"
    when = datetime(2026, 3, 1, 4, tzinfo=UTC)
    with dg.build_schedule_context(scheduled_execution_time=when) as ctx:
        request = schedule.evaluate_tick(ctx).run_requests[0]
    assert request.run_key == f"{MAINTENANCE_JOB}:2026-03-01T04:00:00+00:00"

    # A finished maintenance run does not hold the next tick; one in flight does.
    def run(status):
        return instance.add_run(
            dg.DagsterRun(job_name=MAINTENANCE_JOB, run_id=str(uuid.uuid4()), status=status)
        )

    def tick():
        with dg.build_schedule_context(instance=instance, scheduled_execution_time=when) as ctx:
            return schedule.evaluate_tick(ctx)

    run(dg.DagsterRunStatus.SUCCESS)
    assert len(tick().run_requests) == 1
    busy = run(dg.DagsterRunStatus.STARTED)
    skipped = tick()
    assert skipped.run_requests == []
    assert f"maintenance run {busy.run_id} is still started" in skipped.skip_message
    with pytest.raises(ExtraltValidationError, match="minute 61 is out of range"):
        build_extralt_maintenance_schedule("61 4 * * 0")
    with pytest.raises(ExtraltValidationError, match=r"^delete_files_older_than must be"):
        build_extralt_maintenance_schedule(delete_files_older_than="1 dy")


# --- The sources file and the Component ----------------------------------------------------------

SOURCES = """\
sources:
  - name: shoes
    robot_id: rbt_shoes
"""


def schedule_of(defs):
    [schedule] = [s for s in defs.schedules if s.name == MAINTENANCE_SCHEDULE]
    return schedule


def sources_file(tmp_path, extra=""):
    path = tmp_path / "sources.yaml"
    path.write_text(SOURCES + textwrap.dedent(extra), encoding="utf-8")
    return path


@pytest.fixture
def lake_env(monkeypatch, tmp_path):
    monkeypatch.setenv("EXTRALT_DUCKLAKE_CATALOG", f"sqlite:{tmp_path / 'c.sqlite'}")
    monkeypatch.setenv("EXTRALT_DUCKLAKE_DATA_PATH", str(tmp_path / "data"))


def test_a_lake_gets_the_job_and_a_stopped_schedule_and_a_file_gets_neither(
    lake_env, tmp_path, monkeypatch, caplog
):
    defs = load_extralt_definitions(sources_file(tmp_path))
    schedule = schedule_of(defs)
    assert schedule.default_status == dg.DefaultScheduleStatus.STOPPED
    assert defs.get_job_def(MAINTENANCE_JOB).name == MAINTENANCE_JOB

    monkeypatch.delenv("EXTRALT_DUCKLAKE_CATALOG")
    on_file = sources_file(tmp_path, "maintenance: {cron: '0 5 * * *'}\n")
    with caplog.at_level(logging.WARNING, logger="extralt_dagster.sources"):
        defs = load_extralt_definitions(on_file, duckdb_path=str(tmp_path / "w.duckdb"))
    assert MAINTENANCE_JOB not in {j.name for j in defs.resolve_all_job_defs()}
    assert not [s for s in defs.schedules if s.name == MAINTENANCE_SCHEDULE]
    assert "`maintenance:` is for a DuckLake" in caplog.text


def test_the_default_code_location_offers_it_on_a_lake(lake_env, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for name in ("EXTRALT_SOURCES", "EXTRALT_API_KEY", "EXTRALT_BASE_URL", "EXTRALT_DUCKDB_PATH"):
        monkeypatch.delenv(name, raising=False)
    from extralt_dagster.definitions import build_definitions

    defs = build_definitions()
    assert isinstance(defs.resources["duckdb"], DuckLakeResource)
    assert schedule_of(defs).default_status == dg.DefaultScheduleStatus.STOPPED
    assert MAINTENANCE_JOB in {j.name for j in defs.resolve_all_job_defs()}


def test_the_sources_file_sets_the_schedule_and_the_ages(lake_env, tmp_path, instance):
    path = sources_file(
        tmp_path,
        """\
        defaults: {timezone: Europe/Paris}
        maintenance:
          cron: "30 2 * * *"
          schedule_running: true
          expire_snapshots_older_than: 0s
          delete_files_older_than: 2 days
        """,
    )
    defs = load_extralt_definitions(path)
    schedule = schedule_of(defs)
    assert (schedule.cron_schedule, schedule.execution_timezone) == ("30 2 * * *", "Europe/Paris")
    assert schedule.default_status == dg.DefaultScheduleStatus.RUNNING
    # The ages are the job's config: a run from the schedule or the Launchpad uses them.
    lake = defs.resources["duckdb"].lake()
    nightly_loads(lake, tmp_path, nights=2)
    result = defs.get_job_def(MAINTENANCE_JOB).execute_in_process(instance=instance)
    [output] = [e for e in result.all_events if e.is_successful_output]
    assert (
        output.step_output_data.metadata["extralt/snapshots_expired"].value == 2
    )  # not the newest


@pytest.mark.parametrize(
    ("section", "line", "expected"),
    [
        (
            "maintenance: {expire_snapshots_older_than: 7 dayz}",
            4,
            "maintenance, field expire_snapshots_older_than: expire_snapshots_older_than must "
            "be a duration such as '7 days'",
        ),
        (
            "maintenance:\n  crn: '0 4 * * *'",
            5,
            "maintenance, field crn: unknown field. Did you mean 'cron'?",
        ),
        ("maintenance:\n  cron: '0 25 * * *'", 5, "maintenance, field cron: cron '0 25 * * *'"),
        ("maintenance: {schedule_running: 'yes'}", 4, "maintenance, field schedule_running:"),
    ],
)
def test_a_bad_maintenance_section_names_the_line_and_field(tmp_path, section, line, expected):
    with pytest.raises(SourcesFileError) as info:
        load_extralt_definitions(sources_file(tmp_path, section + "\n"))
    message = str(info.value)
    assert f"line {line}: {expected}" in message, message


def test_the_component_takes_the_same_maintenance_section(lake_env, tmp_path, monkeypatch):
    from .test_component import load, load_error

    monkeypatch.chdir(tmp_path)
    attributes = {
        "sources": [{"name": "shoes", "robot_id": "rbt_shoes"}],
        "maintenance": {"cron": "0 6 * * 1", "delete_files_older_than": "3 days"},
    }
    with load(attributes) as (_, defs):
        schedule = schedule_of(defs)
        assert schedule.cron_schedule == "0 6 * * 1"
        assert schedule.default_status == dg.DefaultScheduleStatus.STOPPED
    bad = {**attributes, "maintenance": {"delete_files_older_than": "3 dayz"}}
    assert "maintenance, field delete_files_older_than" in load_error(bad)
