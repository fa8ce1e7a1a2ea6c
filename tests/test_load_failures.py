"""How the captures step fails: at once when a retry cannot help, under the RetryPolicy when it
can, and always with a message that says what to do. Real materializations, real emulator."""

import subprocess
import sys
import textwrap

import dagster as dg
import duckdb
import pytest
from dagster_duckdb import DuckDBResource

from extralt_dagster import build_extralt_assets, warehouse
from extralt_dagster.naming import captures_asset_key

from .support import event_log_text, failure_messages, fast_extralt, materialization_metadata

EXPORT = ("GET", "/v0/extract/captures/export")
CAPTURES_STEP = "extralt__shoes__captures"
#: The README's policy, with a delay short enough for a test.
POLICY = dg.RetryPolicy(max_retries=2, delay=0.05)


def source(tmp_path, **kw):
    return build_extralt_assets(
        "shoes",
        "rbt_shoes",
        budget=20,
        export_dir=str(tmp_path / "exports"),
        lock_timeout_seconds=0.5,
        retry_policy=POLICY,
        **kw,
    )


def materialize(assets, emulator, instance, database, selection=None, **extralt):
    return dg.materialize(
        assets,
        instance=instance,
        resources={
            "extralt": fast_extralt(emulator, **extralt),
            "duckdb": DuckDBResource(database=str(database)),
        },
        selection=selection,
        raise_on_error=False,
    )


def attempts(result, step=CAPTURES_STEP) -> int:
    """How many times the step ran: its first start plus each restart for a retry."""
    starts = ("STEP_START", "STEP_RESTARTED")
    return sum(1 for e in result.all_events if e.step_key == step and e.event_type_value in starts)


def holder(database, *, read_only: bool) -> subprocess.Popen:
    """Another process holding `database` open until its stdin closes; returns once it does."""
    code = textwrap.dedent(
        f"""
        import sys, duckdb
        con = duckdb.connect({str(database)!r}, read_only={read_only})
        print("open", flush=True)
        sys.stdin.read()
        """
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout.readline().strip() == "open"  # a handshake, not a sleep
    return proc


def release(proc: subprocess.Popen) -> None:
    proc.stdin.close()
    proc.wait(timeout=30)


# --- Errors no retry can heal: one attempt ------------------------------------------------------


def test_a_catalog_conflict_fails_at_once(emulator, instance, tmp_path):
    """An object of ours replaced by hand (`extralt.runs` with other columns): a binder error,
    the same on every attempt."""
    database = tmp_path / "warehouse.duckdb"
    with duckdb.connect(str(database)) as con:
        con.execute("CREATE SCHEMA extralt; CREATE TABLE extralt.runs (note VARCHAR)")

    result = materialize(source(tmp_path), emulator, instance, database)

    assert not result.success
    assert attempts(result) == 1
    assert emulator.count_requests(*EXPORT) == 1
    [message] = failure_messages(result)
    assert "Binder Error" in message and "would fail the same way" in message
    assert "nothing was changed" in message


def test_a_schema_conflict_fails_at_once(emulator, instance, tmp_path):
    database = tmp_path / "warehouse.duckdb"
    with duckdb.connect(str(database)) as con:
        con.execute(
            "CREATE SCHEMA extralt; "
            "CREATE TABLE extralt.shoes_captures (id VARCHAR, min_price STRUCT(amount DOUBLE), "
            "run_id VARCHAR, robot_id VARCHAR, loaded_at TIMESTAMPTZ)"
        )

    result = materialize(source(tmp_path), emulator, instance, database)

    assert not result.success
    assert attempts(result) == 1 and emulator.count_requests(*EXPORT) == 1
    [message] = failure_messages(result)
    assert "min_price" in message and "STRUCT" in message and "DOUBLE" in message


def test_a_corrupt_export_fails_at_once(emulator, instance, tmp_path):
    database = tmp_path / "warehouse.duckdb"
    emulator.set_faults(export_corrupt=True)

    result = materialize(source(tmp_path), emulator, instance, database)

    assert not result.success
    assert attempts(result) == 1 and emulator.count_requests(*EXPORT) == 1
    [message] = failure_messages(result)
    assert "unusable" in message and "not retried" in message
    assert "materialize the captures asset alone" in message


def test_a_file_that_is_not_a_duckdb_database_fails_at_once(emulator, instance, tmp_path):
    database = tmp_path / "warehouse.duckdb"
    database.write_bytes(b"this is a spreadsheet, not a database" * 200)

    result = materialize(source(tmp_path), emulator, instance, database)

    assert not result.success
    assert attempts(result) == 1 and emulator.count_requests(*EXPORT) == 1
    [message] = failure_messages(result)
    assert str(database) in message and "cannot open" in message


def test_an_unknown_run_fails_at_once(emulator, instance, tmp_path):
    """404 on the export: the run is gone at Extralt; asking again cannot bring it back."""
    assets = source(tmp_path)
    database = tmp_path / "warehouse.duckdb"
    assert materialize(assets, emulator, instance, database).success
    exports_before = emulator.count_requests(*EXPORT)
    emulator.set_faults(error_status=404, error_count=10, match="GET /v0/extract/captures/export")

    result = materialize(assets, emulator, instance, database, selection=[assets[1]])

    assert not result.success
    assert attempts(result) == 1
    assert emulator.count_requests(*EXPORT) == exports_before + 1
    [message] = failure_messages(result)
    assert "fails the same way on every attempt" in message


# --- Transient errors: retried under the policy ---------------------------------------------


def test_a_cut_download_is_retried_and_heals(emulator, instance, tmp_path):
    """The connection drops mid-export once; the client has no retries of its own here, so
    the step's RetryPolicy downloads again, and the second attempt loads."""
    database = tmp_path / "warehouse.duckdb"
    emulator.set_faults(export_cut_after_bytes=1024, export_count=1)

    result = materialize(source(tmp_path), emulator, instance, database, max_retries=0)

    assert result.success, failure_messages(result)
    assert attempts(result) == 2 and emulator.count_requests(*EXPORT) == 2
    with duckdb.connect(str(database), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM extralt.shoes_captures").fetchone() == (20,)


def test_a_held_lock_is_retried_until_the_policy_gives_up(emulator, instance, tmp_path):
    assets = source(tmp_path)
    database = tmp_path / "warehouse.duckdb"
    assert materialize(assets, emulator, instance, database).success
    exports_before = emulator.count_requests(*EXPORT)
    proc = holder(database, read_only=False)
    try:
        result = materialize(assets, emulator, instance, database, selection=[assets[1]])
    finally:
        release(proc)

    assert not result.success
    assert attempts(result) == 3  # the first attempt and two retries
    assert emulator.count_requests(*EXPORT) == exports_before + 3
    # Each retry records the Failure that asked for it (the last one says "Exceeded max_retries").
    retried = [
        e.event_specific_data.error.cause.message
        for e in result.all_events
        if e.event_type_value == "STEP_UP_FOR_RETRY"
    ]
    assert len(retried) == 2
    assert all(f"process {proc.pid}" in m and "warehouse.duckdb" in m for m in retried)


# --- Messages -------------------------------------------------------------------------------


def test_a_read_only_reader_in_another_process_blocks_loads_and_the_message_says_so(tmp_path):
    database = tmp_path / "warehouse.duckdb"
    warehouse.connect(database).close()
    proc = holder(database, read_only=True)
    try:
        with pytest.raises(warehouse.WarehouseLockedError) as info:
            warehouse.connect(database, lock_timeout_seconds=0.2)
    finally:
        release(proc)

    error = info.value
    message = str(error)
    assert error.database == str(database) and error.holder_pid == proc.pid
    assert repr(str(database)) in message and f"process {proc.pid}" in message
    assert "read-only connections included" in message
    assert "DuckLake" in message and "copy of the file" in message
    # DuckDB's own advice to open the file read-only is left out: that is what blocked us.
    assert "read-only mode" not in message and "-readonly parameter" not in message
    assert error.retryable


@pytest.mark.parametrize("dagster_home", ["set", "unset"])
def test_captures_before_any_run_names_another_instance_as_the_likely_cause(
    emulator, instance, tmp_path, monkeypatch, dagster_home
):
    """`dagster asset materialize` in a shell without DAGSTER_HOME runs in a temporary
    instance that knows no run: the message says so, and how to fix it."""
    assets = source(tmp_path)
    if dagster_home == "unset":
        monkeypatch.delenv("DAGSTER_HOME", raising=False)
    result = materialize(assets, emulator, instance, tmp_path / "w.duckdb", selection=[assets[1]])

    assert not result.success and attempts(result) == 1
    assert emulator.count_requests() == 0
    [message] = failure_messages(result)
    assert "No Extralt run has been materialized for source 'shoes'" in message
    assert "extralt/shoes/run" in message and "different Dagster instance" in message
    if dagster_home == "unset":
        assert "DAGSTER_HOME is not set" in message and "temporary instance" in message
        assert "export DAGSTER_HOME=$PWD/.dagster_home" in message
    else:
        assert f"DAGSTER_HOME={instance.root_directory}" in message


def test_a_file_named_after_the_schema_loads_and_warns_readers(emulator, instance, tmp_path):
    """`extralt.duckdb` with schema `extralt`: DuckDB's catalog and the schema share a name.
    The load works (names are catalog-qualified); readers are told how to write queries."""
    database = tmp_path / "data" / "extralt.duckdb"

    result = materialize(source(tmp_path), emulator, instance, database)

    assert result.success, failure_messages(result)
    assert materialization_metadata(result, captures_asset_key("shoes"))["dagster/row_count"] == 20
    with duckdb.connect(str(database), read_only=True) as con:
        for table in ("shoes_captures", "shoes_products", "shoes_variants", "runs"):
            [(rows,)] = con.execute(f"SELECT count(*) FROM extralt.extralt.{table}").fetchall()
            assert rows > 0, table
    assert "readers must write extralt.extralt.shoes_captures" in event_log_text(instance)
