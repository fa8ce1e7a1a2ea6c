"""The chaos soak (soak/, RELIABILITY.md): six sources materialized many times through Dagster's
multiprocess executor, against the emulator, with a seeded mix of faults; then the invariants.

`make test` runs the CI-sized soak (40 source materializations, a few minutes on 2 cores);
`make soak` runs the large one (`-m slow`). `SOAK_SIZE=large` or `SOAK_SEED=n` change the
CI-sized run; the seed replays a soak's plan.
"""

import contextlib
import os

import pytest

from extralt_dagster import ExtraltClient, ExtraltConnectionError, ExtraltServerError
from extralt_dagster.emulator.state import ApiError
from soak.config import SOURCES
from soak.plan import ALL_KINDS, make_plan
from soak.run_soak import DEFAULT_SEED, SoakReport, run_soak

from .support import wait_until
from .targets import TARGETS

SEED = int(os.environ.get("SOAK_SEED", DEFAULT_SEED))


def soak(size: str, tmp_path, capsys: pytest.CaptureFixture[str], **options) -> SoakReport:
    """Run a soak with its progress and figures in the test log, pass or fail."""
    with capsys.disabled():
        print()
        report = run_soak(size, SEED, workdir=tmp_path / "soak", **options)
        print(report.text)
    return report


def check(report: SoakReport) -> None:
    f = report.figures
    assert report.ok, "\n".join(report.violations)
    credits = f["credits"]
    assert credits["runs_created"] == credits["materializations_needing_a_run"]
    refused_before_a_run = credits["refused_before_a_run"]
    assert credits["materializations_needing_a_run"] == (
        report.plan.materializations - refused_before_a_run
    )
    assert credits["second_runs"] == 0
    # The credit cap (1b): its refusals, planned, made no request, were not retried, and kept
    # the source's spend within the cap.
    cap = f["cap"]
    assert cap["refusals"] >= cap["expected_refusals"]  # >= 1 in the CI-sized plan (below)
    assert len(cap["refused_rounds"]) >= cap["expected_refusals"]
    assert credits["refused"] == cap["refusals"] == cap["refused_starts"] + cap["refused_restarts"]
    assert credits["refused_materializations"] >= cap["expected_refusals"]
    assert cap["requests_at_refusals"] == 0 and cap["refusals_retried"] == 0
    assert cap["credits_spent"] <= cap["highest_at_admission"] <= cap["credit_limit"]
    assert f["explained"]["by_cause"].get("credit_limit", 0) == cap["refusals"]
    assert f["terminal"]["terminal"] == f["terminal"]["runs"]
    # Extralt's scheduled runs: counted apart in (1), loaded by the sensor in (3).
    sc = f["scheduled"]
    assert sc["created_by_extralt"] == sc["fired"] == sc["completed"] + sc["failed"] >= 3
    assert sc["created_by_dagster"] == 0 and sc["failed"] >= 1
    assert sc["loaded_once"] == sc["completed"] and sc["loaded_not_completed"] == 0
    assert sc["observed_once"] == sc["failed"] and sc["events_about_dagster_runs"] == 0
    assert sc["loads_launched"] == sc["completed"] and sc["loads_repeated"] == 0
    assert 0 < sc["sensor_max_requests_per_tick"] <= sc["sensor_pages_per_tick"]
    assert sc["sensor_ticks_during_rounds"] > 0 and sc["loads_launched_during_rounds"] > 0
    lost = f["lost"]
    assert lost["loaded_runs"] == lost["completed_runs"]
    undone = credits["refused_materializations"]  # by the cap: no completed run
    assert lost["completed_runs"] == report.plan.materializations - undone + sc["completed"]
    assert lost["history_rows"] == lost["captures_exported"] > 0
    assert lost["missing_rows"] == lost["duplicate_rows"] == 0
    assert lost["variants"] == lost["variant_offers_exported"]
    assert f["half_done"]["files_left_in_export_dir"] == 0
    assert f["secret"]["key_occurrences"] == 0 and f["secret"]["bytes_scanned"] > 0
    assert "unexplained" not in f["explained"]["by_cause"]
    assert all(v["hits"] > 0 for v in f["faults"].values())
    # Export shapes: a type-less first run, then documented types; a nested field reported.
    assert f["shapes"]["typeless_sources_typed"] >= 1
    assert f["shapes"]["nested_fields_reported"] >= 1


@pytest.mark.timeout(1200)
def test_ci_soak_spends_each_credit_once_and_loses_no_row(tmp_path, capsys):
    report = soak(os.environ.get("SOAK_SIZE", "small"), tmp_path, capsys)
    check(report)
    assert set(report.figures["faults"]) == set(ALL_KINDS)  # every kind landed, at least once
    assert report.plan.expected_refusals >= 1 and report.figures["cap"]["refusals"] >= 1


#: The lake soak's rounds in `make test`: 4 of the small plan's 8 (20 materializations), which
#: still deal both lock faults, both shapes, every export fault and four run faults; a round
#: takes about twice as long into the lake (RELIABILITY.md).
LAKE_ROUNDS = {"small": 4}


@pytest.mark.skipif("ducklake" not in TARGETS, reason="EXTRALT_WAREHOUSE_TARGETS has no ducklake")
@pytest.mark.timeout(1200)
def test_ci_soak_into_a_ducklake_with_an_analyst_attached_throughout(tmp_path, capsys):
    """The same soak into a DuckLake with a SQLite catalog. An analyst process stays attached
    from before the first load to after the last and counts every `_products` every 0.5 s:
    no query fails, each sees one whole snapshot, and the five invariants hold. The lock
    faults become a reader holding a transaction (no load may wait for it) and another
    writer holding the catalog, which the first loading step waits for and is killed in.
    `make test` runs the first `LAKE_ROUNDS` rounds of the plan."""
    size = os.environ.get("SOAK_SIZE", "small")
    report = soak(size, tmp_path, capsys, lake=True, rounds=LAKE_ROUNDS.get(size))
    check(report)
    analyst = report.figures["analyst"]
    assert analyst["failed"] == analyst["counts_of_no_snapshot"] == 0
    # 0.5 s apart, each taking about 1 s on 2 busy cores (RELIABILITY.md): at least one every 5 s.
    assert analyst["queries"] >= report.seconds / 5
    # One snapshot per load: the analyst saw most of them.
    assert analyst["snapshots_seen"] >= report.plan.materializations // 2
    assert report.figures["faults"]["duckdb_lock"]["hits"] >= 1
    assert report.figures["faults"]["load_killed"]["hits"] >= 1


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_large_soak(tmp_path, capsys):
    check(soak("large", tmp_path, capsys))


# --- The plan and the emulator faults the soak relies on ------------------------------------------


def test_the_plan_is_replayable_and_covers_every_fault():
    small = make_plan("small", 11)
    again = make_plan("small", 11)
    assert [r.describe() for r in small.rounds] == [r.describe() for r in again.rounds]
    assert [r.describe() for r in make_plan("small", 12).rounds] != [
        r.describe() for r in small.rounds
    ]
    assert small.materializations >= 40 and len(SOURCES) >= 5
    assert all(n > 0 for n in small.fault_mix().values())
    large = make_plan("large", 11)
    assert large.materializations > small.materializations
    assert sum(large.fault_mix().values()) > sum(small.fault_mix().values())
    for rnd in small.rounds:
        categories = [f.category for f in rnd.faults]
        assert len(categories) == len(set(categories))  # one fault per category and round
        victims = [f.victim for f in rnd.faults if f.victim]
        assert all(v in rnd.sources for v in victims)


def test_counted_and_targeted_faults(make_emulator, tmp_path):
    """`latency_count`, `export_count` and `run_fault_robots`: the soak's faults hit only as
    often, and only where, its plan says."""
    emu = make_emulator(concurrency_limit=None)  # a stalled run must not queue the others
    with ExtraltClient(emu.api_key, emu.url, timeout=0.3, max_retries=0) as c:
        shoes = c.create_run("rbt_shoes", budget=5)
        with contextlib.suppress(ApiError):
            emu.finish_run(shoes)
        emu.set_faults(latency_seconds=0.6, latency_count=1, match="GET /v0/extract/runs/*")
        with pytest.raises(ExtraltConnectionError):
            c.get_run(shoes)
        assert c.get_run(shoes).status.value == "completed"  # the second one is on time
        assert emu.faults.latency_count == 0
    with ExtraltClient(emu.api_key, emu.url, timeout=10, max_retries=0) as c:
        emu.set_faults(export_cut_after_bytes=100, export_count=1)
        with pytest.raises(ExtraltConnectionError):
            c.download_export(shoes, tmp_path)
        assert c.download_export(shoes, tmp_path).exists()

        emu.set_faults(never_finish=True, run_fault_robots=["rbt_books"])
        books, outdoor = c.create_run("rbt_books", budget=40), c.create_run("rbt_outdoor")
        emu.clock.advance(3600)
        assert emu.run(books).status == "running" and emu.run(outdoor).status == "completed"


def test_a_slow_create_still_starts_its_run_after_the_client_gives_up(make_emulator):
    """The server has the request before it is slow: the look-up may miss the run, which is
    why the asset's next attempt looks again before it creates."""
    emu = make_emulator()
    emu.set_faults(latency_seconds=0.5, latency_count=1, match="POST /v0/extract/runs")
    with (
        ExtraltClient(emu.api_key, emu.url, timeout=0.2, max_retries=0) as c,
        pytest.raises((ExtraltConnectionError, ExtraltServerError), match="not re-sent"),
    ):
        c.create_run("rbt_shoes", budget=5)
    wait_until(lambda: len(emu.runs) == 1, timeout=10, what="the slow create to land")
    assert emu.count_requests("POST", "/v0/extract/runs") == 1
