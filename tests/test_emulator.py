"""The Extralt emulator, over real HTTP: what every other test relies on it to do."""

import argparse
import contextlib
import io
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import duckdb
import httpx
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from extralt_dagster.emulator import (
    BROAD,
    CAPTURE_COLUMNS,
    FASHION,
    Catalogue,
    Emulator,
    EmulatorClock,
    Faults,
    write_captures,
)

FROZEN = {"speed": 0}  # time moves only with clock.advance(): exact and sleep-free
RUNS = "/runs"


def api(emu: Emulator, **kw) -> httpx.Client:
    headers = {"Authorization": f"Bearer {emu.api_key}"}
    return httpx.Client(base_url=f"{emu.url}/v0/extract", headers=headers, **kw)


@pytest.fixture
def frozen(make_emulator) -> Emulator:
    return make_emulator(**FROZEN)


@pytest.fixture
def client(frozen) -> Iterator[httpx.Client]:
    with api(frozen) as c:
        yield c


def create(c: httpx.Client, robot_id: str = "rbt_shoes", **body) -> str:
    r = c.post(RUNS, json={"robot_id": robot_id, **body})
    assert r.status_code == 202, r.text
    return r.json()["id"]


def doc(c: httpx.Client, run_id: str) -> dict:
    r = c.get(f"{RUNS}/{run_id}")
    assert r.status_code == 200, r.text
    return r.json()


def error(r: httpx.Response, status: int) -> dict:
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error", "message"} and body["message"]
    return body


# --- Clock --------------------------------------------------------------------------------


def test_clock_advances_speeds_up_and_freezes():
    clock = EmulatorClock(speed=0, start=1000.0)
    assert clock.now() == 1000.0
    assert clock.advance(5) == 1005.0
    clock.speed = 1e6
    assert clock.now() > 1005.0
    clock.speed = 0
    frozen_at = clock.now()
    assert clock.now() == frozen_at  # re-based, no jump back
    with pytest.raises(ValueError):
        clock.advance(-1)


# --- Auth and validation ------------------------------------------------------------------


def test_missing_or_wrong_key_is_401_and_never_echoed(frozen):
    for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": frozen.api_key}):
        r = httpx.get(f"{frozen.url}/v0/extract/runs", headers=headers)
        assert error(r, 401)["error"] == "Unauthorized"
        assert "nope" not in r.text
    assert httpx.get(f"{frozen.url}/_emulator/state").status_code == 401
    assert frozen.count_requests("GET", "/v0/extract/runs") == 3


@pytest.mark.parametrize(
    ("body", "status"),
    [
        (b"{not json", 400),
        (b"", 400),
        (b"[]", 400),
        (b"{}", 400),
        (b'{"robot_id": 7}', 400),
        (b'{"robot_id": "rbt_shoes", "budget": "10"}', 400),
        (b'{"robot_id": "rbt_shoes", "budget": true}', 400),
        (b'{"robot_id": "rbt_shoes", "start_urls": "https://x.example"}', 400),
        (b'{"robot_id": "rbt_shoes", "auto_enrich": "yes"}', 400),
        (b'{"robot_id": "rbt_shoes", "budget": 0}', 422),
        (b'{"robot_id": "rbt_shoes", "start_urls": ["ftp://x.example/a"]}', 422),
        (b'{"robot_id": "rbt_shoes", "start_urls": ["/relative"]}', 422),
        (b'{"robot_id": "rbt_nope"}', 404),
    ],
)
def test_create_rejects_bad_input(client, body, status):
    r = client.post(RUNS, content=body, headers={"content-type": "application/json"})
    error(r, status)


def test_unknown_run_and_route_are_json_404(client):
    assert error(client.get(f"{RUNS}/run_missing"), 404)["error"] == "NotFound"
    error(client.post(f"{RUNS}/run_missing/stop"), 404)
    error(client.post(f"{RUNS}/run_missing/restart"), 404)
    error(client.get("/nowhere"), 404)
    error(client.delete(RUNS), 405)


# --- Lifecycle ----------------------------------------------------------------------------


def test_lifecycle_with_concurrency_limit_one(frozen, client):
    first = create(client, budget=100, start_urls=["https://shoes.example/sale"])
    second = create(client, budget=40, auto_enrich=True)
    d1, d2 = doc(client, first), doc(client, second)
    assert (d1["status"], d2["status"]) == ("starting", "pending")
    assert d1["startedAt"] == d1["createdAt"] and d2["startedAt"] is None
    assert d1["startUrls"] == ["https://shoes.example/sale"] and d2["autoEnrich"] is True
    assert d1["robotId"] == "rbt_shoes" and d1["robotName"] and d1["name"]

    frozen.clock.advance(2.0)
    frozen.clock.advance(2.5)  # 2 s starting, then 2.5 s at 20 captures/s
    d1 = doc(client, first)
    assert (d1["status"], d1["extracted"], d1["inQueue"]) == ("running", 50, 50)
    assert d1["duration"] == 4500 and d1["creditsUsed"] == 100
    assert doc(client, second)["status"] == "pending"

    frozen.clock.advance(2.5)
    d1 = doc(client, first)
    assert (d1["status"], d1["extracted"], d1["inQueue"]) == ("completed", 100, 0)
    assert d1["finishedAt"] - d1["startedAt"] == d1["duration"] == 7000
    assert doc(client, second)["status"] == "starting"  # the freed slot, at once

    frozen.clock.advance(60)
    d2 = doc(client, second)
    assert (d2["status"], d2["extracted"]) == ("completed", 40)
    assert d2["startedAt"] == d1["finishedAt"]
    assert frozen.credits == 10_000_000 - 2 * 140


def test_no_concurrency_limit_runs_side_by_side(make_emulator):
    emu = make_emulator(concurrency_limit=None, **FROZEN)
    with api(emu) as c:
        ids = [create(c, budget=10) for _ in range(3)]
        assert {doc(c, i)["status"] for i in ids} == {"starting"}


def test_without_budget_a_run_extracts_the_robot_catalogue(frozen, client):
    run_id = create(client, "rbt_outdoor")
    frozen.clock.advance(3600)
    assert doc(client, run_id)["extracted"] == frozen.robots["rbt_outdoor"].catalogue_size


def test_credits_cap_captures_and_402(make_emulator):
    emu = make_emulator(credits=41, **FROZEN)  # pays for 20 captures
    with api(emu) as c:
        run_id = create(c, budget=100)
        emu.clock.advance(60)
        d = doc(c, run_id)
        assert (d["status"], d["extracted"], d["stopReason"]) == (
            "completed",
            20,
            "credits_exhausted",
        )
        assert emu.credits == 1
        assert error(c.post(RUNS, json={"robot_id": "rbt_shoes"}), 402)["error"]
        error(c.post(f"{RUNS}/{run_id}/restart"), 402)
        emu.set_credits(20)
        assert create(c, budget=5)


def test_running_out_of_credits_mid_run_with_parallel_runs(make_emulator):
    emu = make_emulator(credits=200, concurrency_limit=None, **FROZEN)
    with api(emu) as c:
        a, b = create(c, budget=500), create(c, budget=500)
        emu.clock.advance(100)
        docs = [doc(c, a), doc(c, b)]
    assert {d["status"] for d in docs} == {"completed"}
    assert sum(d["extracted"] for d in docs) == 100 and emu.credits == 0


# --- Stop and restart ---------------------------------------------------------------------


def test_stop_live_runs_204_and_terminal_409(frozen, client):
    running = create(client, budget=1000)
    pending = create(client, budget=10)
    frozen.clock.advance(3)
    for run_id in (pending, running):
        r = client.post(f"{RUNS}/{run_id}/stop")
        assert r.status_code == 204 and r.content == b""
        assert doc(client, run_id)["status"] == "stopped"
    assert doc(client, running)["extracted"] == 20
    assert error(client.post(f"{RUNS}/{running}/stop"), 409)["error"] == "Conflict"
    frozen.clock.advance(100)
    assert doc(client, running)["extracted"] == 20  # a stopped run stays put


def test_restart_gives_a_new_run_with_its_own_lifecycle(frozen, client):
    old = create(client, budget=30)
    error(client.post(f"{RUNS}/{old}/restart"), 409)  # still live
    frozen.clock.advance(10)
    assert doc(client, old)["status"] == "completed"

    r = client.post(f"{RUNS}/{old}/restart", json={"budget": 10})
    assert r.status_code == 202
    new = r.json()["id"]
    assert new != old
    d = doc(client, new)
    assert (d["status"], d["restartedFrom"], d["budget"], d["extracted"]) == (
        "restarting",
        old,
        10,
        0,
    )
    frozen.clock.advance(1)
    assert doc(client, new)["status"] == "starting"
    frozen.clock.advance(2.25)
    assert (doc(client, new)["status"], doc(client, new)["extracted"]) == ("running", 5)
    frozen.clock.advance(10)
    assert doc(client, new)["status"] == "completed" and doc(client, new)["extracted"] == 10
    assert doc(client, old)["extracted"] == 30

    again = client.post(f"{RUNS}/{new}/restart", content=b"")
    assert again.status_code == 202 and doc(client, again.json()["id"])["budget"] == 10
    error(client.post(f"{RUNS}/{new}/restart", json={"budget": -1}), 422)
    error(client.post(f"{RUNS}/{new}/restart", json={"budget": "x"}), 400)


def test_restart_can_keep_the_id(make_emulator):
    emu = make_emulator(restart_keeps_id=True, **FROZEN)
    with api(emu) as c:
        run_id = create(c, budget=10)
        c.post(f"{RUNS}/{run_id}/stop")
        assert c.post(f"{RUNS}/{run_id}/restart").json() == {"id": run_id}
        assert doc(c, run_id)["status"] == "restarting"
        emu.clock.advance(10)
        assert (doc(c, run_id)["status"], doc(c, run_id)["extracted"]) == ("completed", 10)
        assert len(emu.runs) == 1 and emu.run(run_id).generation == 1


def test_dashboard_controls(frozen, client):
    a, b, c_, d = (create(client, budget=100) for _ in range(4))
    frozen.stop_run_externally(a)
    frozen.fail_run(b, "Site blocked the robot")
    frozen.finish_run(c_)
    frozen.force_status(d, "paused")
    assert doc(client, a)["status"] == "stopped"
    assert doc(client, b)["status"] == "failed"
    assert doc(client, b)["errorMessage"] == "Site blocked the robot"
    assert (doc(client, c_)["status"], doc(client, c_)["extracted"]) == ("completed", 100)
    assert doc(client, d)["status"] == "paused"
    assert frozen.run(d).true_status == "starting"
    frozen.force_status(d, None)
    assert doc(client, d)["status"] == "starting"


# --- Listing ------------------------------------------------------------------------------


def test_list_runs_is_newest_first_and_paginated(make_emulator):
    emu = make_emulator(concurrency_limit=None, **FROZEN)
    with api(emu) as c:
        ids = [create(c, budget=5) for _ in range(25)]
        page = c.get(RUNS).json()
        assert len(page["rows"]) == 20 and page["nextCursor"]
        seen, cursor = [], None
        while True:
            page = c.get(RUNS, params={"limit": 10, **({"cursor": cursor} if cursor else {})})
            seen += [row["_id"] for row in page.json()["rows"]]
            cursor = page.json()["nextCursor"]
            if cursor is None:
                break
        assert seen == ids[::-1]
        assert len(c.get(RUNS, params={"limit": 1000}).json()["rows"]) == 25  # capped at 100
        error(c.get(RUNS, params={"cursor": "garbage"}), 400)
        error(c.get(RUNS, params={"limit": "ten"}), 400)
        error(c.get(RUNS, params={"limit": 0}), 422)


# --- Captures and export ------------------------------------------------------------------


def finished_run(emu: Emulator, c: httpx.Client, budget: int = 250, robot: str = "rbt_shoes"):
    run_id = create(c, robot, budget=budget)
    emu.finish_run(run_id)
    return run_id


def export(c: httpx.Client, run_id: str, fmt: str | None = None) -> httpx.Response:
    params = {"run_id": run_id, **({"format": fmt} if fmt else {})}
    return c.get("/captures/export", params=params)


def test_export_parquet_matches_the_documented_schema(frozen, client):
    run_id = finished_run(frozen, client)
    r = export(client, run_id)
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/vnd.apache.parquet"
    assert r.headers["content-disposition"] == f'attachment; filename="{run_id}.parquet"'
    assert "content-length" not in r.headers and r.headers["transfer-encoding"] == "chunked"
    table = pq.read_table(io.BytesIO(r.content))
    assert table.num_rows == 250 and tuple(table.column_names) == CAPTURE_COLUMNS
    schema = table.schema
    assert schema.field("extracted_at").type == pa.float64()
    assert schema.field("min_price").type == pa.float64()
    assert schema.field("available").type == pa.bool_()
    assert schema.field("sku_count").type == pa.int32()
    assert pa.types.is_struct(schema.field("options").type)
    variant = schema.field("variants").type.value_type
    assert [variant.field(i).name for i in range(variant.num_fields)] == [
        "id",
        "opt1",
        "opt2",
        "identifiers",
        "offers",
    ]
    offer = variant.field("offers").type.value_type
    assert offer.field("price").type.field("amount").type == pa.float64()
    rows = table.to_pylist()
    row = rows[0]
    assert row["url"].startswith("https://shoes.example/p/")
    assert len(row["id"]) == 36 and row["currency"] == "USD"
    assert row["sku_count"] == len(row["variants"]) and 1 <= row["sku_count"] <= 6
    assert len({x["id"] for x in rows}) == 250
    run = frozen.run(run_id)
    assert all(run.running_at <= x["extracted_at"] <= run.ended_at for x in rows)
    assert all(x["min_price"] is None or x["min_price"] <= x["max_price"] for x in rows)


def test_export_jsonl_has_the_same_rows(frozen, client):
    run_id = finished_run(frozen, client, budget=120)
    r = export(client, run_id, "jsonl")
    assert r.status_code == 200 and r.headers["content-type"] == "application/x-ndjson"
    assert r.headers["content-disposition"] == f'attachment; filename="{run_id}.jsonl"'
    lines = [json.loads(line) for line in r.text.splitlines()]
    parquet = pq.read_table(io.BytesIO(export(client, run_id).content)).to_pylist()
    assert [x["id"] for x in lines] == [x["id"] for x in parquet]
    assert list(lines[0]) == list(CAPTURE_COLUMNS)


def test_export_of_a_running_run_has_what_is_extracted_so_far(frozen, client):
    run_id = create(client, budget=1000)
    frozen.clock.advance(2 + 3.5)
    assert pq.read_table(io.BytesIO(export(client, run_id).content)).num_rows == 70
    pending = create(client, budget=5)
    assert pq.read_table(io.BytesIO(export(client, pending).content)).num_rows == 0


def test_export_errors(client):
    error(client.get("/captures/export"), 400)
    error(client.get("/captures/export", params={"run_id": "run_x", "format": "csv"}), 400)
    error(client.get("/captures/export", params={"run_id": "run_x"}), 404)


def test_captures_pages_match_the_export(frozen, client):
    run_id = finished_run(frozen, client, budget=45)
    rows, cursor = [], None
    while True:
        params = {"run_id": run_id, "limit": 20, **({"cursor": cursor} if cursor else {})}
        page = client.get("/captures", params=params).json()
        rows += page["rows"]
        cursor = page["nextCursor"]
        if not cursor:
            break
    exported = pq.read_table(io.BytesIO(export(client, run_id).content)).to_pylist()
    assert rows == json.loads(json.dumps(exported))
    error(client.get("/captures", params={"run_id": run_id, "cursor": "bad"}), 400)
    error(client.get("/captures", params={"run_id": "run_x"}), 404)


def test_captures_are_deterministic_and_runs_share_products(tmp_path):
    a, b, c = (tmp_path / n for n in ("a.parquet", "b.parquet", "c.parquet"))
    write_captures(a, run_id="run_1", count=300, seed=3)
    write_captures(b, run_id="run_1", count=300, seed=3)
    assert a.read_bytes() == b.read_bytes()
    write_captures(c, run_id="run_2", count=300, seed=3)
    con = duckdb.connect()
    same = con.sql(
        f"SELECT count(*), count(*) FILTER (WHERE x.max_price <> y.max_price), "
        f"count(*) FILTER (WHERE x.id = y.id) FROM '{a}' x JOIN '{c}' y USING (product_id)"
    ).fetchall()[0]
    assert same[0] == 300 and same[1] > 0 and same[2] == 0  # same products, new prices and ids
    [(nulls,)] = con.sql(f"SELECT count(*) FILTER (WHERE min_price IS NULL) FROM '{a}'").fetchall()
    assert nulls < 15
    write_captures(c, run_id="run_1", count=300, seed=4)
    assert a.read_bytes() != c.read_bytes()


def test_write_captures_column_variants(tmp_path):
    path = write_captures(
        tmp_path / "x.jsonl",
        run_id="run_1",
        count=5,
        format="jsonl",
        extra_columns=True,
        drop_columns=("subtitle",),
    )
    row = json.loads(path.read_text().splitlines()[0])
    assert "subtitle" not in row and {"rating", "review_count"} <= set(row)
    with pytest.raises(ValueError):
        write_captures(tmp_path / "y.parquet", run_id="r", count=1, drop_columns=("nope",))


SHAPE_SQL = """
SELECT count(*), avg(len(variants)),
  avg(list_sum(list_transform(variants, lambda v: len(v.offers)))),
  max(list_max(list_transform(variants, lambda v: len(v.offers)))),
  count(*) FILTER (WHERE min_price IS DISTINCT FROM list_min(list_transform(
    flatten(list_transform(variants, lambda v: v.offers)), lambda o: o.price.amount)))
FROM '{path}'
"""


@pytest.mark.parametrize(
    ("catalogue", "variants", "offers", "most"),
    [(Catalogue(), 3.0, 3.75, 2), (BROAD, 4.0, 7.0, 2), (FASHION, 25.0, 30.0, 2)],
    ids=["default", "broad", "fashion"],
)
def test_a_catalogue_shape_gives_its_variants_and_offers_per_capture(
    tmp_path, catalogue, variants, offers, most
):
    assert (catalogue.variants_per_capture, catalogue.offers_per_capture) == (variants, offers)
    path = write_captures(tmp_path / "x.parquet", run_id="run_1", count=4000, catalogue=catalogue)
    [(rows, v, o, biggest, wrong_min)] = duckdb.sql(SHAPE_SQL.format(path=path)).fetchall()
    assert rows == 4000 and biggest == most
    assert v == pytest.approx(variants, rel=0.03) and o == pytest.approx(offers, rel=0.03)
    # The store's offer is first and each marketplace offer undercuts the last: the cheapest
    # offer is min_price, whatever the shape (only the 1% of NULL min_price set aside).
    [(nulls,)] = duckdb.sql(
        f"SELECT count(*) FILTER (WHERE min_price IS NULL) FROM '{path}'"
    ).fetchall()
    assert wrong_min == nulls


def test_the_default_catalogue_is_the_shape_every_earlier_export_had(tmp_path):
    """Cached exports and every seeded figure stay valid: the knob's default writes the bytes
    the generator wrote before it had a knob."""
    a = write_captures(tmp_path / "a.parquet", run_id="run_1", count=300, seed=3)
    b = write_captures(
        tmp_path / "b.parquet", run_id="run_1", count=300, seed=3, catalogue=Catalogue()
    )
    assert a.read_bytes() == b.read_bytes() and Catalogue().key() == ""
    [(offers,)] = duckdb.sql(
        f"SELECT sum(list_sum(list_transform(variants, lambda v: len(v.offers)))) FROM '{a}'"
    ).fetchall()
    assert offers == 1149  # pinned: the seed-3 run's offers before the knob existed


def test_an_emulator_serves_its_catalogue_in_exports_and_pages(make_emulator):
    emu = make_emulator(catalogue=FASHION, **FROZEN)
    with api(emu) as c:
        run_id = finished_run(emu, c, budget=40)
        body = export(c, run_id).content
        page = c.get("/captures", params={"run_id": run_id, "limit": 40}).json()["rows"]
    table = pq.read_table(io.BytesIO(body))
    exported = sorted(len(v) for v in table.column("variants").to_pylist())
    assert exported == sorted(len(row["variants"]) for row in page)
    assert sum(exported) / len(exported) > 10  # fashion, not the default's 3


@pytest.mark.parametrize("bad", ["9x9", "0x2x1.25", "3x2x9", "axbxc"])
def test_the_cli_catalogue_flag_refuses_a_shape_it_cannot_make(bad):
    from extralt_dagster.emulator.__main__ import parse_catalogue

    assert parse_catalogue("9x9x1.2") == FASHION
    with pytest.raises(
        argparse.ArgumentTypeError, match="--catalogue must be SIZESxCOLOURSxOFFERS"
    ):
        parse_catalogue(bad)


def test_same_seed_gives_the_same_run_ids_and_data(make_emulator):
    exports = []
    for _ in range(2):
        emu = make_emulator(seed=11, start_time=1_700_000_000.0, **FROZEN)
        with api(emu) as c:
            run_id = finished_run(emu, c, budget=30)
            exports.append((run_id, export(c, run_id).content))
    assert exports[0] == exports[1]


def test_a_restarted_emulator_never_reuses_a_run_id(make_emulator):
    """The same settings twice, on the same port, as `extralt-dagster emulator` restarted: a run
    id of the second emulator is never one of the first (whose runs a warehouse may hold)."""
    settings = {"start_time": 1_700_000_000.0, **FROZEN}
    first = make_emulator(**settings)
    port = first.port
    with api(first) as c:
        old = [create(c, budget=5) for _ in range(20)]
        first.clock.advance(60)
        old.append(c.post(f"{RUNS}/{old[0]}/restart").json()["id"])
    first.stop()
    second = make_emulator(port=port, **settings)
    with api(second) as c:
        new = [create(c, budget=5) for _ in range(20)]
        second.clock.advance(60)
        new.append(c.post(f"{RUNS}/{new[0]}/restart").json()["id"])
    assert len(set(old)) == len(set(new)) == 21
    assert set(old).isdisjoint(new)
    assert first.seed is None and second.seed is None  # the defaults: no seed given


# --- Rate limit ---------------------------------------------------------------------------


def test_rate_limit_429_with_retry_after(make_emulator):
    emu = make_emulator(rate_limit=(60, 3), **FROZEN)
    with api(emu) as c:
        assert [c.get(RUNS).status_code for _ in range(3)] == [200, 200, 200]
        r = c.get(RUNS)
        assert error(r, 429)["error"] == "TooManyRequests"
        assert r.headers["retry-after"] == "1"
        admin = httpx.get(f"{emu.url}/_emulator/state", headers=c.headers)
        assert admin.status_code == 200  # admin is never rate limited
    assert emu.count_requests("GET", "/v0/extract/runs") == 4
    assert [q.status for q in emu.requests][:4] == [200, 200, 200, 429]


# --- Faults -------------------------------------------------------------------------------


def test_error_burst_with_retry_after_then_recovery(frozen, client):
    run_id = create(client, budget=5)
    frozen.set_faults(
        error_status=503, error_count=2, retry_after=7, match="GET /v0/extract/runs/*"
    )
    assert client.get(RUNS).status_code == 200  # not matched
    for _ in range(2):
        r = client.get(f"{RUNS}/{run_id}")
        assert error(r, 503)["error"] == "ServiceUnavailable" and r.headers["retry-after"] == "7"
    assert client.get(f"{RUNS}/{run_id}").status_code == 200
    frozen.set_faults(error_status=429, error_count=1)
    r = client.post(RUNS, json={"robot_id": "rbt_shoes"})
    assert r.status_code == 429 and "retry-after" not in r.headers
    assert frozen.count_requests("POST", "/v0/extract/runs") == 2 and len(frozen.runs) == 1
    statuses = [q.status for q in frozen.requests if q.path == f"/v0/extract/runs/{run_id}"]
    assert statuses[-3:] == [503, 503, 200]


def test_error_rate_is_seeded(make_emulator):
    outcomes = []
    for _ in range(2):
        emu = make_emulator(**FROZEN)
        emu.set_faults(error_status=500, error_rate=0.5)
        with api(emu) as c:
            outcomes.append([c.get(RUNS).status_code for _ in range(30)])
    assert outcomes[0] == outcomes[1] and {200, 500} == set(outcomes[0])


def test_error_after_handling_creates_the_run(frozen, client):
    frozen.set_faults(error_status=502, error_count=1, error_after_handling=True)
    error(client.post(RUNS, json={"robot_id": "rbt_shoes", "budget": 5}), 502)
    assert len(frozen.runs) == 1


def test_latency_makes_clients_time_out(frozen):
    frozen.set_faults(latency_seconds=5, match="GET /v0/extract/runs")
    with api(frozen, timeout=0.2) as c, pytest.raises(httpx.ReadTimeout):
        c.get(RUNS)


def test_export_cut_leaves_an_incomplete_chunked_body(frozen, client):
    run_id = finished_run(frozen, client, budget=2000)
    frozen.set_faults(export_cut_after_bytes=10_000)
    received = bytearray()
    params = {"run_id": run_id}
    with (
        pytest.raises(httpx.RemoteProtocolError),
        client.stream("GET", "/captures/export", params=params) as r,
    ):
        assert r.status_code == 200
        for chunk in r.iter_bytes():
            received += chunk
    assert len(received) == 10_000
    frozen.clear_faults()
    assert len(export(client, run_id).content) > 10_000  # the server is fine afterwards


def test_export_corrupt_and_truncate_are_unreadable(frozen, client):
    run_id = finished_run(frozen, client, budget=500)
    whole = export(client, run_id).content
    frozen.set_faults(export_corrupt=True)
    corrupt = export(client, run_id)
    assert corrupt.status_code == 200 and len(corrupt.content) == len(whole)
    assert corrupt.content != whole and corrupt.content[:4] == b"PAR1"
    with pytest.raises(Exception, match=r"(?i)parquet|magic|footer|invalid"):
        pq.read_table(io.BytesIO(corrupt.content))
    frozen.set_faults(export_truncate=True)
    truncated = export(client, run_id)
    assert truncated.status_code == 200 and len(truncated.content) == len(whole) // 2
    assert whole.startswith(truncated.content)
    jsonl = export(client, run_id, "jsonl").content
    assert not jsonl.endswith(b"\n")


def test_export_columns_and_filename_faults(frozen, client):
    run_id = finished_run(frozen, client, budget=20)
    frozen.set_faults(export_extra_columns=True, export_drop_columns=("subtitle",))
    columns = pq.read_table(io.BytesIO(export(client, run_id).content)).column_names
    assert "subtitle" not in columns and "rating" in columns
    for name in ("../../etc/passwd", "/abs/evil.parquet"):
        frozen.set_faults(content_disposition_filename=name)
        assert name in export(client, run_id).headers["content-disposition"]
    frozen.set_faults(content_disposition_filename="")
    assert "content-disposition" not in export(client, run_id).headers


def test_run_faults_fail_or_never_finish(frozen, client):
    frozen.set_faults(fail_runs=True)
    failing = create(client, budget=100)
    frozen.set_faults(never_finish=True)
    frozen.clock.advance(60)
    d = doc(client, failing)
    assert d["status"] == "failed" and d["extracted"] == 40 and "crashed" in d["errorMessage"]
    stuck = create(client, budget=100)
    frozen.clock.advance(100_000)
    d = doc(client, stuck)
    assert (d["status"], d["extracted"]) == ("running", 50) and d["inQueue"] > 0
    frozen.clear_faults()
    later = create(client, budget=5)
    frozen.clock.advance(100)
    assert doc(client, later)["status"] == "pending"  # the stuck run holds the only slot


def test_faults_reject_unknown_fields(frozen):
    with pytest.raises(TypeError, match="nope"):
        frozen.set_faults(nope=1)
    with pytest.raises(ValueError):
        Faults(error_rate=2)


# --- Admin endpoints ----------------------------------------------------------------------


def test_admin_endpoints(frozen, client):
    admin = httpx.Client(base_url=f"{frozen.url}/_emulator", headers=client.headers)
    run_id = create(client, budget=10)
    state = admin.get("/state").json()
    assert state["credits"] == 10_000_000 and state["runs"][0]["id"] == run_id
    assert state["requests"]["by_route"]["POST /v0/extract/runs"] == 1

    r = admin.post("/faults", json={"error_status": 500, "error_count": 1})
    assert r.status_code == 200 and frozen.faults.error_count == 1
    error(client.get(RUNS), 500)
    assert admin.post("/faults", json={"bogus": 1}).status_code == 400
    admin.post("/faults", json={"error_count": 3})
    admin.post("/faults", json={})
    assert frozen.faults == Faults()

    before = frozen.clock.now()
    assert admin.post("/clock", json={"advance": 30}).json()["now"] >= before + 30
    assert doc(client, run_id)["status"] == "completed"
    admin.post("/clock", json={"speed": 5})
    assert frozen.clock.speed == 5
    frozen.clock.speed = 0

    other = create(client, budget=10)
    assert admin.post(f"/runs/{other}/fail", json={"message": "boom"}).json()["status"] == "failed"
    assert admin.post(f"/runs/{other}/stop").status_code == 409
    assert admin.post("/runs/run_x/finish").status_code == 404
    third = create(client, budget=10)
    assert admin.post(f"/runs/{third}/status", json={"status": "paused"}).json()["status"] == (
        "paused"
    )
    assert admin.post("/credits", json={"set": 99}).json() == {"credits": 99}
    admin.close()


def test_request_log_and_counts(frozen, client):
    run_id = create(client, budget=5)
    client.post(f"{RUNS}/{run_id}/stop")
    client.get(RUNS, params={"limit": 3})
    assert frozen.count_requests("POST", "/v0/extract/runs/*/stop") == 1
    assert frozen.count_requests(path="/v0/extract/runs*") == 3
    last = frozen.requests[-1]
    assert (last.method, last.path, last.query, last.status) == (
        "GET",
        "/v0/extract/runs",
        {"limit": "3"},
        200,
    )


@pytest.mark.parametrize("emulator", [{"speed": 0, "credits": 1}], indirect=True)
def test_fixture_takes_settings(emulator):
    assert emulator.clock.speed == 0 and emulator.credits == 1
    with api(emulator) as c:
        error(c.post(RUNS, json={"robot_id": "rbt_books"}), 402)


# --- Robots and run pages ----------------------------------------------------------------


def test_robots_are_listed_and_added_over_http(frozen, client):
    admin = httpx.Client(base_url=f"{frozen.url}/_emulator", headers=client.headers)
    listed = admin.get("/robots")
    assert listed.status_code == 200
    robots = {r["id"]: r for r in listed.json()["robots"]}
    assert set(robots) == {"rbt_shoes", "rbt_outdoor", "rbt_books"}
    assert robots["rbt_books"]["host"] == "books.example"
    assert robots["rbt_books"]["catalogue_size"] == 2500
    assert httpx.get(f"{frozen.url}/_emulator/robots").status_code == 401  # admin: key needed

    added = admin.post(
        "/robots", json={"id": "rbt_tea", "host": "tea.example", "catalogue_size": 7}
    )
    assert added.status_code == 201
    assert "rbt_tea" in {r["id"] for r in admin.get("/robots").json()["robots"]}
    run_id = create(client, "rbt_tea")
    frozen.clock.advance(60)
    assert (doc(client, run_id)["status"], doc(client, run_id)["extracted"]) == ("completed", 7)
    admin.close()


def test_run_page_shows_the_run_to_a_browser_without_a_key(frozen, client):
    from extralt_dagster import ExtraltClient

    run_id = create(client, budget=30)
    frozen.clock.advance(60)
    link = ExtraltClient(frozen.api_key, frozen.url).dashboard_url(run_id)
    assert link == f"{frozen.url}/runs/{run_id}"  # what the assets log and put in metadata
    frozen.set_faults(error_status=500, error_count=5)  # the page takes no faults
    page = httpx.get(link)  # no Authorization header, as from a browser
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    text = page.text
    assert f"<title>Extralt run {run_id}: completed</title>" in text
    assert "<th>Robot</th><td>rbt_shoes (Shoes Example (US), shoes.example)</td>" in text
    assert "<th>Extracted</th><td>30 captures</td>" in text
    assert "<th>Budget</th><td>30</td>" in text and "<th>Credits used</th><td>60</td>" in text
    assert frozen.faults.error_count == 5  # none used up by the page...
    error(client.get(f"{RUNS}/{run_id}"), 500)  # ...while the API takes them
    assert "<th>Created</th><td>" in text and " UTC</td>" in text
    assert 'http-equiv="refresh"' not in text  # a finished run needs no refresh
    assert frozen.count_requests("GET", f"/runs/{run_id}") == 1

    frozen.clear_faults()
    live = create(client, budget=30)
    assert "<th>Status</th><td>starting</td>" in httpx.get(f"{frozen.url}/runs/{live}").text
    assert 'http-equiv="refresh"' in httpx.get(f"{frozen.url}/runs/{live}").text


def test_run_page_escapes_and_names_an_unknown_run(frozen, client):
    frozen.add_robot("rbt_x", "x.example", name="<script>alert(1)</script>", catalogue_size=3)
    run_id = create(client, "rbt_x")
    text = httpx.get(f"{frozen.url}/runs/{run_id}").text
    assert "<script>" not in text and "&lt;script&gt;alert(1)&lt;/script&gt;" in text

    missing = httpx.get(f"{frozen.url}/runs/run_<b>gone</b>")
    assert missing.status_code == 404 and missing.headers["content-type"].startswith("text/html")
    assert "<code>run_&lt;b&gt;gone&lt;/b&gt;</code>" in missing.text
    assert "<b>gone" not in missing.text and "restarted" in missing.text


# --- CLI ----------------------------------------------------------------------------------


CLI = Path(sys.executable).with_name("extralt-dagster")
DEMO_HEADERS = {"Authorization": "Bearer extralt-demo-key"}


@contextlib.contextmanager
def cli_emulator(*args: str) -> Iterator[tuple[str, list[str]]]:
    """`extralt-dagster emulator ARGS` in its own process: its URL and banner; SIGINT at the end,
    which must exit 0."""
    proc = subprocess.Popen(
        [str(CLI), "emulator", "--speed", "100", *args],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert proc.stdout is not None
        banner = [proc.stdout.readline()]
        while banner[-1] and not banner[-1].startswith("Press Ctrl-C"):
            banner.append(proc.stdout.readline())
        url = banner[0].rsplit(" ", 1)[-1].strip()
        assert url.startswith("http://127.0.0.1:"), banner
        yield url, banner
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=15) == 0
    finally:
        proc.kill()
        proc.wait()


def test_cli_serves_until_sigint():
    with cli_emulator("--port", "0") as (url, banner):
        r = httpx.get(f"{url}/v0/extract/runs", headers=DEMO_HEADERS)
        assert r.status_code == 200
        assert any("robots: rbt_books, rbt_outdoor, rbt_shoes" in line for line in banner)


def test_cli_restarted_on_the_same_port_never_reuses_a_run_id():
    """The defect as found: `extralt-dagster emulator` stopped and started again, same flags."""
    seen: list[list[str]] = []
    port = "0"
    for _ in range(2):
        with cli_emulator("--port", port) as (url, _banner):
            port = url.rsplit(":", 1)[1]
            body = {"robot_id": "rbt_shoes", "budget": 5}
            ids = [
                httpx.post(f"{url}/v0/extract/runs", json=body, headers=DEMO_HEADERS).json()["id"]
                for _ in range(5)
            ]
            seen.append(ids)
    assert len(set(seen[0])) == len(set(seen[1])) == 5
    assert set(seen[0]).isdisjoint(seen[1])


def test_cli_adds_robots_and_help_lists_them():
    with cli_emulator("--port", "0", "--robot", "rbt_tea=tea.example:50") as (url, banner):
        robots = httpx.get(f"{url}/_emulator/robots", headers=DEMO_HEADERS).json()["robots"]
        tea = next(r for r in robots if r["id"] == "rbt_tea")
        assert (tea["host"], tea["catalogue_size"]) == ("tea.example", 50)
        assert {r["id"] for r in robots} == {"rbt_tea", "rbt_shoes", "rbt_outdoor", "rbt_books"}
        assert any("rbt_tea" in line for line in banner)

    helped = subprocess.run([str(CLI), "emulator", "--help"], capture_output=True, text=True)
    assert helped.returncode == 0
    for line in ("rbt_shoes", "shoes.example", "rbt_outdoor", "rbt_books", "--robot ID=HOST"):
        assert line in helped.stdout
    assert "GET /_emulator/robots" in helped.stdout and "add_robot" in helped.stdout

    bad = subprocess.run(
        [str(CLI), "emulator", "--robot", "rbt_tea"], capture_output=True, text=True, timeout=30
    )
    assert bad.returncode == 2
    assert "--robot must be ID=HOST or ID=HOST:CATALOGUE_SIZE" in bad.stderr
