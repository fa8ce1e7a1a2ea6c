"""`build_extralt_schedule`: tick evaluation, run config against the real job, and a real tick
through `dagster-daemon` against the emulator."""

import os
import signal
import subprocess
import sys
import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import dagster as dg
import duckdb
import pytest

from extralt_dagster import ExtraltValidationError, build_extralt_assets
from extralt_dagster.assets import captures_asset_key, run_asset_key
from extralt_dagster.schedules import build_extralt_schedule

from .support import materialization_metadata, resources, wait_until

CREATE = ("POST", "/v0/extract/runs")
TICK = datetime(2026, 3, 1, 3, 0, tzinfo=UTC)


@pytest.fixture
def shoes():
    return build_extralt_assets("shoes", "rbt_shoes", budget=20)


def defs_for(assets, schedule, emulator, tmp_path):
    return dg.Definitions(
        assets=assets, schedules=[schedule], resources=resources(emulator, tmp_path)
    )


def tick(schedule, instance, when=TICK):
    context = dg.build_schedule_context(instance=instance, scheduled_execution_time=when)
    return schedule.evaluate_tick(context)


def test_a_tick_requests_both_assets_with_tags_and_the_budget(shoes, emulator, instance, tmp_path):
    schedule = build_extralt_schedule(shoes, "0 3 * * *", budget=7)
    assert schedule.name == "extralt_shoes_schedule"
    assert schedule.default_status == dg.DefaultScheduleStatus.STOPPED
    defs = defs_for(shoes, schedule, emulator, tmp_path)
    job = defs.resolve_job_def(schedule.job_name)
    assert job.asset_layer.selected_asset_keys == {
        run_asset_key("shoes"),
        captures_asset_key("shoes"),
    }

    [request] = tick(schedule, instance).run_requests
    assert request.tags["extralt/source"] == "shoes"
    assert request.tags["extralt/schedule"] == "extralt_shoes_schedule"
    resolved = dg.validate_run_config(job, request.run_config)
    assert resolved["ops"]["extralt__shoes__run"]["config"]["budget"] == 7

    # The request does what it says: the scheduled budget reaches the Extralt run.
    result = job.execute_in_process(
        run_config=request.run_config, instance=instance, tags=request.tags
    )
    assert result.success
    assert emulator.count_requests(*CREATE) == 1
    md = materialization_metadata(result, run_asset_key("shoes"))
    assert emulator.run(md["extralt/run_id"]).budget == 7
    assert md["extralt/extracted"] == 7


def test_without_a_budget_the_run_config_is_empty(shoes, emulator, instance, tmp_path):
    schedule = build_extralt_schedule("shoes", "@daily", name="nightly_shoes")
    assert schedule.name == "nightly_shoes"
    [request] = tick(schedule, instance).run_requests
    assert request.run_config == {}
    assert request.tags["extralt/schedule"] == "nightly_shoes"
    job = defs_for(shoes, schedule, emulator, tmp_path).resolve_job_def(schedule.job_name)
    dg.validate_run_config(job, request.run_config)


def test_the_run_key_is_stable_for_a_tick_and_differs_across_ticks(shoes, instance):
    schedule = build_extralt_schedule(shoes, "* * * * *")
    first = tick(schedule, instance).run_requests[0].run_key
    again = tick(schedule, instance).run_requests[0].run_key
    same_instant_elsewhere = (
        tick(schedule, instance, TICK.astimezone(ZoneInfo("Europe/Paris"))).run_requests[0].run_key
    )
    later = tick(schedule, instance, TICK + timedelta(minutes=1)).run_requests[0].run_key
    assert first == again == same_instant_elsewhere == "shoes:2026-03-01T03:00:00+00:00"
    assert later != first


def test_a_tick_is_skipped_while_the_sources_previous_run_is_in_flight(
    shoes, emulator, instance, tmp_path
):
    schedule = build_extralt_schedule(shoes, "0 3 * * *")
    job = defs_for(shoes, schedule, emulator, tmp_path).resolve_job_def(schedule.job_name)
    busy = instance.create_run_for_job(
        job, status=dg.DagsterRunStatus.STARTED, tags={"extralt/source": "shoes"}
    )
    result = tick(schedule, instance)
    assert not result.run_requests
    assert busy.run_id in result.skip_message and "still started" in result.skip_message

    instance.report_run_failed(busy)
    assert len(tick(schedule, instance).run_requests) == 1


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"cron_schedule": "0 3 * *"}, "cron_schedule"),
        ({"cron_schedule": "61 * * * *"}, "cron_schedule"),
        ({"cron_schedule": ""}, "cron_schedule"),
        ({"execution_timezone": "Mars/Olympus"}, "execution_timezone"),
        ({"execution_timezone": ""}, "execution_timezone"),
        ({"budget": 0}, "budget"),
        ({"budget": -5}, "budget"),
        ({"budget": "10"}, "budget"),
        ({"name": "nightly-shoes"}, "name"),
        ({"assets_or_name": "Shoes"}, "assets_or_name"),
        ({"assets_or_name": []}, "assets_or_name"),
    ],
)
def test_bad_arguments_fail_at_definition_time_naming_the_field(shoes, kwargs, field):
    args = {"assets_or_name": shoes, "cron_schedule": "0 3 * * *", **kwargs}
    with pytest.raises(ExtraltValidationError) as info:
        build_extralt_schedule(args.pop("assets_or_name"), args.pop("cron_schedule"), **args)
    assert str(info.value).startswith(field)


def test_only_the_run_asset_is_not_a_source(shoes):
    with pytest.raises(ExtraltValidationError, match="assets_or_name"):
        build_extralt_schedule(shoes[:1], "0 3 * * *")


# --- A real tick through the scheduler daemon -------------------------------------------------

DAEMON_DEFS = textwrap.dedent(
    """
    import os

    import dagster as dg
    from dagster_duckdb import DuckDBResource

    from extralt_dagster import ExtraltResource, build_extralt_assets
    from extralt_dagster.schedules import build_extralt_schedule

    assets = build_extralt_assets("shoes", "rbt_shoes", budget=20)
    defs = dg.Definitions(
        assets=assets,
        schedules=[
            build_extralt_schedule(
                assets, "* * * * *", default_status=dg.DefaultScheduleStatus.RUNNING
            )
        ],
        resources={
            "extralt": ExtraltResource(
                api_key=dg.EnvVar("EXTRALT_API_KEY"),
                base_url=os.environ["EXTRALT_BASE_URL"],
                poll_interval_seconds=0.2,
                initial_poll_interval_seconds=0.05,
            ),
            "duckdb": DuckDBResource(database=os.environ["EXTRALT_DUCKDB_PATH"]),
        },
        executor=dg.in_process_executor,
    )
    """
)


def test_a_scheduler_tick_launches_one_run_that_materializes(emulator, tmp_path):
    """Waits for the next minute boundary: about 30 s on average, 75 s at worst."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    # No run queue daemon needed: the scheduler launches the run directly.
    (home / "dagster.yaml").write_text(
        "telemetry:\n  enabled: false\n"
        "run_coordinator:\n  module: dagster.core.run_coordinator\n"
        "  class: DefaultRunCoordinator\n"
    )
    code = tmp_path / "scheduled_defs.py"
    code.write_text(DAEMON_DEFS)
    warehouse = tmp_path / "w.duckdb"
    log = tmp_path / "daemon.log"
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "EXTRALT_API_KEY": emulator.api_key,
        "EXTRALT_BASE_URL": emulator.url,
        "EXTRALT_DUCKDB_PATH": str(warehouse),
    }
    # Create the instance's storage here first: two processes creating one sqlite store race.
    with dg.DagsterInstance.from_config(str(home)) as instance:
        instance.get_runs()
        with log.open("wb") as out:
            daemon = subprocess.Popen(
                [str(Path(sys.executable).parent / "dagster-daemon"), "run", "-f", str(code)],
                cwd=tmp_path,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: code server and run worker too
            )
        try:

            def finished_run():
                if daemon.poll() is not None:
                    raise AssertionError(f"dagster-daemon exited:\n{log.read_text()[-3000:]}")
                runs = instance.get_runs(
                    filters=dg.RunsFilter(tags={"dagster/schedule_name": "extralt_shoes_schedule"})
                )
                return next((r for r in runs if r.is_finished), None)

            run = wait_until(finished_run, timeout=120, what="a scheduled run to finish")
            assert run.status == dg.DagsterRunStatus.SUCCESS, log.read_text()[-3000:]
            assert run.tags["extralt/source"] == "shoes"
            assert run.tags["extralt/schedule"] == "extralt_shoes_schedule"
            assert run.tags["dagster/run_key"].startswith("shoes:")
            assert len(instance.get_runs()) == 1
        finally:
            _stop(daemon)
    assert emulator.count_requests(*CREATE) == 1
    with duckdb.connect(str(warehouse), read_only=True) as con:
        [(rows,)] = con.execute("select count(*) from extralt.shoes_captures").fetchall()
    assert rows == 20


def _stop(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
