"""Loading a chosen Extralt run (`run_id` in the captures asset's run config), against the
emulator over real HTTP: only a completed run of the source's robot loads, nothing is created,
stopped or restarted, and an old run never makes the products older."""

import dagster as dg
import duckdb
import pytest

from extralt_dagster import build_extralt_assets
from extralt_dagster.naming import captures_asset_key

from .support import failure_messages, materialization_metadata, resources

EXPORT = ("GET", "/v0/extract/captures/export")


@pytest.fixture
def source(tmp_path):
    return build_extralt_assets(
        "shoes", "rbt_shoes", budget=30, export_dir=str(tmp_path / "exports")
    )


def load_run(source, emulator, instance, tmp_path, run_id):
    """Materialize the captures asset alone with `run_id` in its run config."""
    captures = source[1]
    return dg.materialize(
        source,
        instance=instance,
        resources=resources(emulator, tmp_path),
        selection=[captures],
        run_config={"ops": {captures.op.name: {"config": {"run_id": run_id}}}},
        raise_on_error=False,
    )


def dashboard_run(emulator, robot_id="rbt_shoes", budget=30):
    """A completed run made outside Dagster (as from the Extralt dashboard)."""
    run_id = emulator.state.create_run(robot_id, budget=budget)
    emulator.finish_run(run_id)
    return run_id


def tables(tmp_path):
    path = tmp_path / "warehouse.duckdb"
    if not path.exists():
        return None
    with duckdb.connect(str(path), read_only=True) as con:
        return {
            t: con.execute(f"select * from extralt.{t} order by all").fetchall()
            for t in ("shoes_captures", "shoes_products", "shoes_variants", "runs")
        }


def history_runs(tmp_path):
    with duckdb.connect(str(tmp_path / "warehouse.duckdb"), read_only=True) as con:
        return dict(
            con.execute("select run_id, count(*) from extralt.shoes_captures group by 1").fetchall()
        )


def spending_requests(emulator):
    """Requests that could cost credits or change a run: creates, stops and restarts."""
    return [r for r in emulator.requests if r.method == "POST"]


def test_a_run_made_outside_dagster_loads_without_spending(emulator, instance, tmp_path, source):
    run_id = dashboard_run(emulator)
    result = load_run(source, emulator, instance, tmp_path, run_id)
    assert result.success, failure_messages(result)
    md = materialization_metadata(result, captures_asset_key("shoes"))
    assert md["extralt/run_id"] == run_id
    assert md["extralt/run_from"] == "run config"
    assert md["extralt/origin"] == "extralt"  # no Dagster run followed it
    assert md["dagster/row_count"] == 30
    assert history_runs(tmp_path) == {run_id: 30}
    assert spending_requests(emulator) == []
    assert emulator.count_requests("GET", f"/v0/extract/runs/{run_id}") == 1
    with duckdb.connect(str(tmp_path / "warehouse.duckdb"), read_only=True) as con:
        [(logged, dagster_run, origin)] = con.execute(
            "select run_id, dagster_run_id, origin from extralt.runs"
        ).fetchall()
    assert (logged, dagster_run, origin) == (run_id, result.run_id, "extralt")


def test_a_chosen_run_that_dagster_started_is_logged_as_dagsters(
    emulator, instance, tmp_path, source
):
    made = dg.materialize(
        source, instance=instance, resources=resources(emulator, tmp_path), raise_on_error=False
    )
    assert made.success, failure_messages(made)
    [run_id] = emulator.runs
    result = load_run(source, emulator, instance, tmp_path, run_id)
    assert result.success, failure_messages(result)
    md = materialization_metadata(result, captures_asset_key("shoes"))
    assert (md["extralt/run_id"], md["extralt/origin"]) == (run_id, "dagster")
    with duckdb.connect(str(tmp_path / "warehouse.duckdb"), read_only=True) as con:
        assert con.execute("select run_id, origin from extralt.runs").fetchall() == [
            (run_id, "dagster")
        ]


def test_without_run_id_the_run_assets_newest_run_still_loads(emulator, instance, tmp_path, source):
    result = dg.materialize(
        source, instance=instance, resources=resources(emulator, tmp_path), raise_on_error=False
    )
    assert result.success, failure_messages(result)
    md = materialization_metadata(result, captures_asset_key("shoes"))
    [made] = emulator.runs
    assert md["extralt/run_id"] == made
    assert md["extralt/run_from"] == "extralt/shoes/run"
    assert md["extralt/origin"] == "dagster"


def test_a_run_of_another_robot_is_refused_before_any_download(
    emulator, instance, tmp_path, source
):
    assert load_run(source, emulator, instance, tmp_path, dashboard_run(emulator)).success
    before = tables(tmp_path)
    other = dashboard_run(emulator, "rbt_outdoor")
    emulator.clear_requests()
    result = load_run(source, emulator, instance, tmp_path, other)
    assert not result.success
    [message] = failure_messages(result)
    assert other in message and "belongs to robot rbt_outdoor" in message
    assert "rbt_shoes" in message and "no table was changed" in message
    assert tables(tmp_path) == before
    assert emulator.count_requests(*EXPORT) == 0
    assert spending_requests(emulator) == []


def test_an_old_run_after_a_newer_one_leaves_products_unchanged(
    emulator, instance, tmp_path, source
):
    old = dashboard_run(emulator)
    emulator.clock.advance(3600)
    newer = dg.materialize(
        source, instance=instance, resources=resources(emulator, tmp_path), raise_on_error=False
    )
    assert newer.success, failure_messages(newer)
    before = tables(tmp_path)
    [newest] = [r for r in emulator.runs if r != old]

    result = load_run(source, emulator, instance, tmp_path, old)
    assert result.success, failure_messages(result)
    after = tables(tmp_path)
    assert after["shoes_products"] == before["shoes_products"]
    assert {row[0] for row in after["runs"]} == {old, newest}
    assert history_runs(tmp_path) == {old: 30, newest: 30}
    # The products are the newer run's captures, every one of them.
    with duckdb.connect(str(tmp_path / "warehouse.duckdb"), read_only=True) as con:
        [(products, of_newest)] = con.execute(
            "select count(*), count(*) filter (where run_id = ?) from extralt.shoes_products",
            [newest],
        ).fetchall()
    assert products == of_newest == 30
    assert emulator.count_requests("POST", "/v0/extract/runs") == 1  # the newer run's create


def test_an_unknown_run_is_refused(emulator, instance, tmp_path, source):
    result = load_run(source, emulator, instance, tmp_path, "run_000000000000000000000000")
    assert not result.success
    [message] = failure_messages(result)
    assert "run_000000000000000000000000" in message and "does not exist" in message
    assert emulator.count_requests(*EXPORT) == 0
    assert tables(tmp_path) is None


def test_a_failed_run_is_refused_with_its_status(emulator, instance, tmp_path, source):
    run_id = emulator.state.create_run("rbt_shoes", budget=30, fail="Robot crashed")
    emulator.clock.advance(60)
    assert emulator.run(run_id).status == "failed"
    result = load_run(source, emulator, instance, tmp_path, run_id)
    assert not result.success
    [message] = failure_messages(result)
    assert f"{run_id} (run_id in the run config) is failed, not completed" in message
    assert emulator.count_requests(*EXPORT) == 0
    assert tables(tmp_path) is None


@pytest.mark.parametrize("emulator", [{"speed": 0}], indirect=True)
def test_a_live_run_is_refused_with_its_status(emulator, instance, tmp_path, source):
    run_id = emulator.state.create_run("rbt_shoes", budget=30)
    result = load_run(source, emulator, instance, tmp_path, run_id)
    assert not result.success
    [message] = failure_messages(result)
    assert "is starting, not completed" in message
    assert emulator.count_requests(*EXPORT) == 0
    assert spending_requests(emulator) == []
    assert emulator.run(run_id).status == "starting"


@pytest.mark.parametrize(
    "bad", ["", "   ", "rbt_shoes", "run_a/b", " run_abc", "0c5b3a8e-1f2d-4c6b-9e7a-3d2f1b0a9c8d"]
)
def test_bad_run_ids_fail_naming_the_field_without_a_request(
    emulator, instance, tmp_path, source, bad
):
    result = load_run(source, emulator, instance, tmp_path, bad)
    assert not result.success
    [message] = failure_messages(result)
    assert "run_id in the captures asset's run config" in message
    assert emulator.count_requests() == 0
