"""`build_extralt_schedule`: its ticks, evaluated at chosen instants against a real instance, and
the run config they carry run against the real job.

Every tick is evaluated with `dg.build_schedule_context(scheduled_execution_time=...)`: the
clock is the test's. The scheduler daemon itself, on a real minute boundary, is `make e2e`'s
(`test_the_daemon_runs_a_schedule_from_the_sources_file`), which waits for it by nature.
"""

import os
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import dagster as dg
import pytest
from dagster_graphql import DagsterGraphQLClient

from extralt_dagster import ExtraltValidationError, build_extralt_assets
from extralt_dagster.naming import captures_asset_key, run_asset_key
from extralt_dagster.schedules import build_extralt_schedule

from .processes import end_group, free_port, http_ok, start_group
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


# QUEUED, the common case under `dagster dev`'s queued coordinator, needs a run that a real
# coordinator queued: `test_a_run_queued_by_the_run_coordinator_blocks_the_sources_tick`.
IN_FLIGHT = [
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
    dg.DagsterRunStatus.CANCELING,
]
FINISHED = [
    dg.DagsterRunStatus.SUCCESS,
    dg.DagsterRunStatus.FAILURE,
    dg.DagsterRunStatus.CANCELED,
]


def add_run(instance, job, status, tags=None):
    """A run of the source's job in `status`, as the run storage records one."""
    run = dg.DagsterRun(job_name=job.name, run_id=str(uuid.uuid4()), status=status, tags=tags or {})
    return instance.add_run(run)


@pytest.fixture
def shoes_job(shoes, emulator, tmp_path):
    schedule = build_extralt_schedule(shoes, "0 3 * * *")
    return schedule, defs_for(shoes, schedule, emulator, tmp_path).resolve_job_def(
        schedule.job_name
    )


@pytest.mark.parametrize("status", IN_FLIGHT, ids=lambda s: s.value)
def test_a_tick_is_skipped_while_a_run_of_the_source_is_in_flight(shoes_job, instance, status):
    schedule, job = shoes_job
    busy = add_run(instance, job, status, {"extralt/source": "shoes"})
    result = tick(schedule, instance)
    assert result.run_requests == []
    assert result.skip_message == (
        f"Skipped the 2026-03-01T03:00:00+00:00 tick: Dagster run {busy.run_id} of Extralt "
        f"source 'shoes' is still {status.value.lower()}; starting another would pay for a "
        "second crawl."
    )


@pytest.mark.parametrize("status", FINISHED, ids=lambda s: s.value)
def test_a_finished_run_of_the_source_does_not_block_a_tick(shoes_job, instance, status):
    schedule, job = shoes_job
    add_run(instance, job, status, {"extralt/source": "shoes"})
    [request] = tick(schedule, instance).run_requests
    assert request.run_key == "shoes:2026-03-01T03:00:00+00:00"


def test_another_sources_in_flight_run_does_not_block_a_tick(shoes_job, instance):
    schedule, job = shoes_job
    for status in IN_FLIGHT:
        add_run(instance, job, status, {"extralt/source": "boots"})
    add_run(instance, job, dg.DagsterRunStatus.STARTED)  # no source tag at all
    [request] = tick(schedule, instance).run_requests
    assert request.tags["extralt/source"] == "shoes"


def test_the_run_a_tick_requests_blocks_the_next_tick_until_it_ends(shoes_job, instance):
    """The tags the request carries are the ones the in-flight filter looks for."""
    schedule, job = shoes_job
    [request] = tick(schedule, instance).run_requests
    launched = add_run(instance, job, dg.DagsterRunStatus.STARTING, request.tags)
    later = TICK + timedelta(days=1)
    skipped = tick(schedule, instance, later)
    assert skipped.run_requests == [] and launched.run_id in skipped.skip_message
    instance.report_run_failed(launched)
    [next_request] = tick(schedule, instance, later).run_requests
    assert next_request.run_key == "shoes:2026-03-02T03:00:00+00:00"


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
        ({"default_status": "RUNNING"}, "default_status must be a dagster.DefaultScheduleStatus"),
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


# --- A run really queued by Dagster's QueuedRunCoordinator --------------------------------------

QUEUED_DEFS = """
import dagster as dg
from dagster_duckdb import DuckDBResource

from extralt_dagster import ExtraltResource, build_extralt_assets
from extralt_dagster.schedules import build_extralt_job

defs = dg.Definitions(
    assets=build_extralt_assets("shoes", "rbt_shoes", budget=20),
    jobs=[build_extralt_job("shoes")],
    resources={
        "extralt": ExtraltResource(api_key="unused", base_url="http://127.0.0.1:9"),
        "duckdb": DuckDBResource(database="unused.duckdb"),
    },
)
"""


def test_a_run_queued_by_the_run_coordinator_blocks_the_sources_tick(emulator, tmp_path):
    """`dagster dev` queues runs: a webserver with the QueuedRunCoordinator and no daemon
    queues the source's job for good, and a tick evaluated on that instance is skipped."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text(
        "telemetry:\n  enabled: false\n"
        "run_coordinator:\n  module: dagster.core.run_coordinator\n"
        "  class: QueuedRunCoordinator\n"
    )
    code = tmp_path / "queued_defs.py"
    code.write_text(QUEUED_DEFS)
    port = free_port()
    webserver = start_group(
        [
            str(Path(sys.executable).parent / "dagster-webserver"),
            *("-f", str(code), "-h", "127.0.0.1", "-p", str(port)),
        ],
        env={**os.environ, "DAGSTER_HOME": str(home)},
        cwd=tmp_path,
    )
    try:
        wait_until(
            lambda: http_ok(f"http://127.0.0.1:{port}/server_info", webserver, "webserver"),
            timeout=120,
            what="dagster-webserver",
            interval=0.2,
        )
        graphql = DagsterGraphQLClient("127.0.0.1", port_number=port)
        queued = graphql.submit_job_execution("extralt_shoes_job")  # the job's own tags only
        assert graphql.get_run_status(queued) == dg.DagsterRunStatus.QUEUED
        schedule = build_extralt_schedule("shoes", "0 3 * * *")
        with dg.DagsterInstance.from_config(str(home)) as instance:
            skipped = tick(schedule, instance)
            assert skipped.run_requests == []
            assert f"Dagster run {queued} of Extralt source 'shoes' is still queued" in (
                skipped.skip_message
            )
            assert tick(build_extralt_schedule("boots", "0 3 * * *"), instance).run_requests
            graphql.terminate_run(queued)
            wait_until(
                lambda: graphql.get_run_status(queued) == dg.DagsterRunStatus.CANCELED,
                what="the queued run to be canceled",
            )
            assert len(tick(schedule, instance).run_requests) == 1
    finally:
        end_group(webserver)
    assert emulator.count_requests() == 0  # nothing ran: no credit was spent


def test_the_schedule_carries_its_zone_status_tags_and_description(shoes):
    schedule = build_extralt_schedule(
        shoes,
        "0 3 * * *",
        execution_timezone="Europe/Paris",
        budget=1500,
        default_status=dg.DefaultScheduleStatus.RUNNING,
    )
    assert schedule.execution_timezone == "Europe/Paris"
    assert schedule.default_status == dg.DefaultScheduleStatus.RUNNING
    assert schedule.tags == {
        "extralt/source": "shoes",
        "extralt/schedule": "extralt_shoes_schedule",
    }
    assert schedule.description == (
        "Extralt source `shoes` on `0 3 * * *` (Europe/Paris) with budget 1,500. One run per "
        "tick; a tick is skipped while the previous run is in flight."
    )
    assert build_extralt_schedule("shoes", "@daily").description == (
        "Extralt source `shoes` on `@daily` (UTC). One run per tick; a tick is skipped while "
        "the previous run is in flight."
    )


def test_the_run_key_is_in_utc_whatever_the_machines_zone(shoes, instance, monkeypatch):
    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    try:
        [request] = tick(build_extralt_schedule(shoes, "0 3 * * *"), instance).run_requests
    finally:
        monkeypatch.undo()
        time.tzset()
    assert request.run_key == "shoes:2026-03-01T03:00:00+00:00"


def test_the_source_is_found_among_other_assets(shoes):
    """Only an extralt/<name>/run key with its captures sibling names the source."""

    @dg.asset(key=["foo", "run"])
    def two_parts():
        return 1

    @dg.asset(key=["foo", "bar", "baz"])
    def three_parts():
        return 1

    boots_captures_only = build_extralt_assets("boots", "rbt_boots")[1:]
    assets = [two_parts, three_parts, *boots_captures_only, *shoes]
    assert build_extralt_schedule(assets, "0 3 * * *").name == "extralt_shoes_schedule"


@pytest.mark.parametrize(
    ("assets_or_name", "shown"),
    [([5], "[5]"), ("run_only", "['extralt/shoes/run']")],
)
def test_a_list_without_a_source_is_refused_showing_what_it_held(shoes, assets_or_name, shown):
    value = shoes[:1] if assets_or_name == "run_only" else assets_or_name
    with pytest.raises(ExtraltValidationError) as info:
        build_extralt_schedule(value, "0 3 * * *")
    assert str(info.value) == (
        "assets_or_name must be the list build_extralt_assets returned (with both the "
        "extralt/<name>/run and extralt/<name>/captures assets) or a source name, got "
        f"{shown}."
    )
