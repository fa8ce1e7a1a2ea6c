"""Credit caps (`credit_limit`), against the emulator over real HTTP: a run that could take a
source past its cap in a calendar period is refused before any create or restart request, as a
`dagster.Failure` that is not retried; the next period lets runs through again (the period's
clock is set by the test, not read from the wall)."""

import os
import subprocess
import sys
import textwrap
from datetime import UTC, datetime

import dagster as dg
import pytest

from extralt_dagster import (
    SourcesFileError,
    build_extralt_assets,
    credits,
    load_extralt_definitions,
)
from extralt_dagster.api.errors import ExtraltValidationError
from extralt_dagster.naming import run_asset_key

from .support import FAST_POLL, failure_messages, materialization_metadata, resources

CREATE = ("POST", "/v0/extract/runs")
RESTART = ("POST", "/v0/extract/runs/*/restart")
#: Two runs of 10 captures (20 credits each) fit; a third does not.
TWO_RUNS = {"credits": 40, "per": "month"}


def run_asset(**kw):
    return build_extralt_assets("shoes", "rbt_shoes", budget=10, credit_limit=TWO_RUNS, **kw)[0]


def materialize(asset, emulator, instance, tmp_path):
    return dg.materialize(
        [asset], instance=instance, resources=resources(emulator, tmp_path), raise_on_error=False
    )


def step_failures(result):
    return [e for e in result.all_events if e.is_step_failure]


def test_a_cap_lets_two_runs_through_and_refuses_the_third_before_any_request(
    emulator, instance, tmp_path
):
    asset = run_asset(retry_policy=dg.RetryPolicy(max_retries=2))
    for n in (1, 2):
        result = materialize(asset, emulator, instance, tmp_path)
        assert result.success, failure_messages(result)
        md = materialization_metadata(result, run_asset_key("shoes"))
        assert md["extralt/credits_spent"] == 20 and md["extralt/captures"] == 10
        assert md["extralt/credits_in_period"] == 20 * n and md["extralt/credit_limit"] == 40
    requests = len(emulator.requests)
    third = materialize(asset, emulator, instance, tmp_path)
    assert not third.success
    assert len(emulator.requests) == requests  # no request at all, let alone a create
    assert emulator.count_requests(*CREATE) == 2
    [failure] = step_failures(third)
    assert not any(e.event_type_value == "STEP_RESTARTED" for e in third.all_events)
    message = failure.step_failure_data.error.message
    month = datetime.now(UTC).strftime("%Y-%m-01")
    for part in (
        "Source 'shoes': refusing to start an Extralt run of robot rbt_shoes: its credit_limit",
        f"40 credits per month (month from {month} (UTC))",
        "40 are already spent in this month over 2 run(s)",
        "could cost 20 more (budget 10 x 2 credits)",
        "Raise credit_limit.credits, lower the budget",
        "No Extralt request was made.",
    ):
        assert part in message, message
    # The README's example is this very text (its dates aside).
    import re
    from pathlib import Path

    readme = Path(__file__).resolve().parents[1].joinpath("README.md").read_text()
    section = readme.split("**A refusal**", 1)[1]
    (example,) = re.findall(r"```\n(.*?)```", section, re.S)[:1]

    def same(text):
        return re.sub(r"\d{4}-\d{2}-\d{2}", "DATE", " ".join(text.split()))

    assert same(example) == same(message[message.index("Source ") :])


def test_the_next_period_lets_runs_through_again(emulator, instance, tmp_path, monkeypatch):
    asset = run_asset()
    for _ in range(2):
        assert materialize(asset, emulator, instance, tmp_path).success
    assert not materialize(asset, emulator, instance, tmp_path).success
    now = datetime.now(UTC)
    next_month = datetime(now.year + now.month // 12, now.month % 12 + 1, 1, 12, tzinfo=UTC)
    monkeypatch.setattr(credits, "wall_clock", lambda: next_month.timestamp())
    result = materialize(asset, emulator, instance, tmp_path)
    assert result.success, failure_messages(result)
    assert emulator.count_requests(*CREATE) == 3
    md = materialization_metadata(result, run_asset_key("shoes"))
    assert md["extralt/credits_in_period"] == 20
    assert md["extralt/credit_period"] == f"month from {next_month:%Y-%m-01} (UTC)"


def test_periods_are_calendar_periods_in_the_time_zone():
    # 2026-12-02 23:30 UTC is already Thursday 3 December in Tokyo.
    at = datetime(2026, 12, 2, 23, 30, tzinfo=UTC).timestamp()
    day = credits.Period.containing("day", "Asia/Tokyo", at)
    assert (str(day.start), str(day.end)) == (
        "2026-12-03 00:00:00+09:00",
        "2026-12-04 00:00:00+09:00",
    )
    week = credits.Period.containing("week", "UTC", at)
    assert (f"{week.start:%a %F}", f"{week.end:%a %F}") == ("Mon 2026-11-30", "Mon 2026-12-07")
    month = credits.Period.containing("month", "America/New_York", at)
    assert (f"{month.start:%F}", f"{month.end:%F}") == ("2026-12-01", "2027-01-01")


def failing_then_restart_job():
    """For `dg.reconstructable`: the capped run asset alone, the emulator from the environment."""
    from extralt_dagster import ExtraltResource

    asset = run_asset()
    extralt = ExtraltResource(
        api_key=os.environ["EXTRALT_API_KEY"], base_url=os.environ["EXTRALT_BASE_URL"], **FAST_POLL
    )
    job = dg.define_asset_job("capped", selection=[asset.key], executor_def=dg.in_process_executor)
    defs = dg.Definitions(assets=[asset], jobs=[job], resources={"extralt": extralt})
    return defs.resolve_job_def("capped")


def test_a_restart_that_could_pass_the_cap_is_refused_before_the_restart(
    emulator, instance, tmp_path, monkeypatch
):
    monkeypatch.setenv("EXTRALT_API_KEY", emulator.api_key)
    monkeypatch.setenv("EXTRALT_BASE_URL", emulator.url)
    # One run spends 20 of the 40; then a run that fails (its spend unknown: counted at its
    # worst case, 20): restarting it could bring the month to 60.
    assert materialize(run_asset(), emulator, instance, tmp_path).success
    job = dg.reconstructable(failing_then_restart_job)
    emulator.set_faults(fail_runs=True)
    with dg.execute_job(job, instance=instance) as first:
        assert not first.success
    emulator.clear_faults()
    options = dg.ReexecutionOptions.from_failure(first.run_id, instance)
    stops = emulator.count_requests("POST", "/v0/extract/runs/*/stop")
    with dg.execute_job(job, instance=instance, reexecution_options=options) as second:
        assert not second.success
        message = "\n".join(
            e.dagster_event.step_failure_data.error.message
            for e in instance.all_logs(second.run_id)
            if e.dagster_event and e.dagster_event.is_step_failure
        )
    assert "refusing to restart an Extralt run" in message, message
    # It names the robot and the run it would have restarted (the soak's "explained" rule).
    [failed] = [v.id for v in emulator.runs.values() if v.true_status == "failed"]
    assert f"an Extralt run of robot rbt_shoes ({failed}): " in message, message
    assert "1 of them counted at their worst case" in message
    assert emulator.count_requests(*RESTART) == 0 and emulator.count_requests(*CREATE) == 2
    assert emulator.count_requests("POST", "/v0/extract/runs/*/stop") == stops


def test_a_cap_needs_a_budget_and_room_for_one_run():
    with pytest.raises(ExtraltValidationError, match=r"credit_limit .* needs a budget"):
        build_extralt_assets("shoes", "rbt_shoes", credit_limit=TWO_RUNS)
    with pytest.raises(ExtraltValidationError, match="below one run's worst case"):
        build_extralt_assets("shoes", "rbt_shoes", budget=30, credit_limit=TWO_RUNS)
    with pytest.raises(ExtraltValidationError, match=r"credit_limit.per must be 'day'"):
        build_extralt_assets(
            "shoes", "rbt_shoes", budget=5, credit_limit={"credits": 9, "per": "year"}
        )
    with pytest.raises(ExtraltValidationError, match="takes exactly 'credits' and 'per'"):
        build_extralt_assets("shoes", "rbt_shoes", budget=5, credit_limit={"credits": 9})


def test_a_cap_without_a_budget_fails_dagster_definitions_validate(tmp_path):
    sources = tmp_path / "sources.yaml"
    sources.write_text(
        textwrap.dedent(
            """
            defaults:
              credit_limit: {credits: 20000, per: month}
            sources:
              - {name: shoes, robot_id: rbt_shoes, budget: 500}
              - {name: books, robot_id: rbt_books}
            """
        )
    )
    with pytest.raises(SourcesFileError, match=r"source 'books' .*credit_limit .* needs a budget"):
        load_extralt_definitions(sources, duckdb_path=str(tmp_path / "w.duckdb"))
    env = {
        **os.environ,
        "EXTRALT_SOURCES": str(sources),
        "EXTRALT_DUCKDB_PATH": str(tmp_path / "w.duckdb"),
    }
    env.pop("EXTRALT_API_KEY", None)
    dagster = os.path.join(os.path.dirname(sys.executable), "dagster")
    done = subprocess.run(
        [dagster, "definitions", "validate", "-m", "extralt_dagster.definitions"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode != 0
    output = done.stdout + done.stderr
    assert "source 'books' (sources[1])" in output and "credit_limit" in output, output
    assert "needs a budget" in output


# --- location_credit_limit: one cap that a code location's sources share ------------------------

LOCATION_SOURCES = """
location_credit_limit: {credits: 50, per: month}
sources:
  - {name: shoes, robot_id: rbt_shoes, budget: 10}
  - {name: books, robot_id: rbt_books, budget: 5}
"""


def location_run_assets(tmp_path, text=LOCATION_SOURCES):
    path = tmp_path / "sources.yaml"
    path.write_text(textwrap.dedent(text))
    defs = load_extralt_definitions(path, duckdb_path=str(tmp_path / "w.duckdb"))
    return {a.key.path[1]: a for a in defs.assets if a.key.path[-1] == "run"}


def test_a_location_cap_counts_every_source_and_refuses_before_any_request(
    emulator, instance, tmp_path
):
    """50 credits a month for both: shoes (20) + books (10) + shoes (20) fit; then neither
    books' 10 nor shoes' 20 does, and neither sends a request."""
    assets = location_run_assets(tmp_path)
    for name, total in (("shoes", 20), ("books", 30), ("shoes", 50)):
        result = materialize(assets[name], emulator, instance, tmp_path)
        assert result.success, failure_messages(result)
        md = materialization_metadata(result, run_asset_key(name))
        assert md["extralt/location_credits_in_period"] == total
        assert md["extralt/location_credit_limit"] == 50
        assert "extralt/credit_limit" not in md  # no cap of its own
    requests = len(emulator.requests)
    for name, robot, could_cost in (("books", "rbt_books", 10), ("shoes", "rbt_shoes", 20)):
        refused = materialize(assets[name], emulator, instance, tmp_path)
        assert not refused.success
        [failure] = step_failures(refused)
        message = failure.step_failure_data.error.message
        for part in (
            f"Source '{name}': refusing to start an Extralt run of robot {robot}",
            "the location_credit_limit that its code location's 2 sources share is 50 credits",
            "50 are already spent by those sources in this month over 3 run(s)",
            f"could cost {could_cost} more",
            "Raise location_credit_limit.credits",
        ):
            assert part in message, message
        assert (
            failure.step_failure_data.user_failure_data.metadata[
                "extralt/location_credits_in_period"
            ].value
            == 50
        )
    assert len(emulator.requests) == requests
    assert emulator.count_requests(*CREATE) == 3


def test_a_source_cap_still_applies_under_a_location_cap(emulator, instance, tmp_path):
    assets = location_run_assets(
        tmp_path,
        LOCATION_SOURCES.replace(
            "budget: 10}", "budget: 10, credit_limit: {credits: 20, per: day}}"
        ),
    )
    assert materialize(assets["shoes"], emulator, instance, tmp_path).success
    refused = materialize(assets["shoes"], emulator, instance, tmp_path)  # 20 + 20 > 20 a day
    [failure] = step_failures(refused)
    assert "its credit_limit is 20 credits per day" in failure.step_failure_data.error.message
    assert materialize(assets["books"], emulator, instance, tmp_path).success  # 30 <= 50
    assert emulator.count_requests(*CREATE) == 2


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            LOCATION_SOURCES.replace("budget: 5", "cron: '0 3 * * *'"),
            r"location_credit_limit \(50 credits per month\) needs a budget on every source, "
            r"and source 'books' \(sources\[1\]\) has none",
        ),
        (
            LOCATION_SOURCES.replace("budget: 10", "budget: 30"),
            r"location_credit_limit \(50 credits per month\) is below one run of source "
            r"'shoes' \(sources\[0\]\): 30 captures x 2 = 60 credits",
        ),
        (
            LOCATION_SOURCES.replace("per: month", "per: year"),
            r"line 2: top level, field location_credit_limit.per: Input should be 'day', 'week' "
            r"or 'month', got 'year'",
        ),
    ],
)
def test_a_location_cap_is_checked_when_the_definitions_load(tmp_path, text, expected):
    with pytest.raises(SourcesFileError, match=expected):
        location_run_assets(tmp_path, text)
