"""The emulator's schedules (runs it creates by itself as its clock advances), its paginated run
list, and its counts of who created, stopped and restarted runs. The clock is frozen: only
`clock.advance()` moves time, so every schedule fires exactly, and no test sleeps."""

import argparse

import httpx
import pytest

from extralt_dagster.api.client import ExtraltClient
from extralt_dagster.emulator import Emulator
from extralt_dagster.emulator.__main__ import add_arguments, build_emulator, parse_schedule

FROZEN = {"speed": 0}
HOUR = 3600.0


def api(emu: Emulator) -> httpx.Client:
    return httpx.Client(base_url=emu.url, headers={"Authorization": f"Bearer {emu.api_key}"})


def scheduled(emu: Emulator) -> list:
    return [v for v in emu.runs.values() if v.origin == "schedule"]


def test_a_schedule_fires_one_run_per_interval_at_its_own_times(make_emulator):
    emu = make_emulator(**FROZEN)
    t0 = emu.clock.now()
    emu.set_schedule("rbt_shoes", every_seconds=HOUR, budget=5)
    emu.clock.advance(HOUR - 1)
    assert emu.runs == {}
    emu.clock.advance(1)
    assert len(emu.runs) == 1
    emu.clock.advance(3 * HOUR)  # one jump: the runs are still created at their own times
    emu.clock.advance(60)  # the last one, created just now, finishes
    runs = scheduled(emu)
    assert len(runs) == len(emu.runs) == 4
    assert [round(r.created_at - t0) for r in runs] == [3600, 7200, 10800, 14400]
    assert all(r.status == "completed" and r.extracted == 5 for r in runs)
    assert all(r.robot_id == "rbt_shoes" and r.budget == 5 for r in runs)
    assert emu.schedules["rbt_shoes"]["fired"] == 4
    assert emu.run_counts()["created"] == {"api": 0, "dashboard": 0, "schedule": 4}


def test_a_scheduled_run_can_be_made_to_fail(make_emulator):
    emu = make_emulator(**FROZEN)
    emu.set_schedule("rbt_shoes", every_seconds=HOUR, budget=10, failing=[2], fail_message="Boom")
    emu.clock.advance(3 * HOUR + 60)
    runs = scheduled(emu)
    assert [r.status for r in runs] == ["completed", "failed", "completed"]
    assert runs[1].error_message == "Boom" and runs[1].extracted < 10
    with api(emu) as c:
        assert c.get(f"/v0/extract/runs/{runs[1].id}").json()["errorMessage"] == "Boom"


def test_runs_limit_clear_and_two_robots(make_emulator):
    emu = make_emulator(concurrency_limit=None, **FROZEN)
    emu.set_schedule("rbt_shoes", every_seconds=HOUR, budget=5, runs=2)
    emu.set_schedule("rbt_books", every_seconds=HOUR / 2, budget=5, first_in=0)
    assert [v.robot_id for v in emu.runs.values()] == ["rbt_books"]  # first_in=0: at once
    emu.clock.advance(3 * HOUR)
    by_robot = {r: sum(v.robot_id == r for v in emu.runs.values()) for r in emu.robots}
    assert by_robot == {"rbt_shoes": 2, "rbt_outdoor": 0, "rbt_books": 7}
    assert emu.clear_schedule("rbt_books") and not emu.clear_schedule("rbt_books")
    emu.clock.advance(3 * HOUR)
    assert len(emu.runs) == 9


def test_a_schedule_the_balance_cannot_pay_for_skips_its_runs(make_emulator):
    emu = make_emulator(credits=10, **FROZEN)
    emu.set_schedule("rbt_shoes", every_seconds=HOUR, budget=5)
    emu.clock.advance(3 * HOUR)
    assert len(emu.runs) == 1  # 10 credits: the first run's 5 captures spend them all
    assert emu.schedules["rbt_shoes"]["skipped"] == 2


def test_scheduled_runs_read_like_any_other_run_in_the_api(make_emulator):
    emu = make_emulator(**FROZEN)
    emu.set_schedule("rbt_shoes", every_seconds=HOUR, budget=5)
    emu.clock.advance(HOUR)
    [by_schedule] = emu.runs
    with api(emu) as c:
        made = c.post("/v0/extract/runs", json={"robot_id": "rbt_shoes", "budget": 5})
        by_api = made.json()["id"]
        emu.clock.advance(60)
        docs = {i: c.get(f"/v0/extract/runs/{i}").json() for i in (by_schedule, by_api)}
        listed = c.get("/v0/extract/runs").json()["rows"]
    assert set(docs[by_schedule]) == set(docs[by_api])
    assert {k for d in listed for k in d} == set(docs[by_api])
    assert "origin" not in docs[by_schedule] and "schedule" not in str(docs[by_schedule])
    assert docs[by_schedule]["status"] == docs[by_api]["status"] == "completed"
    assert emu.run(by_schedule).origin == "schedule" and emu.run(by_api).origin == "api"


def test_counts_tell_api_dashboard_and_schedule_apart(make_emulator):
    emu = make_emulator(concurrency_limit=None, **FROZEN)
    emu.set_schedule("rbt_shoes", every_seconds=HOUR)
    emu.clock.advance(HOUR)
    [from_schedule] = emu.runs
    with api(emu) as c:
        by_api = c.post("/v0/extract/runs", json={"robot_id": "rbt_books"}).json()["id"]
        assert c.post(f"/v0/extract/runs/{from_schedule}/stop").status_code == 204
        assert c.post(f"/v0/extract/runs/{from_schedule}/restart").status_code == 202
    emu.stop_run_externally(by_api)
    by_person = emu.create_run_externally("rbt_outdoor")
    assert emu.run(by_person).origin == "dashboard"
    assert emu.run_counts() == {
        "created": {"api": 1, "dashboard": 1, "schedule": 1},
        "stopped": {"api": 1, "dashboard": 1, "schedule": 0},
        "restarted": {"api": 1, "dashboard": 0, "schedule": 0},
    }


def test_the_run_list_pages_cross_at_the_page_size_with_iter_runs(make_emulator):
    emu = make_emulator(runs_page_size=4, concurrency_limit=None, **FROZEN)
    emu.set_schedule("rbt_shoes", every_seconds=60, budget=1, runs=7)
    emu.set_schedule("rbt_books", every_seconds=90, budget=1, runs=4)
    emu.clock.advance(HOUR)
    newest_first = list(emu.runs.values())[::-1]
    created = [v.created_at for v in newest_first]
    assert created == sorted(created, reverse=True)
    emu.clear_requests()
    with ExtraltClient(emu.api_key, emu.url, rate_limit_per_minute=None) as client:
        listed = list(client.iter_runs())  # asks for 100 a page; the emulator gives 4
    assert [r.id for r in listed] == [v.id for v in newest_first]
    assert len(listed) == 11
    pages = [r for r in emu.requests if r.method == "GET" and r.path == "/v0/extract/runs"]
    assert len(pages) == 3  # 4 + 4 + 3
    assert [bool(p.query.get("cursor")) for p in pages] == [False, True, True]
    assert {r.robot_id for r in listed} == {"rbt_shoes", "rbt_books"}


def test_schedules_over_http(make_emulator):
    emu = make_emulator(**FROZEN)
    route = "/_emulator/schedules"
    with api(emu) as c:
        body = {"robot_id": "rbt_outdoor", "every_seconds": 600, "budget": 3, "failing": [1]}
        made = c.post(route, json=body)
        assert made.status_code == 201, made.text
        assert made.json()["every_seconds"] == 600 and made.json()["failing"] == [1]
        assert [s["robot_id"] for s in c.get(route).json()["schedules"]] == ["rbt_outdoor"]
        c.post("/_emulator/clock", json={"advance": 1260})
        state = c.get("/_emulator/state").json()
        assert [r["status"] for r in state["runs"]] == ["failed", "completed"]
        assert state["run_counts"]["created"]["schedule"] == 2
        for bad, status in [
            ({"every_seconds": 60}, 400),
            ({"robot_id": "rbt_shoes", "every_seconds": 0}, 400),
            ({"robot_id": "rbt_shoes", "every_seconds": "often"}, 400),
            ({"robot_id": "rbt_shoes", "every_seconds": 60, "failing": "2"}, 400),
            ({"robot_id": "rbt_shoes", "every_seconds": 60, "colour": "red"}, 400),
            ({"robot_id": "rbt_nope", "every_seconds": 60}, 404),
        ]:
            r = c.post(route, json=bad)
            assert r.status_code == status, (bad, r.text)
            assert set(r.json()) == {"error", "message"}
        removed = c.post(route, json={"robot_id": "rbt_outdoor", "every_seconds": None})
        assert removed.json() == {"robot_id": "rbt_outdoor", "removed": True}
        c.post("/_emulator/clock", json={"advance": 6000})
        assert len(c.get("/_emulator/state").json()["runs"]) == 2
        assert c.get(route, headers={"Authorization": "Bearer wrong"}).status_code == 401


def test_the_cli_flags_schedule_robots_and_size_pages():
    parser = add_arguments(argparse.ArgumentParser())
    args = parser.parse_args(
        ["--schedule", "rbt_shoes=3600", "--schedule", "rbt_books=90.5:40", "--runs-page-size", "3"]
    )
    emu = build_emulator(args)  # never started: no port is bound
    assert emu.runs_page_size == 3
    assert {k: (s["every_seconds"], s["budget"]) for k, s in emu.schedules.items()} == {
        "rbt_shoes": (3600.0, None),
        "rbt_books": (90.5, 40),
    }
    assert parser.parse_args([]).schedule == [] and parser.parse_args([]).runs_page_size == 100
    unknown = parser.parse_args(["--schedule", "rbt_nope=60"])
    with pytest.raises(ValueError, match="rbt_nope: no such robot"):
        build_emulator(unknown)


@pytest.mark.parametrize("bad", ["rbt_shoes", "rbt_shoes=", "rbt_shoes=0", "=60", "rbt_shoes=60:0"])
def test_the_cli_schedule_flag_refuses_what_it_cannot_schedule(bad):
    with pytest.raises(argparse.ArgumentTypeError, match="--schedule must be ROBOT_ID=SECONDS"):
        parse_schedule(bad)


@pytest.mark.parametrize("bad", ["0", "-1", "many"])
def test_the_cli_page_size_flag_refuses_non_positive_sizes(bad, capsys):
    parser = add_arguments(argparse.ArgumentParser())
    with pytest.raises(SystemExit):
        parser.parse_args(["--runs-page-size", bad])
    assert "--runs-page-size" in capsys.readouterr().err


def test_bad_schedules_and_page_sizes_are_refused_in_python(make_emulator):
    with pytest.raises(ValueError, match="runs_page_size"):
        Emulator(runs_page_size=0)
    emu = make_emulator(**FROZEN)
    for kwargs in ({"every_seconds": 0}, {"every_seconds": 60, "failing": [0]}):
        with pytest.raises(ValueError):
            emu.set_schedule("rbt_shoes", **kwargs)
    assert emu.schedules == {}
