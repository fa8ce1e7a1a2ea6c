"""The sensor of runs started outside Dagster (`build_extralt_sensor`), against the emulator over
real HTTP: the emulator's schedules start runs by themselves, and the sensor notices each, loads
every completed one once, observes the failed ones, leaves Dagster's own runs alone, spends no
credits and stays inside its request budget.

`tick()` does what the daemon does with a tick's result: it stores the asset events, drops a run
request whose run key this sensor already used, and executes the others (`make e2e` runs the
real daemon)."""

import json
from dataclasses import dataclass, field

import dagster as dg
import duckdb
import pytest
from dagster_duckdb import DuckDBResource

from extralt_dagster import ExtraltResource, build_extralt_assets, build_extralt_sensor
from extralt_dagster.naming import (
    OBSERVED_RUN_TAG,
    captures_asset_key,
    create_sent_tag,
    run_asset_key,
    run_id_tag,
    run_ids_tag,
)
from extralt_dagster.sensors import SweepCursor

from .support import failure_messages, fast_extralt, resources

HOUR = 3600.0
DAY = 24 * HOUR
LIST = ("GET", "/v0/extract/runs")
RUN_KEY_TAG = "dagster/run_key"


def evaluate(sensor, instance, emulator, cursor=None, extralt=None) -> dg.SensorResult:
    """One evaluation of the sensor with the emulator's resource (or `extralt`)."""
    with dg.build_sensor_context(
        instance=instance,
        cursor=cursor,
        resources={"extralt": extralt or fast_extralt(emulator)},
        sensor_name=sensor.name,
    ) as context:
        return sensor(context)


@dataclass
class Tick:
    result: dg.SensorResult
    cursor: str
    requests: int  # GET /v0/extract/runs requests this tick sent
    run_keys: list[str] = field(default_factory=list)  # requested (before the daemon's dedupe)
    launched: list[str] = field(default_factory=list)  # run keys the daemon would launch


class Daemon:
    """Ticks one sensor as the Dagster daemon would, in-process."""

    def __init__(self, sensor, assets, emulator, instance, tmp_path):
        self.sensor, self.assets = sensor, assets
        self.emulator, self.instance, self.tmp_path = emulator, instance, tmp_path
        self.cursor: str | None = None

    def tick(self) -> Tick:
        before = self.emulator.count_requests(*LIST)
        result = evaluate(self.sensor, self.instance, self.emulator, self.cursor)
        sent = self.emulator.count_requests(*LIST) - before
        for event in result.asset_events:
            self.instance.report_runless_asset_event(event)
        tick = Tick(result, result.cursor, sent, [r.run_key for r in result.run_requests])
        for request in result.run_requests:
            used = self.instance.get_runs(
                filters=dg.RunsFilter(
                    tags={RUN_KEY_TAG: request.run_key, "dagster/sensor_name": self.sensor.name}
                )
            )
            if used:
                continue
            run = dg.materialize(
                self.assets,
                instance=self.instance,
                resources=resources(self.emulator, self.tmp_path),
                selection=request.asset_selection,
                run_config=request.run_config,
                tags={
                    **request.tags,
                    RUN_KEY_TAG: request.run_key,
                    "dagster/sensor_name": self.sensor.name,
                },
                raise_on_error=False,
            )
            assert run.success, failure_messages(run)
            tick.launched.append(request.run_key)
        self.cursor = result.cursor
        return tick


def sources(tmp_path):
    exports = str(tmp_path / "exports")
    shoes = build_extralt_assets("shoes", "rbt_shoes", budget=5, export_dir=exports)
    books = build_extralt_assets("books", "rbt_books", budget=5, export_dir=exports)
    return shoes, books


def warehouse_rows(tmp_path):
    with duckdb.connect(str(tmp_path / "warehouse.duckdb"), read_only=True) as con:
        return {
            "runs": con.execute(
                "select run_id, source, origin from extralt.runs order by all"
            ).fetchall(),
            "history": con.execute(
                "select 'shoes', run_id, count(*) from extralt.shoes_captures group by all "
                "union all select 'books', run_id, count(*) from extralt.books_captures "
                "group by all order by all"
            ).fetchall(),
        }


def run_events(instance, name):
    key = run_asset_key(name)
    mats = instance.fetch_materializations(key, limit=100).records
    obs = instance.fetch_observations(key, limit=100).records
    return (
        [{k: v.value for k, v in r.asset_materialization.metadata.items()} for r in mats],
        [{k: v.value for k, v in r.asset_observation.metadata.items()} for r in obs],
    )


def test_scheduled_runs_of_two_robots_load_once_and_dagster_runs_are_left_alone(
    make_emulator, instance, tmp_path
):
    emu = make_emulator(runs_page_size=2, concurrency_limit=None)
    shoes, books = sources(tmp_path)
    assets = [*shoes, *books]
    # Extralt's schedules: two runs of shoes, two of books (the second one fails), a day apart.
    emu.set_schedule("rbt_shoes", every_seconds=DAY, budget=7, runs=2)
    emu.set_schedule("rbt_books", every_seconds=DAY, budget=6, runs=2, failing=[2])
    emu.clock.advance(DAY)
    # Between the schedules' runs, Dagster materializes one run of shoes (run and captures).
    made = dg.materialize(
        shoes, instance=instance, resources=resources(emu, tmp_path), raise_on_error=False
    )
    assert made.success, failure_messages(made)
    [dagster_run] = [v.id for v in emu.runs.values() if v.origin == "api"]
    emu.clock.advance(DAY)
    scheduled = {v.id: v for v in emu.runs.values() if v.origin == "schedule"}
    assert sorted(v.status for v in scheduled.values()) == ["completed"] * 3 + ["failed"]
    completed = sorted(k for k, v in scheduled.items() if v.status == "completed")
    [failed] = [k for k, v in scheduled.items() if v.status == "failed"]
    spending = emu.run_counts()
    daemon = Daemon(build_extralt_sensor([shoes, books]), assets, emu, instance, tmp_path)

    first = daemon.tick()
    # Five runs at two a page: three pages, all in the first tick's budget of five.
    assert first.requests == 3
    assert sorted(first.run_keys) == sorted(first.launched) == completed
    for request in first.result.run_requests:
        assert request.tags[OBSERVED_RUN_TAG] == request.run_key
    [observation] = [e for e in first.result.asset_events if isinstance(e, dg.AssetObservation)]
    assert observation.asset_key == run_asset_key("books")
    assert observation.metadata["extralt/run_id"].value == failed
    assert observation.metadata["extralt/status"].value == "failed"
    assert observation.metadata["extralt/reason"].value == scheduled[failed].error_message
    materialized = {
        e.metadata["extralt/run_id"].value
        for e in first.result.asset_events
        if isinstance(e, dg.AssetMaterialization)
    }
    assert materialized == set(completed)  # and not the Dagster-made run
    shoes_mats, _ = run_events(instance, "shoes")
    by_run = {m["extralt/run_id"]: m for m in shoes_mats}
    assert by_run[dagster_run]["extralt/origin"] == "dagster"
    shoes_scheduled = [r for r in completed if scheduled[r].robot_id == "rbt_shoes"]
    assert len(shoes_scheduled) == 2 and set(by_run) == {dagster_run, *shoes_scheduled}
    for run_id in shoes_scheduled:
        assert by_run[run_id]["extralt/origin"] == "extralt"
        assert by_run[run_id]["extralt/how"] == "observed"
        assert by_run[run_id]["extralt/extracted"] == 7
    loaded = warehouse_rows(tmp_path)
    budgets = {k: v.budget for k, v in scheduled.items()}
    assert loaded["history"] == sorted(
        [("shoes", dagster_run, 5)]
        + [("shoes" if budgets[r] == 7 else "books", r, budgets[r]) for r in completed]
    )
    origins = {run_id: origin for run_id, _, origin in loaded["runs"]}
    assert origins == {dagster_run: "dagster", **dict.fromkeys(completed, "extralt")}

    # A further tick requests nothing and reports nothing.
    second = daemon.tick()
    assert second.run_keys == [] and list(second.result.asset_events) == []
    assert second.result.skip_reason

    # A reset cursor: the runs are met again, but nothing is requested or reported twice.
    daemon.cursor = None
    for _ in range(2):
        again = daemon.tick()
        assert again.run_keys == [] and again.launched == []
        assert list(again.result.asset_events) == []
    assert warehouse_rows(tmp_path) == loaded
    assert len(run_events(instance, "books")[1]) == 1
    # The sensor never created, stopped or restarted a run.
    assert emu.run_counts() == spending
    assert emu.count_requests("POST") == 1  # the Dagster run's create, before the sensor
    assert spending["created"] == {"api": 1, "dashboard": 0, "schedule": 4}


def test_a_backlog_of_500_runs_is_worked_through_in_order_within_5_requests_a_tick(
    make_emulator, instance, tmp_path
):
    emu = make_emulator(runs_page_size=20, concurrency_limit=None, speed=0)
    emu.set_schedule("rbt_shoes", every_seconds=60, budget=1, runs=500, first_in=0)
    emu.clock.advance(500 * 60)
    listed = [v.id for v in sorted(emu.runs.values(), key=lambda v: -v.created_at)]
    assert len(listed) == 500 and all(v.status == "completed" for v in emu.runs.values())
    shoes, _ = sources(tmp_path)
    sensor = build_extralt_sensor([shoes], pages_per_tick=5)
    cursor, requested, requests = None, [], []
    for _ in range(5):  # 25 pages of 20: five ticks of five
        before = emu.count_requests(*LIST)
        result = evaluate(sensor, instance, emu, cursor)
        requests.append(emu.count_requests(*LIST) - before)
        requested.append([r.run_key for r in result.run_requests])
        cursor = result.cursor
    assert requests == [5] * 5
    # Each tick takes the next 100 runs of the list; within a tick, oldest first.
    for i, keys in enumerate(requested):
        assert sorted(keys) == sorted(listed[100 * i : 100 * (i + 1)])
        assert keys == list(reversed(listed[100 * i : 100 * (i + 1)]))
    state, problem = SweepCursor.parse(cursor)
    assert problem is None and state.page is None and state.sweep == 2
    assert len(state.handled) == 500
    # The list is worked through: the next sweep (one more tick) finds nothing new.
    assert evaluate(sensor, instance, emu, cursor).run_requests == []
    assert emu.count_requests("POST") == 0


@pytest.mark.parametrize("order", ["newest", "oldest"])
def test_runs_arriving_mid_sweep_are_met_whatever_the_list_order(
    make_emulator, instance, tmp_path, order
):
    emu = make_emulator(runs_page_size=2, concurrency_limit=None, speed=0, runs_order=order)
    emu.set_schedule("rbt_shoes", every_seconds=60, budget=1, first_in=0)
    emu.clock.advance(5 * 60)  # six runs; the last still running
    shoes, _ = sources(tmp_path)
    sensor = build_extralt_sensor([shoes], pages_per_tick=1)
    cursor, requested = None, []
    for _ in range(12):
        result = evaluate(sensor, instance, emu, cursor)
        requested += [r.run_key for r in result.run_requests]
        cursor = result.cursor
        emu.clock.advance(30)  # a new run every other tick, while the sweep goes on
    emu.clear_schedule("rbt_shoes")
    emu.clock.advance(60)
    for _ in range(12):  # let the sweeps finish
        result = evaluate(sensor, instance, emu, cursor)
        requested += [r.run_key for r in result.run_requests]
        cursor = result.cursor
    completed = sorted(v.id for v in emu.runs.values() if v.status == "completed")
    assert len(completed) >= 10
    assert sorted(requested) == completed  # each once


def test_a_run_an_in_flight_materialization_may_adopt_waits_until_it_ends(
    make_emulator, instance, tmp_path
):
    emu = make_emulator(concurrency_limit=None, speed=0)
    shoes, _ = sources(tmp_path)
    t0 = emu.clock.now()
    # A Dagster run of shoes sent a create and had no answer: its retry may adopt the run.
    in_flight = instance.add_run(
        dg.DagsterRun(
            job_name="__ASSET_JOB",
            run_id="8c2d6a0e-0000-4000-8000-000000000001",
            status=dg.DagsterRunStatus.STARTED,
            tags={create_sent_tag("shoes"): f"{t0:.3f}"},
        )
    )
    run_id = emu.create_run_externally("rbt_shoes", budget=3)
    emu.finish_run(run_id)
    sensor = build_extralt_sensor([shoes])

    def tick(cursor):
        return evaluate(sensor, instance, emu, cursor)

    waiting = tick(None)
    assert waiting.run_requests == [] and list(waiting.asset_events) == []
    assert "1 run(s) deferred" in waiting.skip_reason.skip_message
    instance.report_run_failed(in_flight)  # it ended without adopting the run
    while True:  # the next sweep meets the run again
        later = tick(waiting.cursor)
        if later.run_requests:
            break
        waiting = later
    assert [r.run_key for r in later.run_requests] == [run_id]


def test_a_stale_page_cursor_starts_the_sweep_again(make_emulator, instance, tmp_path):
    emu = make_emulator(runs_page_size=1, concurrency_limit=None, speed=0)
    for budget in (1, 2):
        emu.finish_run(emu.create_run_externally("rbt_shoes", budget=budget))
    shoes, _ = sources(tmp_path)
    sensor = build_extralt_sensor([shoes], pages_per_tick=3)
    stale = SweepCursor(page="not-a-cursor-the-api-knows").dump()
    result = evaluate(sensor, instance, emu, stale)
    assert len(result.run_requests) == 2
    assert emu.count_requests(*LIST) == 3  # the stale page, then both pages of the list


def test_an_unreadable_cursor_starts_afresh_and_a_wrong_key_fails_the_tick(
    make_emulator, instance, tmp_path
):
    emu = make_emulator(speed=0)
    emu.finish_run(emu.create_run_externally("rbt_shoes", budget=1))
    shoes, _ = sources(tmp_path)
    sensor = build_extralt_sensor([shoes])
    assert len(evaluate(sensor, instance, emu, "{not json").run_requests) == 1
    wrong = ExtraltResource(api_key="not-the-key", base_url=emu.url)
    with pytest.raises(Exception, match="401") as failed:
        evaluate(sensor, instance, emu, extralt=wrong)
    assert "not-the-key" not in str(failed.value)


def test_a_failing_page_ends_the_tick_in_its_place_without_retrying(
    make_emulator, instance, tmp_path
):
    emu = make_emulator(runs_page_size=1, concurrency_limit=None, speed=0)
    for budget in (1, 2, 3):
        emu.finish_run(emu.create_run_externally("rbt_shoes", budget=budget))
    shoes, _ = sources(tmp_path)
    sensor = build_extralt_sensor([shoes])
    clean = evaluate(sensor, instance, emu, None)  # a clean tick reads the three pages
    assert len(clean.run_requests) == 3
    instance_cursor = SweepCursor().dump()
    emu.set_faults(match="GET /v0/extract/runs", error_status=503, error_count=5)
    before = emu.count_requests(*LIST)
    result = evaluate(sensor, instance, emu, instance_cursor)
    assert emu.count_requests(*LIST) - before == 1  # sent once, not retried
    assert result.run_requests == [] and json.loads(result.cursor)["page"] is None


def test_two_sources_of_one_robot_are_refused(tmp_path):
    a = build_extralt_assets("shoes", "rbt_shoes")
    b = build_extralt_assets("shoes_sale", "rbt_shoes")
    with pytest.raises(dg.DagsterInvalidDefinitionError, match="both run robot rbt_shoes"):
        build_extralt_sensor([a, b])
    with pytest.raises(Exception, match="observe_pages_per_tick"):
        build_extralt_sensor([a], pages_per_tick=0)
    with pytest.raises(dg.DagsterInvalidDefinitionError, match="is not a source"):
        build_extralt_sensor(["shoes"])


def test_the_captures_asset_alone_after_an_observed_run_says_where_it_came_from(
    make_emulator, instance, tmp_path
):
    emu = make_emulator(speed=0)
    run_id = emu.create_run_externally("rbt_shoes", budget=4)
    emu.finish_run(run_id)
    shoes, _ = sources(tmp_path)
    daemon = Daemon(build_extralt_sensor([shoes]), list(shoes), emu, instance, tmp_path)
    assert daemon.tick().launched == [run_id]
    again = dg.materialize(
        shoes,
        instance=instance,
        resources=resources(emu, tmp_path),
        selection=[captures_asset_key("shoes")],
    )
    md = {
        k: v.value
        for e in again.all_events
        if e.is_step_materialization
        for k, v in e.materialization.metadata.items()
    }
    assert md["extralt/run_id"] == run_id and md["extralt/origin"] == "extralt"


def test_the_cursor_forgets_runs_the_list_no_longer_holds_and_reads_back_whole():
    cursor = SweepCursor(page="p2", sweep=3, handled={"run_kept": 3, "run_gone": 2})
    again, problem = SweepCursor.parse(cursor.dump())
    assert problem is None and again == cursor
    again.end_sweep()  # run_gone was not listed in sweep 3: the list no longer holds it
    assert again == SweepCursor(page=None, sweep=4, handled={"run_kept": 3})
    for broken in ('{"v": 2}', '{"v": 1, "page": 5, "sweep": 1, "handled": {}}', "[]"):
        fresh, problem = SweepCursor.parse(broken)
        assert fresh == SweepCursor() and "starting a new sweep" in problem


def test_runs_wait_while_a_dagster_run_that_has_its_own_run_may_still_load(
    make_emulator, instance, tmp_path
):
    """A Dagster run whose run step has its Extralt run, its captures step still to come, loads
    the run asset's newest materialization: the sensor reports none of that source meanwhile,
    or the Dagster run would load the sensor's run instead of its own."""
    emu = make_emulator(concurrency_limit=None, speed=0)
    shoes, _ = sources(tmp_path)
    t0 = emu.clock.now()
    own = emu.create_run_externally("rbt_shoes", budget=3)  # stands for the Dagster run's own
    in_flight = instance.add_run(
        dg.DagsterRun(
            job_name="__ASSET_JOB",
            run_id="8c2d6a0e-0000-4000-8000-000000000002",
            status=dg.DagsterRunStatus.STARTED,
            tags={
                create_sent_tag("shoes"): f"{t0:.3f}",
                run_id_tag("shoes"): own,
                run_ids_tag("shoes"): own,
            },
        )
    )
    scheduled = emu.create_run_externally("rbt_shoes", budget=3)
    emu.finish_run(scheduled)
    sensor = build_extralt_sensor([shoes])

    def tick(cursor):
        return evaluate(sensor, instance, emu, cursor)

    waiting = tick(None)
    assert waiting.run_requests == [] and list(waiting.asset_events) == []
    assert "1 run(s) deferred" in waiting.skip_reason.skip_message
    instance.report_run_failed(in_flight)  # it ended: its captures step read what it read
    while True:  # the next sweep meets the run again
        later = tick(waiting.cursor)
        if later.run_requests:
            break
        waiting = later
    assert [r.run_key for r in later.run_requests] == [scheduled]


def shoes_job():
    """For `dg.reconstructable`: both shoes assets, in process, the emulator and the warehouse
    from the environment (a re-execution rebuilds the job)."""
    import os

    from extralt_dagster import ExtraltResource as Resource

    from .support import FAST_POLL

    assets = build_extralt_assets("shoes", "rbt_shoes", budget=5)
    job = dg.define_asset_job("shoes", selection=["*"], executor_def=dg.in_process_executor)
    defs = dg.Definitions(
        assets=assets,
        jobs=[job],
        resources={
            "extralt": Resource(
                api_key=os.environ["EXTRALT_API_KEY"],
                base_url=os.environ["EXTRALT_BASE_URL"],
                **FAST_POLL,
            ),
            "duckdb": DuckDBResource(database=os.environ["EXTRALT_DUCKDB_PATH"]),
        },
    )
    return defs.resolve_job_def("shoes")


def test_a_reexecuted_captures_step_loads_its_own_run_not_one_the_sensor_reported_since(
    make_emulator, instance, tmp_path, monkeypatch
):
    emu = make_emulator(concurrency_limit=None)
    monkeypatch.setenv("EXTRALT_API_KEY", emu.api_key)
    monkeypatch.setenv("EXTRALT_BASE_URL", emu.url)
    monkeypatch.setenv("EXTRALT_DUCKDB_PATH", str(tmp_path / "warehouse.duckdb"))
    job = dg.reconstructable(shoes_job)
    emu.set_faults(export_corrupt=True, export_count=1)  # the captures step fails, once
    with dg.execute_job(job, instance=instance) as first:
        assert not first.success
    [own] = list(emu.runs)
    # Before the re-execution, the sensor reports a run Extralt started: now the newest.
    external = emu.create_run_externally("rbt_shoes", budget=3)
    emu.finish_run(external)
    shoes, _ = sources(tmp_path)
    result = evaluate(build_extralt_sensor([shoes]), instance, emu)
    for event in result.asset_events:
        instance.report_runless_asset_event(event)
    assert [r.run_key for r in result.run_requests] == [external]
    options = dg.ReexecutionOptions.from_failure(first.run_id, instance)
    with dg.execute_job(job, instance=instance, reexecution_options=options) as second:
        assert second.success
    with duckdb.connect(str(tmp_path / "warehouse.duckdb"), read_only=True) as con:
        loaded = con.execute("select run_id, origin from extralt.runs").fetchall()
    assert loaded == [(own, "dagster")]
