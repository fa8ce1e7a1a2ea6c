"""The `run` asset, through real Dagster materializations against the emulator over HTTP."""

import importlib
import os
import signal
import threading

import dagster as dg
import pytest

from extralt_dagster import (
    ExtraltClient,
    ExtraltResource,
    ExtraltValidationError,
    build_extralt_assets,
)
from extralt_dagster.naming import run_asset_key, run_id_tag, run_ids_tag

from .support import (
    FAST_POLL,
    event_log_text,
    failure_messages,
    materialization_metadata,
    resources,
    wait_until,
)

CREATE = ("POST", "/v0/extract/runs")
STOP = ("POST", "/v0/extract/runs/*/stop")
RESTART = ("POST", "/v0/extract/runs/*/restart")


def run_only(name="shoes", **kw):
    return build_extralt_assets(name, kw.pop("robot_id", "rbt_shoes"), **kw)[0]


def test_one_materialization_creates_one_run_and_completes(emulator, instance, tmp_path):
    asset = run_only(budget=20)
    result = dg.materialize([asset], instance=instance, resources=resources(emulator, tmp_path))
    assert result.success
    assert emulator.count_requests(*CREATE) == 1
    md = materialization_metadata(result, run_asset_key("shoes"))
    run = emulator.run(md["extralt/run_id"])
    assert run.status == "completed"
    assert md["extralt/status"] == "completed"
    assert md["extralt/extracted"] == run.extracted == 20
    assert md["extralt/credits_spent"] == 40
    assert md["extralt/how"] == "created"
    assert md["extralt/run_document"]["_id"] == run.id
    # the remote run id is recorded where a retry can find it
    tags = instance.get_run_by_id(result.run_id).tags
    assert tags[run_id_tag("shoes")] == run.id
    text = event_log_text(instance)
    assert f"Extralt run {run.id} completed: 20 captures, 40 credits" in text
    assert f"Started Extralt run {run.id} for robot rbt_shoes: {emulator.url}/runs/{run.id}" in text


def test_remote_failure_is_a_failure_naming_the_run(emulator, instance, tmp_path):
    emulator.set_faults(fail_runs=True)
    asset = run_only(budget=20, retry_policy=dg.RetryPolicy(max_retries=2))
    result = dg.materialize(
        [asset], instance=instance, resources=resources(emulator, tmp_path), raise_on_error=False
    )
    assert not result.success
    [message] = failure_messages(result)  # no pointless retries: one failure only
    [run_id] = list(emulator.runs)
    assert run_id in message and "failed" in message
    assert emulator.count_requests(*CREATE) == 1


def test_poll_timeout_stops_the_remote_run(emulator, instance, tmp_path):
    emulator.set_faults(never_finish=True)
    asset = run_only(budget=20)
    result = dg.materialize(
        [asset],
        instance=instance,
        resources=resources(emulator, tmp_path),
        run_config={"ops": {"extralt__shoes__run": {"config": {"poll_timeout_seconds": 0.05}}}},
        raise_on_error=False,
    )
    assert not result.success
    [run_id] = list(emulator.runs)
    assert emulator.run(run_id).status == "stopped"
    assert emulator.count_requests(*STOP) == 1
    [message] = failure_messages(result)
    assert run_id in message and "stopped" in message and "poll_timeout_seconds" in message


def test_with_stop_on_timeout_off_a_poll_timeout_leaves_the_run_alone(emulator, instance, tmp_path):
    emulator.set_faults(never_finish=True)  # the outcome never depends on how long the wait was
    result = dg.materialize(
        [run_only(budget=20)],
        instance=instance,
        resources=resources(emulator, tmp_path, stop_on_timeout=False),
        run_config={"ops": {"extralt__shoes__run": {"config": {"poll_timeout_seconds": 0.05}}}},
        raise_on_error=False,
    )
    assert not result.success
    [run_id] = list(emulator.runs)
    assert emulator.count_requests(*STOP) == 0
    assert emulator.run(run_id).status == "running"
    [message] = failure_messages(result)
    assert run_id in message and "it was NOT stopped" in message


def stop_once_running(emulator, *, clear_faults=False):
    """Stop the only run, as a person would on the dashboard, once it is running.

    `clear_faults` clears the faults first (a run's marks are set when it is created, so this
    one still never finishes): a run restarted after the stop would then complete, and a
    wrongly retried step ends at once instead of waiting on a stalled run."""

    def stop():
        run_id = wait_until(lambda: next(iter(emulator.runs), None), what="a run")
        wait_until(lambda: emulator.run(run_id).status == "running", what="running")
        if clear_faults:
            emulator.clear_faults()
        emulator.stop_run_externally(run_id)

    thread = threading.Thread(target=stop)
    thread.start()
    return thread


def finish_once_polled(emulator, polls):
    """Complete the only run once it has been read `polls` times: the emulator's clock is
    frozen, so until then it stays live whatever the steps do."""

    def finish():
        run_id = wait_until(lambda: next(iter(emulator.runs), None), what="a run")
        wait_until(
            lambda: emulator.count_requests("GET", f"/v0/extract/runs/{run_id}") >= polls,
            what=f"{polls} reads of the run",
        )
        emulator.finish_run(run_id)

    thread = threading.Thread(target=finish)
    thread.start()
    return thread


@pytest.mark.timeout(60)  # a wrongly stopped run is restarted and then never finishes
@pytest.mark.parametrize("emulator", [{"speed": 0}], indirect=True)
def test_step_dying_mid_poll_with_a_retry_left_leaves_the_run_to_the_retry(
    emulator, instance, tmp_path
):
    # The first attempt's poll fails past the client's bound (max_retries=1 -> 2 tries).
    emulator.set_faults(error_status=503, error_count=2, match="GET /v0/extract/runs/*")
    asset = run_only(budget=100, retry_policy=dg.RetryPolicy(max_retries=2))
    finisher = finish_once_polled(emulator, polls=4)  # 2 failed, the retry's resume, one poll
    result = dg.materialize(
        [asset], instance=instance, resources=resources(emulator, tmp_path, max_retries=1)
    )
    finisher.join()
    assert result.success
    assert emulator.count_requests(*CREATE) == 1
    md = materialization_metadata(result, run_asset_key("shoes"))
    assert md["extralt/how"] == "resumed"
    assert emulator.run(md["extralt/run_id"]).status == "completed"
    assert emulator.count_requests(*STOP) == 0
    assert emulator.count_requests(*RESTART) == 0
    text = event_log_text(instance)
    assert f"Leaving Extralt run {md['extralt/run_id']} running" in text
    assert (
        f"Resuming Extralt run {md['extralt/run_id']} (starting) recorded by an earlier "
        "attempt; no new run is created."
    ) in text


@pytest.mark.parametrize("emulator", [{"speed": 0}], indirect=True)
@pytest.mark.parametrize(
    "retry_policy", [None, dg.RetryPolicy(max_retries=1)], ids=["no_retries", "retries_used_up"]
)
def test_the_last_failed_attempt_stops_its_run(emulator, instance, tmp_path, retry_policy):
    """An unexpected failure (polls failing past the client's bound) with no retry left must
    not leave a run crawling that no attempt will come back for."""
    emulator.set_faults(error_status=503, error_count=10_000, match="GET /v0/extract/runs/*")
    result = dg.materialize(
        [run_only(budget=100, retry_policy=retry_policy)],
        instance=instance,
        resources=resources(emulator, tmp_path, max_retries=0),
        raise_on_error=False,
    )
    assert not result.success
    [run_id] = list(emulator.runs)
    assert emulator.count_requests(*STOP) == 1
    assert emulator.run(run_id).status == "stopped"
    assert emulator.count_requests(*CREATE) == 1
    text = event_log_text(instance)
    assert (
        f"Stopping Extralt run {run_id}: this step failed and no retry is left. Re-executing "
        "it restarts the run."
    ) in text
    assert text.count(f"Leaving Extralt run {run_id} running") == (1 if retry_policy else 0)


@pytest.mark.parametrize("emulator", [{"speed": 0}], indirect=True)
def test_with_stop_on_termination_off_a_failed_step_leaves_its_run(emulator, instance, tmp_path):
    emulator.set_faults(error_status=503, error_count=10_000, match="GET /v0/extract/runs/*")
    result = dg.materialize(
        [run_only(budget=100)],
        instance=instance,
        resources=resources(emulator, tmp_path, max_retries=0, stop_on_termination=False),
        raise_on_error=False,
    )
    assert not result.success
    [run_id] = list(emulator.runs)
    assert emulator.count_requests(*STOP) == 0
    assert emulator.run(run_id).status == "starting"  # frozen clock: still live


def test_reexecution_after_remote_stop_uses_restart(emulator, instance, tmp_path, monkeypatch):
    """A real "re-execute from failure" (dg.ReexecutionOptions), not a hand-made tag."""
    monkeypatch.setenv("EXTRALT_API_KEY", emulator.api_key)
    monkeypatch.setenv("EXTRALT_BASE_URL", emulator.url)
    monkeypatch.setenv("EXTRALT_DUCKDB_PATH", str(tmp_path / "w.duckdb"))
    from . import termination_defs

    importlib.reload(termination_defs)  # its resources read the environment at import
    job = dg.reconstructable(termination_defs.extract_shoes_job)
    emulator.set_faults(never_finish=True)

    def stop_when_running():
        run_id = wait_until(lambda: next(iter(emulator.runs), None), timeout=60, what="a run")
        wait_until(lambda: emulator.run(run_id).status == "running", what="running")
        emulator.stop_run_externally(run_id)

    stopper = threading.Thread(target=stop_when_running)
    stopper.start()
    with dg.execute_job(job, instance=instance) as first:
        stopper.join()
        assert not first.success
    [stopped_id] = list(emulator.runs)
    failure = [
        e
        for e in instance.all_logs(first.run_id)
        if e.dagster_event and e.dagster_event.is_step_failure
    ]
    assert "stopped outside Dagster" in failure[0].dagster_event.step_failure_data.error.message

    emulator.clear_faults()
    options = dg.ReexecutionOptions.from_failure(first.run_id, instance)
    with dg.execute_job(job, instance=instance, reexecution_options=options) as second:
        assert second.success
    assert emulator.count_requests(*CREATE) == 1
    assert emulator.count_requests(*RESTART) == 1
    [new_id] = [r for r in emulator.runs if r != stopped_id]
    assert emulator.run(new_id).status == "completed"
    assert emulator.run(new_id).restarted_from == stopped_id
    assert instance.get_run_by_id(second.run_id).tags[run_id_tag("shoes")] == new_id


def test_accept_stopped_materializes_a_partial_run(emulator, instance, tmp_path):
    asset = run_only(budget=20, accept_stopped=True)
    emulator.set_faults(never_finish=True)
    stopper = stop_once_running(emulator)
    result = dg.materialize([asset], instance=instance, resources=resources(emulator, tmp_path))
    stopper.join()
    md = materialization_metadata(result, run_asset_key("shoes"))
    assert md["extralt/status"] == "stopped"


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"name": "Bad-Name"}, "name"),
        ({"start_urls": ["ftp://shoes.example/"]}, "start_urls[0]"),
        ({"start_urls": ["/relative"]}, "start_urls[0]"),
        ({"budget": 0}, "budget"),
        ({"budget": -3}, "budget"),
        ({"robot_id": ""}, "robot_id"),
    ],
)
def test_bad_definitions_fail_before_any_request(emulator, kwargs, field):
    args = {"name": "shoes", "robot_id": "rbt_shoes", **kwargs}
    with pytest.raises(ExtraltValidationError) as info:
        build_extralt_assets(**args)
    assert field in str(info.value)
    assert emulator.count_requests() == 0


@pytest.mark.parametrize(
    ("config", "field"),
    [
        ({"budget": -1}, "budget"),
        ({"start_urls": ["not a url"]}, "start_urls[0]"),
        ({"robot_id": " "}, "robot_id"),
    ],
)
def test_bad_run_config_fails_before_any_request(emulator, instance, tmp_path, config, field):
    asset = run_only(budget=20)
    result = dg.materialize(
        [asset],
        instance=instance,
        resources=resources(emulator, tmp_path),
        run_config={"ops": {"extralt__shoes__run": {"config": config}}},
        raise_on_error=False,
    )
    assert not result.success
    [message] = failure_messages(result)
    assert field in message and "No Extralt request was made" in message
    assert emulator.count_requests() == 0


def test_run_config_overrides_the_budget(emulator, instance, tmp_path):
    asset = run_only(budget=20)
    result = dg.materialize(
        [asset],
        instance=instance,
        resources=resources(emulator, tmp_path),
        run_config={"ops": {"extralt__shoes__run": {"config": {"budget": 7}}}},
    )
    md = materialization_metadata(result, run_asset_key("shoes"))
    assert md["extralt/extracted"] == 7
    assert emulator.run(md["extralt/run_id"]).budget == 7


def test_api_key_reaches_no_event_log_entry(emulator, instance, tmp_path):
    emulator.set_faults(fail_runs=True)
    for asset in (run_only(budget=5), run_only("boots", budget=5)):
        dg.materialize(
            [asset],
            instance=instance,
            resources=resources(emulator, tmp_path),
            raise_on_error=False,
        )
    text = event_log_text(instance)
    assert emulator.api_key not in text
    # The scan really read the failures: each run's id and the remote error are in it.
    assert len(emulator.runs) == 2
    for run_id in emulator.runs:
        assert f"Extralt run {run_id} failed: {emulator.faults.fail_message}" in text


def test_asset_declares_kinds_pool_and_description():
    asset = build_extralt_assets(
        "shoes", "rbt_shoes", budget=50, owners=["team:data"], tags={"tier": "gold"}
    )[0]
    spec = next(iter(asset.specs))
    assert spec.kinds == {"extralt"}
    assert "rbt_shoes" in spec.description and "50" in spec.description
    assert spec.owners == ["team:data"]
    assert spec.tags["tier"] == "gold"
    assert asset.op.pool == "extralt"


@pytest.mark.parametrize(
    "start_urls", [None, ["https://shoes.example/c/sale"]], ids=["robot_urls", "own_urls"]
)
def test_retry_after_an_ambiguous_create_adopts_the_run_instead_of_paying_twice(
    emulator, instance, tmp_path, start_urls
):
    # The create lands but answers 502, and the client's own look-up fails too (2 tries):
    # the step fails. Its retry must find the run through the recorded create time, matching
    # it on robot, budget and start URLs.
    emulator.set_faults(
        error_status=502, error_count=3, error_after_handling=True, match="* /v0/extract/runs"
    )
    asset = run_only(budget=20, start_urls=start_urls, retry_policy=dg.RetryPolicy(max_retries=1))
    result = dg.materialize(
        [asset], instance=instance, resources=resources(emulator, tmp_path, max_retries=1)
    )
    assert result.success
    assert emulator.count_requests(*CREATE) == 1 and len(emulator.runs) == 1
    [run_id] = list(emulator.runs)
    assert emulator.run(run_id).start_urls == start_urls
    md = materialization_metadata(result, run_asset_key("shoes"))
    assert (md["extralt/how"], md["extralt/run_id"]) == ("adopted", run_id)
    tags = instance.get_run_by_id(result.run_id).tags
    assert (tags[run_id_tag("shoes")], tags[run_ids_tag("shoes")]) == (run_id, run_id)
    assert (
        "A previous attempt's create request timed out after reaching Extralt; adopting run "
        f"{run_id} instead of starting a second one."
    ) in event_log_text(instance)


def test_an_ambiguous_create_never_adopts_a_run_an_earlier_materialization_restarted_away(
    emulator, instance, tmp_path
):
    """Found by the soak: a step retry that restarts a failed run replaces the run id tag, so
    the failed run was forgotten, and a later ambiguous create adopted it as its own."""
    asset = run_only(budget=2, retry_policy=dg.RetryPolicy(max_retries=1))
    extralt = resources(emulator, tmp_path, max_retries=1)
    # Run A fails remotely while the first attempt's polls fail; the retry restarts A as B.
    emulator.set_faults(
        fail_runs=True, error_status=503, error_count=2, match="GET /v0/extract/runs/*"
    )
    first = dg.materialize([asset], instance=instance, resources=extralt, raise_on_error=False)
    assert not first.success
    assert emulator.count_requests(*CREATE) == 1 and emulator.count_requests(*RESTART) == 1
    run_a, run_b = list(emulator.runs)
    assert emulator.run(run_b).restarted_from == run_a
    tags = instance.get_run_by_id(first.run_id).tags
    assert tags[run_id_tag("shoes")] == run_b
    assert tags[run_ids_tag("shoes")] == f"{run_a},{run_b}"

    # A new materialization: its create starts run C but answers 502, and so do the look-ups.
    emulator.set_faults(
        error_status=502, error_count=3, error_after_handling=True, match="* /v0/extract/runs"
    )
    second = dg.materialize([asset], instance=instance, resources=extralt)
    assert second.success
    [run_c] = [r for r in emulator.runs if r not in (run_a, run_b)]
    md = materialization_metadata(second, run_asset_key("shoes"))
    assert (md["extralt/how"], md["extralt/run_id"]) == ("adopted", run_c)
    assert emulator.count_requests(*CREATE) == 2


def test_rerunning_a_materialized_run_extracts_afresh(emulator, instance, tmp_path):
    """A re-execution carries its parent's tags (the UI copies them): when the recorded run
    was already materialized, the re-run is deliberate and starts a new run."""
    asset = run_only(budget=5)
    first = dg.materialize([asset], instance=instance, resources=resources(emulator, tmp_path))
    old = materialization_metadata(first, run_asset_key("shoes"))["extralt/run_id"]
    again = dg.materialize(
        [asset],
        instance=instance,
        resources=resources(emulator, tmp_path),
        tags={run_id_tag("shoes"): old},
    )
    md = materialization_metadata(again, run_asset_key("shoes"))
    assert md["extralt/how"] == "created" and md["extralt/run_id"] != old
    assert emulator.count_requests(*CREATE) == 2


def test_a_completed_run_never_materialized_is_reused_not_paid_again(emulator, instance, tmp_path):
    """The run completed after its step died (no materialization): the retry loads it, even
    though the asset's latest materialization is of an earlier run."""
    earlier = dg.materialize(
        [run_only(budget=5)], instance=instance, resources=resources(emulator, tmp_path)
    )
    assert earlier.success
    with ExtraltClient(emulator.api_key, emulator.url) as client:
        done = client.create_run("rbt_shoes", budget=5)
    emulator.clock.advance(60)  # long enough for any run of 5 captures
    assert emulator.run(done).status == "completed"
    result = dg.materialize(
        [run_only(budget=5)],
        instance=instance,
        resources=resources(emulator, tmp_path),
        tags={run_id_tag("shoes"): done},
    )
    md = materialization_metadata(result, run_asset_key("shoes"))
    assert (md["extralt/how"], md["extralt/run_id"], md["extralt/extracted"]) == ("reused", done, 5)
    assert emulator.count_requests(*CREATE) == 2  # the earlier run's and the one made above
    assert f"Extralt run {done} already completed; materializing it." in event_log_text(instance)


def test_a_recorded_run_that_no_longer_exists_starts_a_new_one(emulator, instance, tmp_path):
    result = dg.materialize(
        [run_only(budget=5)],
        instance=instance,
        resources=resources(emulator, tmp_path),
        tags={run_id_tag("shoes"): "run_gone"},
    )
    md = materialization_metadata(result, run_asset_key("shoes"))
    assert md["extralt/how"] == "created" and md["extralt/run_id"] != "run_gone"
    assert emulator.count_requests(*CREATE) == 1
    text = event_log_text(instance)
    assert "Recorded Extralt run run_gone no longer exists; starting a new run." in text


def test_a_recorded_failed_run_is_restarted_with_this_attempts_budget(emulator, instance, tmp_path):
    emulator.set_faults(fail_runs=True)
    with ExtraltClient(emulator.api_key, emulator.url) as client:
        failed = client.create_run("rbt_shoes", budget=5)
    emulator.clock.advance(60)
    assert emulator.run(failed).status == "failed"
    emulator.clear_faults()
    result = dg.materialize(
        [run_only(budget=5)],
        instance=instance,
        resources=resources(emulator, tmp_path),
        tags={run_id_tag("shoes"): failed},
        run_config={"ops": {"extralt__shoes__run": {"config": {"budget": 7}}}},
    )
    md = materialization_metadata(result, run_asset_key("shoes"))
    assert md["extralt/how"] == "restarted" and md["extralt/extracted"] == 7
    new = emulator.run(md["extralt/run_id"])
    assert (new.restarted_from, new.budget) == (failed, 7)
    assert emulator.count_requests(*CREATE) == 1 and emulator.count_requests(*RESTART) == 1
    assert (
        f"Restarted Extralt run {failed} (failed) as {new.id} instead of creating a new run: "
        f"{emulator.url}/runs/{new.id}"
    ) in event_log_text(instance)


def test_a_source_without_a_budget_restarts_its_run_sending_no_budget(emulator, instance, tmp_path):
    """The API's restart body is an optional `{"budget": int}`: no budget is no key, not null."""
    emulator.set_faults(fail_runs=True)
    with ExtraltClient(emulator.api_key, emulator.url) as client:
        failed = client.create_run("rbt_shoes", budget=5)
    emulator.clock.advance(60)
    emulator.clear_faults()
    result = dg.materialize(
        [run_only()],
        instance=instance,
        resources=resources(emulator, tmp_path),
        tags={run_id_tag("shoes"): failed},
    )
    md = materialization_metadata(result, run_asset_key("shoes"))
    assert md["extralt/how"] == "restarted"
    restarts = [
        r
        for r in emulator.requests
        if (r.method, r.path) == (RESTART[0], f"/v0/extract/runs/{failed}/restart")
    ]
    assert [(r.status, r.body) for r in restarts] == [(202, b"")]
    assert emulator.run(md["extralt/run_id"]).budget == 5  # the failed run's, not overridden


def step_failures(result):
    return [e.step_failure_data for e in result.all_events if e.is_step_failure]


def step_retries(result):
    return [e for e in result.all_events if e.is_step_up_for_retry]


def test_a_run_stopped_outside_dagster_fails_once_naming_it_with_its_metadata(
    emulator, instance, tmp_path
):
    emulator.set_faults(never_finish=True)
    stopper = stop_once_running(emulator, clear_faults=True)
    result = dg.materialize(
        [run_only(budget=20, retry_policy=dg.RetryPolicy(max_retries=2))],
        instance=instance,
        resources=resources(emulator, tmp_path),
        raise_on_error=False,
    )
    stopper.join()
    # Not retried: a retry would restart the run someone stopped, and pay for it again.
    [failure] = step_failures(result)
    assert step_retries(result) == []
    [run_id] = list(emulator.runs)
    assert emulator.run(run_id).status == "stopped"
    assert emulator.count_requests(*CREATE) == 1 and emulator.count_requests(*RESTART) == 0
    assert emulator.count_requests(*STOP) == 0  # already stopped: nothing to stop
    extracted = emulator.run(run_id).extracted
    assert failure.error.message.strip().endswith(
        f"Extralt run {run_id} was stopped outside Dagster after {extracted} captures. See "
        f"{emulator.url}/runs/{run_id}. Set accept_stopped to load the partial run, or "
        "re-execute to restart it."
    )
    metadata = {k: v.value for k, v in failure.user_failure_data.metadata.items()}
    assert (metadata["extralt/run_id"], metadata["extralt/status"]) == (run_id, "stopped")


def test_a_failed_run_without_a_reason_says_so(emulator, instance, tmp_path):
    asset = run_only(budget=20, retry_policy=dg.RetryPolicy(max_retries=2))

    def fail_when_created():
        run_id = wait_until(lambda: next(iter(emulator.runs), None), what="a run")
        emulator.set_faults(
            wrong_body=f'{{"_id": "{run_id}", "status": "failed", "extracted": 4}}',
            match="GET /v0/extract/runs/*",
        )

    emulator.set_faults(never_finish=True)
    failer = threading.Thread(target=fail_when_created)
    failer.start()
    result = dg.materialize(
        [asset], instance=instance, resources=resources(emulator, tmp_path), raise_on_error=False
    )
    failer.join()
    [failure] = step_failures(result)
    [run_id] = list(emulator.runs)
    assert failure.error.message.strip().endswith(
        f"Extralt run {run_id} failed: no reason given. 4 captures were extracted. See "
        f"{emulator.url}/runs/{run_id}. Re-executing this step restarts it."
    )
    metadata = {k: v.value for k, v in failure.user_failure_data.metadata.items()}
    assert (metadata["extralt/run_id"], metadata["extralt/status"]) == (run_id, "failed")


def test_the_start_urls_reach_the_run(emulator, instance, tmp_path):
    urls = ["https://shoes.example/c/sale", "https://shoes.example/c/new"]
    result = dg.materialize(
        [run_only(budget=5, start_urls=urls, auto_enrich=True)],
        instance=instance,
        resources=resources(emulator, tmp_path),
    )
    md = materialization_metadata(result, run_asset_key("shoes"))
    run = emulator.run(md["extralt/run_id"])
    assert (run.start_urls, run.auto_enrich) == (urls, True)


def test_an_ambiguous_create_is_resolved_by_the_first_attempt_without_a_retry(
    emulator, instance, tmp_path
):
    """The create lands but answers 502; the client's own look-up, which excludes the run an
    earlier materialization of this source made, finds it: even a step with no retries
    succeeds, paying once."""
    earlier = dg.materialize(
        [run_only(budget=5)], instance=instance, resources=resources(emulator, tmp_path)
    )
    old = materialization_metadata(earlier, run_asset_key("shoes"))["extralt/run_id"]
    emulator.set_faults(
        error_status=502, error_count=1, error_after_handling=True, match="POST /v0/extract/runs"
    )
    result = dg.materialize(
        [run_only(budget=5)], instance=instance, resources=resources(emulator, tmp_path)
    )
    assert result.success
    assert emulator.count_requests(*CREATE) == 2 and len(emulator.runs) == 2
    assert materialization_metadata(result, run_asset_key("shoes"))["extralt/run_id"] != old


def test_a_create_that_fails_says_what_a_retry_will_do(make_emulator, instance, tmp_path):
    emulator = make_emulator(credits=0)
    result = dg.materialize(
        [run_only(budget=5)],
        instance=instance,
        resources=resources(emulator, tmp_path),
        raise_on_error=False,
    )
    [failure] = step_failures(result)
    message = failure.error.to_string()  # the API's error, as the cause, carries the note
    assert "returned 402" in message
    assert (
        "While starting an Extralt run of robot rbt_shoes for source 'shoes': no run is "
        "recorded, so a retry looks for one this request may have started before it creates "
        "another."
    ) in message


# --- Guards found by `make mutate` (TESTING.md, run_step) ------------------------------------


def failure_metadata(failure):
    return {k: v.value for k, v in failure.user_failure_data.metadata.items()}


def test_a_retry_reuses_a_run_completed_on_the_sources_first_materialization(
    make_emulator, instance, tmp_path
):
    """The first attempt's polls fail past the client's bound while its run completes; the
    source was never materialized, so nothing says the run was loaded already: the retry
    materializes it instead of paying for another."""
    # 20 captures take 3 s of emulated time, 30 us of real time: done long before the two
    # failed polls and the step's retry are over.
    emulator = make_emulator(speed=100_000)
    emulator.set_faults(error_status=503, error_count=2, match="GET /v0/extract/runs/*")
    asset = run_only(budget=20, retry_policy=dg.RetryPolicy(max_retries=1))
    result = dg.materialize(
        [asset], instance=instance, resources=resources(emulator, tmp_path, max_retries=1)
    )
    assert result.success
    assert len(step_retries(result)) == 1
    [run_id] = list(emulator.runs)
    assert emulator.count_requests(*CREATE) == 1
    assert emulator.count_requests(*RESTART) == 0 and emulator.count_requests(*STOP) == 0
    md = materialization_metadata(result, run_asset_key("shoes"))
    assert (md["extralt/how"], md["extralt/run_id"], md["extralt/extracted"]) == (
        "reused",
        run_id,
        20,
    )
    text = event_log_text(instance)
    assert f"Leaving Extralt run {run_id} running: the step's retry will resume it." in text
    assert f"Extralt run {run_id} already completed; materializing it." in text


@pytest.mark.parametrize("emulator", [{"speed": 0}], indirect=True)
def test_a_poll_timeout_is_not_retried_and_its_failure_names_the_run(emulator, instance, tmp_path):
    """A retry of a timed-out step would restart the run the timeout just stopped: paying
    again for a run that already took too long. The failure names the run in its metadata."""
    result = dg.materialize(
        [run_only(budget=20, retry_policy=dg.RetryPolicy(max_retries=2))],
        instance=instance,
        resources=resources(emulator, tmp_path),
        run_config={"ops": {"extralt__shoes__run": {"config": {"poll_timeout_seconds": 0.05}}}},
        raise_on_error=False,
    )
    assert not result.success
    [failure] = step_failures(result)
    assert step_retries(result) == []
    [run_id] = list(emulator.runs)
    assert (
        f"Extralt run {run_id} was still starting after 0s (poll_timeout_seconds); it was "
        "stopped so it spends no more credits. 0 captures were extracted. See "
        f"{emulator.url}/runs/{run_id}"
    ) in failure.error.message
    assert failure_metadata(failure) == {
        "extralt/run_id": run_id,
        "extralt/dashboard_url": f"{emulator.url}/runs/{run_id}",
    }
    assert emulator.run(run_id).status == "stopped"
    assert emulator.count_requests(*CREATE) == 1 and emulator.count_requests(*STOP) == 1
    assert emulator.count_requests(*RESTART) == 0


#: A stop that fails asks for a retry in 2 s: more than the step's 1.5 s stop bound, well
#: inside the client's 300 s retry budget. Within the bound, the stop is sent once.
FAILING_STOP = {"error_status": 503, "error_count": 100, "retry_after": 2, "match": "POST */stop"}
STOP_BOUND = {"max_retries": 1, "stop_timeout_seconds": 1.5}


def interrupt_once_polled(emulator, instance, polls):
    """Terminate the Dagster run once its step has read the run `polls` times: marked
    canceling, then interrupted, as the run launcher does; in process the interrupt is a
    SIGINT, which Dagster raises in the step as DagsterExecutionInterruptedError."""

    def interrupt():
        run_id = wait_until(lambda: next(iter(emulator.runs), None), what="a run")
        wait_until(
            lambda: emulator.count_requests("GET", f"/v0/extract/runs/{run_id}") >= polls,
            what=f"{polls} reads of the run",
        )
        [dagster_run] = instance.get_runs()
        instance.report_run_canceling(dagster_run)
        os.kill(os.getpid(), signal.SIGINT)

    thread = threading.Thread(target=interrupt)
    thread.start()
    return thread


@pytest.mark.parametrize("emulator", [{"speed": 0}], indirect=True)
def test_a_terminated_step_stops_its_run_within_stop_timeout_seconds(emulator, instance, tmp_path):
    emulator.set_faults(**FAILING_STOP)
    interrupter = interrupt_once_polled(emulator, instance, polls=2)
    result = dg.materialize(
        [run_only(budget=20)],
        instance=instance,
        resources=resources(emulator, tmp_path, **STOP_BOUND),
        raise_on_error=False,
    )
    interrupter.join()
    assert not result.success
    assert instance.get_run_by_id(result.run_id).status == dg.DagsterRunStatus.CANCELED
    [run_id] = list(emulator.runs)
    assert emulator.count_requests(*STOP) == 1
    assert emulator.run(run_id).status == "starting"  # the stop failed; the clock is frozen
    text = event_log_text(instance)
    assert f"Dagster run terminated; stopping Extralt run {run_id}" in text
    assert f"Could not stop Extralt run {run_id} (ExtraltServerError: " in text


@pytest.mark.parametrize("emulator", [{"speed": 0}], indirect=True)
def test_the_stop_after_a_last_failed_attempt_is_bounded_by_stop_timeout_seconds(
    emulator, instance, tmp_path
):
    """The recorded run (as a re-execution carries it) reports a status this client does not
    know: the step fails with no retry left, and stops the run within its bound."""
    with ExtraltClient(emulator.api_key, emulator.url) as client:
        run_id = client.create_run("rbt_shoes", budget=20)
    emulator.force_status(run_id, "paused")
    emulator.set_faults(**FAILING_STOP)
    result = dg.materialize(
        [run_only(budget=20)],
        instance=instance,
        resources=resources(emulator, tmp_path, **STOP_BOUND),
        tags={run_id_tag("shoes"): run_id},
        raise_on_error=False,
    )
    [failure] = step_failures(result)
    assert f"unknown run status 'paused' for run {run_id}" in failure.error.to_string()
    assert emulator.count_requests(*STOP) == 1
    assert emulator.count_requests(*CREATE) == 1  # the test's own: the step made none
    text = event_log_text(instance)
    assert (
        f"Stopping Extralt run {run_id}: this step failed and no retry is left. Re-executing "
        "it restarts the run."
    ) in text
    assert f"Could not stop Extralt run {run_id} (ExtraltServerError: " in text


def shoes_job():
    """For `dg.reconstructable`: a real re-execution (`dg.execute_job`) rebuilds its job. In
    process, so it takes no subprocess; the resource reads the emulator from the environment."""
    asset = run_only(budget=20)
    extralt = ExtraltResource(
        api_key=dg.EnvVar("EXTRALT_API_KEY"), base_url=os.environ["EXTRALT_BASE_URL"], **FAST_POLL
    )
    job = dg.define_asset_job(
        "extract_shoes", selection=[asset.key], executor_def=dg.in_process_executor
    )
    defs = dg.Definitions(assets=[asset], jobs=[job], resources={"extralt": extralt})
    return defs.resolve_job_def("extract_shoes")


def test_a_reexecution_finds_its_parents_run_without_copied_tags(
    emulator, instance, tmp_path, monkeypatch
):
    """`dg.execute_job` does not copy the parent's tags into a re-execution: the step walks
    the parent chain to the run it owns, and restarts it rather than paying for a new one."""
    monkeypatch.setenv("EXTRALT_API_KEY", emulator.api_key)
    monkeypatch.setenv("EXTRALT_BASE_URL", emulator.url)
    job = dg.reconstructable(shoes_job)
    emulator.set_faults(fail_runs=True)
    with dg.execute_job(job, instance=instance) as first:
        assert not first.success
    [failed_id] = list(emulator.runs)
    assert emulator.run(failed_id).status == "failed"

    emulator.clear_faults()
    options = dg.ReexecutionOptions.from_failure(first.run_id, instance)
    with dg.execute_job(job, instance=instance, reexecution_options=options) as second:
        assert second.success
        second_run = instance.get_run_by_id(second.run_id)
        assert second_run.parent_run_id == first.run_id
        md = materialization_metadata(second, run_asset_key("shoes"))
    [new_id] = [r for r in emulator.runs if r != failed_id]
    assert (md["extralt/how"], md["extralt/run_id"]) == ("restarted", new_id)
    assert emulator.run(new_id).restarted_from == failed_id
    assert emulator.count_requests(*CREATE) == 1 and emulator.count_requests(*RESTART) == 1
    assert second_run.tags[run_id_tag("shoes")] == new_id
