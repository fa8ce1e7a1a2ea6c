"""The `captures` asset, through real materializations: emulator export -> DuckDB tables."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from extralt_dagster import build_extralt_assets
from extralt_dagster.assets.captures import (
    EXPORT_FOLDER_PREFIX,
    _export_folder_prefix,
    export_folder_owner,
)
from extralt_dagster.assets.checks import (
    CHECK_DRIFT,
    CHECK_EXTRACTED_AT,
    CHECK_HAS_CAPTURES,
    CHECK_PRICES,
    CHECK_RUN_COUNT,
    CHECK_UNIQUE_IDS,
)
from extralt_dagster.naming import captures_asset_key

from .support import (
    event_log_text,
    failure_messages,
    materialization_metadata,
    resources,
    wait_until,
)

CREATE = ("POST", "/v0/extract/runs")
EXPORT = ("GET", "/v0/extract/captures/export")


@pytest.fixture
def exports(tmp_path):
    return tmp_path / "exports"


@pytest.fixture
def source(exports):
    return build_extralt_assets(
        "shoes", "rbt_shoes", budget=30, export_dir=str(exports), lock_timeout_seconds=1
    )


def materialize(assets, emulator, instance, tmp_path, selection=None, **kw):
    return dg.materialize(
        assets,
        instance=instance,
        resources=resources(emulator, tmp_path),
        selection=selection,
        raise_on_error=False,
        **kw,
    )


def db_counts(tmp_path):
    with duckdb.connect(str(tmp_path / "warehouse.duckdb"), read_only=True) as con:
        return {
            t: con.execute(f"select count(*) from extralt.{t}").fetchall()[0][0]
            for t in ("shoes_captures", "shoes_products", "shoes_variants", "runs")
        }


def table_snapshot(tmp_path):
    with duckdb.connect(str(tmp_path / "warehouse.duckdb"), read_only=True) as con:
        return {
            t: con.execute(f"select * from extralt.{t} order by all").fetchall()
            for t in ("shoes_captures", "shoes_variants", "runs")
        }


def checks(result):
    return {e.check_name: e for e in result.get_asset_check_evaluations()}


def test_first_load_fills_all_four_tables_with_metadata(emulator, instance, tmp_path, source):
    result = materialize(source, emulator, instance, tmp_path)
    assert result.success, failure_messages(result)
    md = materialization_metadata(result, captures_asset_key("shoes"))
    counts = db_counts(tmp_path)
    assert counts["shoes_captures"] == md["dagster/row_count"] == 30
    assert counts["shoes_products"] == md["extralt/products"] == 30
    assert counts["shoes_variants"] == md["extralt/variants"] > 30
    assert counts["runs"] == 1
    assert md["dagster/table_name"] == "extralt.shoes_captures"
    assert md["dagster/uri"].startswith("duckdb://") and md["dagster/uri"].endswith(".duckdb")
    columns = {c.name: c.type for c in md["dagster/column_schema"].columns}
    assert columns["min_price"] == "DOUBLE" and columns["run_id"] == "VARCHAR"
    assert columns["variants"].startswith("STRUCT(")
    assert md["extralt/bytes_downloaded"] > 0
    assert "| title |" in md["extralt/preview"]
    evaluations = checks(result)
    assert set(evaluations) == {
        CHECK_HAS_CAPTURES,
        CHECK_UNIQUE_IDS,
        CHECK_PRICES,
        CHECK_DRIFT,
        CHECK_RUN_COUNT,
        CHECK_EXTRACTED_AT,
    }
    passing = (
        CHECK_HAS_CAPTURES,
        CHECK_UNIQUE_IDS,
        CHECK_DRIFT,
        CHECK_RUN_COUNT,
        CHECK_EXTRACTED_AT,
    )
    assert all(evaluations[c].passed for c in passing)
    assert evaluations[CHECK_RUN_COUNT].metadata["extracted"].value == 30
    assert md["extralt/extracted"] == 30 and md["extralt/missing_captures"] == 0
    with duckdb.connect(str(tmp_path / "warehouse.duckdb"), read_only=True) as con:
        [(credits, extracted, dagster_run)] = con.execute(
            "select credits, extracted, dagster_run_id from extralt.runs"
        ).fetchall()
    assert (credits, extracted, dagster_run) == (60, 30, result.run_id)


def test_second_run_appends_and_reload_never_duplicates(emulator, instance, tmp_path, source):
    assert materialize(source, emulator, instance, tmp_path).success
    second = materialize(source, emulator, instance, tmp_path)
    assert second.success
    counts = db_counts(tmp_path)
    assert counts["shoes_captures"] == 60  # two runs of history
    assert counts["shoes_products"] == 30  # same 30 products, newest capture each
    assert counts["runs"] == 2
    variants_after_two = counts["shoes_variants"]

    # Captures alone: reloads the newest recorded run, no create, no credits.
    creates = emulator.count_requests(*CREATE)
    alone = materialize(source, emulator, instance, tmp_path, selection=[source[1]])
    assert alone.success
    assert emulator.count_requests(*CREATE) == creates
    assert db_counts(tmp_path) == {**counts, "shoes_variants": variants_after_two}


@pytest.mark.parametrize("fault", [{"export_corrupt": True}, {"export_cut_after_bytes": 2048}])
def test_broken_export_leaves_tables_and_disk_unchanged(
    emulator, instance, tmp_path, source, exports, fault
):
    assert materialize(source, emulator, instance, tmp_path).success
    before = table_snapshot(tmp_path)
    emulator.set_faults(**fault)
    result = materialize(source, emulator, instance, tmp_path, selection=[source[1]])
    assert not result.success
    assert table_snapshot(tmp_path) == before
    assert list(exports.iterdir()) == []  # no temporary export left behind
    assert emulator.count_requests(*CREATE) == 1


def test_an_export_duckdb_refuses_mid_load_leaves_every_table_unchanged(
    emulator, instance, tmp_path, exports
):
    """One bad page in a whole Parquet file passes the download's checks (magic bytes and
    footer), so the reload of the run opens DuckDB, deletes the run's rows and fails reading
    the page: the rollback must bring them back (a commit after the DELETE would lose them)."""
    assets = build_extralt_assets("shoes", "rbt_shoes", budget=300, export_dir=str(exports))
    assert materialize(assets, emulator, instance, tmp_path).success
    before = table_snapshot(tmp_path)
    emulator.set_faults(export_corrupt_page=True)
    result = materialize(assets, emulator, instance, tmp_path, selection=[assets[1]])
    assert not result.success
    [message] = failure_messages(result)
    assert "DuckDB said" in message  # refused by the load, after the download accepted it
    assert table_snapshot(tmp_path) == before
    assert list(exports.iterdir()) == []


def test_folders_of_killed_steps_are_removed_and_live_ones_kept(
    emulator, instance, tmp_path, source, exports
):
    """A SIGKILLed step runs no `finally`: the next load removes its export folder, and only
    folders whose process is gone, on this host."""
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    # This host's tag, read back from a name this process's steps would use.
    host, pid = export_folder_owner(Path(f"{_export_folder_prefix()}probe"))
    assert pid == os.getpid()
    orphan = exports / f"{EXPORT_FOLDER_PREFIX}{host}-{dead.pid}-abc"
    live = exports / f"{EXPORT_FOLDER_PREFIX}{host}-{os.getpid()}-def"
    other_host = exports / f"{EXPORT_FOLDER_PREFIX}0000beef-{dead.pid}-ghi"
    assert [export_folder_owner(f)[1] for f in (orphan, live, other_host)] == [
        dead.pid,
        os.getpid(),
        dead.pid,
    ]
    for folder in (orphan, live, other_host):
        folder.mkdir(parents=True)
        (folder / ".run.parquet.part").write_bytes(b"PAR1 half an export")

    result = materialize(source, emulator, instance, tmp_path)

    assert result.success, failure_messages(result)
    assert sorted(exports.iterdir()) == sorted([live, other_host])
    assert f"Removed {orphan}, left behind by a killed step." in event_log_text(instance)
    assert db_counts(tmp_path)["shoes_captures"] == 30


def test_extra_and_missing_columns_evolve_the_schema(emulator, instance, tmp_path, source):
    assert materialize(source, emulator, instance, tmp_path).success
    emulator.set_faults(export_extra_columns=True, export_drop_columns=("subtitle",))
    result = materialize(source, emulator, instance, tmp_path)
    assert result.success
    md = materialization_metadata(result, captures_asset_key("shoes"))
    assert "rating" in md["extralt/columns_added"]
    assert "subtitle" in md["extralt/columns_missing"]
    drift = checks(result)[CHECK_DRIFT]
    assert not drift.passed and drift.severity == dg.AssetCheckSeverity.WARN
    with duckdb.connect(str(tmp_path / "warehouse.duckdb"), read_only=True) as con:
        rows = con.execute(
            "select run_id, count(rating), count(subtitle) from extralt.shoes_captures "
            "group by run_id order by count(rating)"
        ).fetchall()
    assert rows[0][1] == 0 and rows[0][2] > 0  # first run: no rating, has subtitles
    assert rows[1][1] > 0 and rows[1][2] == 0  # second run: ratings, subtitle all NULL


@pytest.mark.parametrize(
    "emulator", [{"seed": 7}], indirect=True
)  # a seeded run id: about 1 in 100 captures lacks min_price, and 300 captures could have none
def test_price_check_warns_past_its_threshold(emulator, instance, tmp_path, exports):
    assets = build_extralt_assets(
        "shoes", "rbt_shoes", budget=300, export_dir=str(exports), null_price_warn_ratio=0.0
    )
    result = materialize(assets, emulator, instance, tmp_path)
    assert result.success  # a WARN check never fails the materialization
    price = checks(result)[CHECK_PRICES]
    assert not price.passed and price.severity == dg.AssetCheckSeverity.WARN
    assert price.metadata["null_min_price"].value > 0


@pytest.mark.parametrize(
    "emulator", [{"speed": 1, "starting_seconds": 60}], indirect=True
)  # stopped while starting, however slow the machine
def test_an_empty_run_fails_the_blocking_check(emulator, instance, tmp_path, exports):
    assets = build_extralt_assets(
        "shoes", "rbt_shoes", budget=30, accept_stopped=True, export_dir=str(exports)
    )

    def stop_at_once():
        run_id = wait_until(lambda: next(iter(emulator.runs), None), what="a run")
        emulator.stop_run_externally(run_id)

    import threading

    stopper = threading.Thread(target=stop_at_once)
    stopper.start()
    result = materialize(assets, emulator, instance, tmp_path)
    stopper.join()
    assert emulator.run(next(iter(emulator.runs))).extracted == 0
    evaluations = checks(result)
    has = evaluations[CHECK_HAS_CAPTURES]
    assert not has.passed and has.severity == dg.AssetCheckSeverity.ERROR
    assert evaluations[CHECK_UNIQUE_IDS].passed


def test_a_held_lock_fails_clearly_after_the_bound(emulator, instance, tmp_path, source):
    assert materialize(source, emulator, instance, tmp_path).success
    before = db_counts(tmp_path)
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(
                f"""
                import duckdb, sys
                con = duckdb.connect({str(tmp_path / "warehouse.duckdb")!r})
                print("locked", flush=True)
                sys.stdin.read()
                """
            ),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        result = materialize(source, emulator, instance, tmp_path, selection=[source[1]])
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)
    assert not result.success
    [message] = failure_messages(result)
    assert "warehouse.duckdb" in message and "lock" in message.lower()
    assert db_counts(tmp_path) == before


def test_captures_alone_before_any_run_explains_what_to_do(emulator, instance, tmp_path, source):
    result = materialize(source, emulator, instance, tmp_path, selection=[source[1]])
    assert not result.success
    [message] = failure_messages(result)
    assert "extralt/shoes/run" in message
    assert emulator.count_requests() == 0


def test_jsonl_export_loads_the_same_rows(emulator, instance, tmp_path, exports):
    assets = build_extralt_assets(
        "shoes", "rbt_shoes", budget=25, export_format="jsonl", export_dir=str(exports)
    )
    result = materialize(assets, emulator, instance, tmp_path)
    assert result.success, failure_messages(result)
    assert db_counts(tmp_path)["shoes_captures"] == 25
    assert any(
        r.query.get("format") == "jsonl" for r in emulator.requests if r.path.endswith("/export")
    )


def test_captures_asset_declares_checks_kinds_and_pool(source):
    captures = source[1]
    spec = next(iter(captures.specs))
    assert spec.kinds == {"extralt", "duckdb"}
    assert captures.op.pool == "duckdb"
    names = {k.name for k in captures.check_keys}
    assert names == {
        CHECK_HAS_CAPTURES,
        CHECK_UNIQUE_IDS,
        CHECK_PRICES,
        CHECK_DRIFT,
        CHECK_RUN_COUNT,
        CHECK_EXTRACTED_AT,
    }
    [blocking] = [s for s in captures.check_specs if s.blocking]
    assert blocking.name == CHECK_HAS_CAPTURES
