"""ExtraltClient over real HTTP against the emulator: every method and every error class."""

import contextlib
import json
import logging
import random
import socket

import duckdb
import httpx
import pyarrow.parquet as pq
import pytest

from extralt_dagster import (
    ExtraltAPIError,
    ExtraltAuthError,
    ExtraltClient,
    ExtraltConflictError,
    ExtraltConnectError,
    ExtraltConnectionError,
    ExtraltExportError,
    ExtraltInsufficientCreditsError,
    ExtraltNotFoundError,
    ExtraltRateLimitError,
    ExtraltReadError,
    ExtraltServerError,
    ExtraltUnknownStatusError,
    ExtraltValidationError,
    RunStatus,
)
from extralt_dagster.api import client as client_module
from extralt_dagster.emulator.state import ApiError

CREATE = ("POST", "/v0/extract/runs")


@pytest.fixture
def sleeps():
    return []


@pytest.fixture
def client(emulator, sleeps):
    """Retries record their delays instead of sleeping: the schedule is asserted, not waited."""
    with ExtraltClient(
        emulator.api_key,
        emulator.url,
        max_retries=3,
        timeout=5,
        sleep=sleeps.append,
        rate_limit_per_minute=None,
    ) as c:
        yield c


def wait_terminal(client, emulator, run_id):
    """Jump the run to its end on the emulator's clock (it may already be there)."""
    with contextlib.suppress(ApiError):
        emulator.finish_run(run_id)
    run = client.get_run(run_id)
    assert run.status.is_terminal
    return run


# --- runs ---------------------------------------------------------------------------------


@pytest.mark.parametrize("emulator", [{"speed": 1}], indirect=True)  # still live when read back
def test_create_get_and_complete(client, emulator):
    run_id = client.create_run(
        "rbt_shoes", start_urls=["https://shoes.example/c/sale"], budget=15, auto_enrich=True
    )
    run = client.get_run(run_id)
    assert run.id == run_id
    assert run.status in (RunStatus.PENDING, RunStatus.STARTING, RunStatus.RUNNING)
    assert run.robot_id == "rbt_shoes" and run.budget == 15 and run.auto_enrich is True
    assert run.raw["_id"] == run_id  # the whole document is kept
    final = wait_terminal(client, emulator, run_id)
    assert final.status is RunStatus.COMPLETED and final.extracted == 15
    assert final.created_at is not None and final.duration is not None
    assert emulator.run(run_id).start_urls == ["https://shoes.example/c/sale"]
    assert emulator.count_requests(*CREATE) == 1


def test_stop_then_restart_follows_the_returned_id(client, emulator):
    emulator.set_faults(never_finish=True)  # still live when the stop arrives, however slow
    run_id = client.create_run("rbt_shoes", budget=50)
    client.stop_run(run_id)
    emulator.clear_faults()
    assert emulator.run(run_id).status == "stopped"
    with pytest.raises(ExtraltConflictError) as info:
        client.stop_run(run_id)  # already terminal
    assert info.value.status_code == 409
    new_id = client.restart_run(run_id, budget=10)
    assert new_id != run_id
    assert emulator.run(new_id).restarted_from == run_id
    assert wait_terminal(client, emulator, new_id).extracted == 10


def test_list_runs_follows_next_cursor(client, emulator):
    ids = {client.create_run("rbt_shoes", budget=1) for _ in range(7)}
    runs = client.list_runs(page_size=3)
    assert {r.id for r in runs} == ids
    assert emulator.count_requests("GET", "/v0/extract/runs") == 3  # 3 + 3 + 1
    assert len(client.list_runs(limit=4, page_size=3)) == 4


def test_iter_captures_pages(client, emulator):
    run_id = client.create_run("rbt_shoes", budget=12)
    wait_terminal(client, emulator, run_id)
    rows = list(client.iter_captures(run_id, page_size=5))
    assert len(rows) == 12 and len({r["id"] for r in rows}) == 12


def test_unknown_status_raises_instead_of_passing_as_done(client, emulator):
    run_id = client.create_run("rbt_shoes", budget=5)
    emulator.force_status(run_id, "archived")
    with pytest.raises(ExtraltUnknownStatusError, match="archived"):
        client.get_run(run_id)


# --- errors ---------------------------------------------------------------------------------


def test_wrong_key_is_an_auth_error_that_never_echoes_the_key(emulator):
    with ExtraltClient("wrong-key-xyz", emulator.url) as c, pytest.raises(ExtraltAuthError) as info:
        c.get_run("run_1")
    assert info.value.status_code == 401
    assert "EXTRALT_API_KEY" in str(info.value)
    assert "wrong-key-xyz" not in str(info.value) and "wrong-key-xyz" not in repr(info.value)
    assert emulator.count_requests() == 1  # 401 is not retried


def test_forbidden_is_an_auth_error(client, emulator):
    emulator.set_faults(error_status=403, error_count=1)
    with pytest.raises(ExtraltAuthError) as info:
        client.get_run("run_x")
    assert info.value.status_code == 403


def test_unknown_run_and_robot_are_not_found(client, emulator):
    with pytest.raises(ExtraltNotFoundError) as info:
        client.get_run("run_does_not_exist")
    assert "run_does_not_exist" in str(info.value)
    with pytest.raises(ExtraltNotFoundError):
        client.create_run("rbt_nobody")
    assert emulator.count_requests() == 2  # neither is retried


def test_no_credits_is_402_and_not_retried(make_emulator):
    emu = make_emulator(credits=0)
    with (
        ExtraltClient(emu.api_key, emu.url) as c,
        pytest.raises(ExtraltInsufficientCreditsError) as info,
    ):
        c.create_run("rbt_shoes", budget=5)
    assert info.value.status_code == 402
    assert emu.count_requests(*CREATE) == 1


@pytest.mark.parametrize("status", [400, 422])
def test_server_side_validation_errors_are_not_retried(client, emulator, status):
    emulator.set_faults(error_status=status, error_count=5, match="POST /v0/extract/runs")
    with pytest.raises(ExtraltValidationError) as info:
        client.create_run("rbt_shoes", budget=5)
    assert info.value.status_code == status and info.value.server_message == "Injected fault"
    assert info.value.message == str(info.value)  # the exception's own message, the server's within
    assert str(info.value).startswith(f"Extralt POST /v0/extract/runs returned {status} (")
    assert emulator.count_requests(*CREATE) == 1


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"robot_id": ""}, "robot_id"),
        ({"robot_id": "rbt_shoes", "start_urls": ["mailto:x@y"]}, "start_urls[0]"),
        ({"robot_id": "rbt_shoes", "budget": 0}, "budget"),
        ({"robot_id": "rbt_shoes", "budget": "10"}, "budget"),
    ],
)
def test_bad_input_fails_before_any_request(client, emulator, kwargs, field):
    with pytest.raises(ExtraltValidationError) as info:
        client.create_run(**kwargs)
    assert field in str(info.value)
    assert emulator.count_requests() == 0


# --- retries --------------------------------------------------------------------------------


def test_429_honours_retry_after(client, emulator, sleeps):
    emulator.set_faults(error_status=429, error_count=2, retry_after=7)
    run_id = client.create_run("rbt_shoes", budget=5)
    assert list(emulator.runs) == [run_id] and emulator.run(run_id).budget == 5
    assert sleeps == [7.0, 7.0]
    assert emulator.count_requests(*CREATE) == 3  # two 429s were not processed, then one create
    assert len(emulator.runs) == 1


# Under the default 60 s cap the third step is capped; under a 1000 s cap it tells doubling from
# any faster growth (tripling would wait at least 67.5 s).
@pytest.mark.parametrize("max_backoff", [60.0, 1000.0], ids=["default_cap", "high_cap"])
def test_429_without_retry_after_backs_off_exponentially(emulator, sleeps, max_backoff):
    emulator.set_faults(error_status=429, error_count=3)
    with ExtraltClient(
        emulator.api_key,
        emulator.url,
        max_retries=3,
        rate_limit_backoff_seconds=15,
        max_backoff_seconds=max_backoff,
        sleep=sleeps.append,
        rate_limit_per_minute=None,
    ) as c:
        c.get_run(c.create_run("rbt_shoes", budget=1))
    # documented schedule 15, 30, 60 s, with jitter in [0.5, 1] of each step
    assert len(sleeps) == 3
    for delay, step in zip(sleeps, (15, 30, 60), strict=True):
        assert step * 0.5 <= delay <= step


def test_429_past_retries_is_a_rate_limit_error(client, emulator, sleeps):
    emulator.set_faults(error_status=429, error_count=100, retry_after=1)
    with pytest.raises(ExtraltRateLimitError) as info:
        client.get_run("run_x")
    assert info.value.status_code == 429
    assert len(sleeps) == 3 and emulator.count_requests() == 4


def test_5xx_then_success(client, emulator, sleeps, caplog):
    run_id = client.create_run("rbt_shoes", budget=5)
    emulator.set_faults(error_status=502, error_count=2, match="GET /v0/extract/runs/*")
    with caplog.at_level(logging.WARNING, logger="extralt_dagster"):
        assert client.get_run(run_id).id == run_id
    assert len(sleeps) == 2 and all(0 <= s <= 60 for s in sleeps)
    assert "retry 1/3" in caplog.text and emulator.api_key not in caplog.text


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_5xx_past_the_bound_is_a_server_error(client, emulator, sleeps, status):
    emulator.set_faults(error_status=status, error_count=100)
    with pytest.raises(ExtraltServerError) as info:
        client.get_run("run_x")
    assert info.value.status_code == status
    assert emulator.count_requests() == 4  # 1 + max_retries


@pytest.mark.parametrize(
    ("retry_after", "bound", "waits"),
    [
        (100, 250, [100.0, 100.0]),  # a third wait would pass the 250 s bound
        (5, 10, [5.0, 5.0]),  # 0 + 5 <= 10 and 5 + 5 <= 10: waits ending at the bound are taken
    ],
    ids=["a_wait_past_the_bound_is_not_taken", "waits_ending_at_the_bound_are_taken"],
)
def test_retries_stay_within_the_total_time_bound(emulator, sleeps, retry_after, bound, waits):
    emulator.set_faults(error_status=503, error_count=100, retry_after=retry_after)
    with (
        ExtraltClient(
            emulator.api_key,
            emulator.url,
            max_retries=10,
            retry_timeout_seconds=bound,
            sleep=sleeps.append,
            rate_limit_per_minute=None,
        ) as c,
        pytest.raises(ExtraltServerError),
    ):
        c.get_run("run_x")
    assert sleeps == waits
    assert emulator.count_requests("GET", "/v0/extract/runs/run_x") == len(waits) + 1


def test_read_timeout_is_retried_for_reads(make_emulator, sleeps):
    emu = make_emulator()
    emu.set_faults(latency_seconds=0.5, match="GET *", error_count=0)
    with (
        ExtraltClient(emu.api_key, emu.url, timeout=0.1, max_retries=1, sleep=sleeps.append) as c,
        pytest.raises(
            ExtraltConnectionError,
            match=r"GET /v0/extract/runs/run_x: .*request_timeout_seconds \(0\.1 s\) \(ReadTimeout\)",
        ),
    ):
        c.get_run("run_x")
    assert len(sleeps) == 1


def test_ambiguous_create_adopts_the_run_it_started(client, emulator):
    # The server creates the run, then answers 502: a blind retry would pay twice.
    emulator.set_faults(
        error_status=502, error_count=1, error_after_handling=True, match="POST /v0/extract/runs"
    )
    run_id = client.create_run("rbt_shoes", budget=5)
    assert len(emulator.runs) == 1 and run_id in emulator.runs
    assert emulator.count_requests(*CREATE) == 1
    assert emulator.count_requests("GET", "/v0/extract/runs") == 1  # the look-up


def test_ambiguous_create_with_no_run_found_is_not_sent_again(client, emulator):
    emulator.set_faults(error_status=502, error_count=1, match="POST /v0/extract/runs")
    with pytest.raises(ExtraltServerError, match="was not re-sent"):
        client.create_run("rbt_shoes", budget=5)
    assert emulator.count_requests(*CREATE) == 1 and emulator.runs == {}


def test_create_read_timeout_is_not_blindly_retried(make_emulator, sleeps):
    emu = make_emulator()
    emu.set_faults(latency_seconds=0.5, match="POST /v0/extract/runs")
    with (
        ExtraltClient(emu.api_key, emu.url, timeout=0.1, max_retries=3, sleep=sleeps.append) as c,
        pytest.raises(ExtraltConnectionError, match=r"(?s)ReadTimeout.*not re-sent"),
    ):
        c.create_run("rbt_shoes", budget=5)
    assert emu.count_requests(*CREATE) == 1 and sleeps == []
    assert emu.count_requests("GET", "/v0/extract/runs") == 1  # it looked before giving up


def test_a_closed_port_names_the_full_path_what_happened_and_what_to_do(
    make_emulator, sleeps, caplog
):
    emu = make_emulator()
    url = emu.url
    emu.stop()  # its port on 127.0.0.1 is closed now
    with ExtraltClient(emu.api_key, url, max_retries=2, sleep=sleeps.append) as c:
        with pytest.raises(ExtraltConnectionError) as info:
            c.create_run("rbt_shoes", budget=5)
        message = str(info.value)
        assert message.startswith(f"Extralt POST /v0/extract/runs: no complete answer from {url}")
        assert f"{url.removeprefix('http://')} refused the connection" in message
        assert "Check EXTRALT_BASE_URL" in message and "extralt-dagster emulator" in message
        assert info.value.cause_kind == "ConnectError"
        assert len(sleeps) == 2  # never reached the server: safe to retry, even a create
        with pytest.raises(ExtraltConnectionError, match="GET /v0/extract/runs/run_x: "):
            c.get_run("run_x")
    assert "Extralt GET /v0/extract/runs/run_x failed (ConnectError); retry 1/2" in caplog.text
    assert emu.requests == []


def test_an_unresolvable_host_is_named_as_a_dns_failure(sleeps):
    # .invalid never resolves (RFC 2606): only a DNS look-up leaves the machine.
    with (
        ExtraltClient(
            "k-secret", "https://nonexistent.invalid", max_retries=1, sleep=sleeps.append
        ) as c,
        pytest.raises(ExtraltConnectionError) as info,
    ):
        c.get_run("run_x")
    message = str(info.value)
    assert message.startswith("Extralt GET /v0/extract/runs/run_x: ")
    assert "the host name 'nonexistent.invalid' did not resolve (DNS)" in message
    assert "Check EXTRALT_BASE_URL" in message and "emulator" not in message
    assert "k-secret" not in message and len(sleeps) == 1


def test_a_connect_timeout_says_so_and_what_to_check(sleeps):
    # A listener that never accepts, its one-deep queue already full: the SYN goes unanswered.
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        host, port = listener.getsockname()
        with (
            socket.create_connection((host, port), timeout=5),
            ExtraltClient(
                "k", f"http://{host}:{port}", connect_timeout=0.2, timeout=2, max_retries=0
            ) as c,
            pytest.raises(ExtraltConnectionError) as info,
        ):
            c.create_run("rbt_shoes", budget=5)
    message = str(info.value)
    assert message.startswith("Extralt POST /v0/extract/runs: ")
    assert f"no connection to {host}:{port} within 0.2 s (ConnectTimeout)" in message
    assert "Check EXTRALT_BASE_URL" in message and info.value.cause_kind == "ConnectTimeout"


def test_client_side_token_bucket_paces_a_burst(emulator, sleeps):
    with ExtraltClient(
        emulator.api_key,
        emulator.url,
        rate_limit_per_minute=120,
        rate_limit_burst=3,
        sleep=sleeps.append,
    ) as c:
        for _ in range(5):
            with pytest.raises(ExtraltNotFoundError):
                c.get_run("run_x")
    assert len(sleeps) == 2 and all(s > 0 for s in sleeps)


def test_user_agent_names_the_package(emulator, client):
    with pytest.raises(ExtraltNotFoundError):
        client.get_run("run_x")
    [request] = emulator.requests
    assert request.user_agent.startswith(f"extralt-dagster/{client_module.__version__} httpx/")


# --- export -----------------------------------------------------------------------------------


def test_download_parquet_into_a_directory(client, emulator, tmp_path):
    run_id = client.create_run("rbt_shoes", budget=40)
    wait_terminal(client, emulator, run_id)
    path = client.download_export(run_id, tmp_path)
    assert path == tmp_path / f"{run_id}.parquet"
    table = pq.read_table(path)
    assert table.num_rows == 40
    assert {"id", "url", "variants", "options", "min_price"} <= set(table.column_names)
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temp file left


def test_download_jsonl_to_a_file_path(client, emulator, tmp_path):
    run_id = client.create_run("rbt_shoes", budget=8)
    wait_terminal(client, emulator, run_id)
    path = client.download_export(run_id, tmp_path / "sub" / "out.jsonl", format="jsonl")
    lines = path.read_text().splitlines()
    assert len(lines) == 8 and json.loads(lines[0])["id"]
    [(count,)] = duckdb.sql(f"select count(*) from read_json('{path}')").fetchall()
    assert count == 8


@pytest.mark.parametrize("hint", ["../../evil.parquet", "/tmp/abs-evil.parquet", "..", ""])
def test_content_disposition_never_decides_where_bytes_land(client, emulator, tmp_path, hint):
    run_id = client.create_run("rbt_shoes", budget=5)
    wait_terminal(client, emulator, run_id)
    emulator.set_faults(content_disposition_filename=hint)
    dest = tmp_path / "exports"
    dest.mkdir()
    path = client.download_export(run_id, dest)
    assert path.parent == dest and path.name == f"{run_id}.parquet"
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["exports", path.name]
    assert not (tmp_path.parent / "evil.parquet").exists()


def test_cut_mid_export_raises_and_leaves_no_partial_file(client, emulator, tmp_path, sleeps):
    run_id = client.create_run("rbt_shoes", budget=300)
    wait_terminal(client, emulator, run_id)
    emulator.set_faults(export_cut_after_bytes=4096)
    with pytest.raises(ExtraltConnectionError):
        client.download_export(run_id, tmp_path)
    assert list(tmp_path.iterdir()) == []
    assert len(sleeps) == 3  # an export is an idempotent GET: retried within the bound


def test_cut_once_then_whole_succeeds(client, emulator, tmp_path):
    run_id = client.create_run("rbt_shoes", budget=300)
    wait_terminal(client, emulator, run_id)
    emulator.set_faults(export_cut_after_bytes=4096, export_count=1)  # only the first is cut
    path = client.download_export(run_id, tmp_path)
    assert pq.read_metadata(path).num_rows == 300
    assert emulator.count_requests("GET", "/v0/extract/captures/export") == 2
    assert [p.name for p in tmp_path.iterdir()] == [path.name]


@pytest.mark.parametrize("fault", ["export_corrupt", "export_truncate"])
def test_corrupt_or_truncated_parquet_is_refused(client, emulator, tmp_path, fault):
    run_id = client.create_run("rbt_shoes", budget=300)
    wait_terminal(client, emulator, run_id)
    emulator.set_faults(**{fault: True})
    with pytest.raises(ExtraltExportError):
        client.download_export(run_id, tmp_path / "x.parquet")
    assert list(tmp_path.iterdir()) == []


def test_export_larger_than_the_cap_is_cut_off(emulator, tmp_path):
    with ExtraltClient(emulator.api_key, emulator.url, max_export_bytes=1000) as c:
        run_id = c.create_run("rbt_shoes", budget=300)
        wait_terminal(c, emulator, run_id)
        with pytest.raises(ExtraltExportError, match="max_export_bytes"):
            c.download_export(run_id, tmp_path)
    assert list(tmp_path.iterdir()) == []


# --- finding the run an ambiguous create started -------------------------------------------

T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z: the frozen emulator's "now" at start


@pytest.fixture
def frozen(make_emulator):
    return make_emulator(speed=0, start_time=T0)


@pytest.fixture
def frozen_client(frozen, sleeps):
    with ExtraltClient(
        frozen.api_key, frozen.url, max_retries=3, sleep=sleeps.append, rate_limit_per_minute=None
    ) as c:
        yield c


URLS = ["https://shoes.example/c/sale"]


def test_find_started_run_adopts_only_the_run_matching_robot_budget_urls_and_time(
    frozen, frozen_client
):
    c = frozen_client
    match = c.create_run("rbt_shoes", URLS, budget=20)
    # Newer runs that differ in one thing each: listed first, none may end the scan.
    decoys = [
        c.create_run("rbt_books", URLS, budget=20),
        c.create_run("rbt_shoes", URLS, budget=21),
        c.create_run("rbt_shoes", ["https://shoes.example/c/new"], budget=20),
        c.create_run("rbt_shoes", None, budget=20),
    ]
    excluded = c.create_run("rbt_shoes", URLS, budget=20)
    frozen.clear_requests()
    found = c.find_started_run("rbt_shoes", 20, URLS, since=T0, exclude={excluded, *decoys[:1]})
    assert found == match
    [listing] = frozen.requests
    assert (listing.method, listing.path, listing.query) == (
        "GET",
        "/v0/extract/runs",
        {"limit": "50"},
    )


@pytest.mark.parametrize(
    ("age", "adopted"),
    [(0, True), (120, True), (120.5, False), (121, False), (3600, False)],
)
def test_find_started_run_allows_120_s_of_clock_skew_and_no_more(
    frozen, frozen_client, age, adopted
):
    """`since` is when the create was sent, by our clock; the run's createdAt is the API's."""
    run_id = frozen_client.create_run("rbt_shoes", budget=5)  # createdAt = T0 exactly
    found = frozen_client.find_started_run("rbt_shoes", 5, None, since=T0 + age)
    assert found == (run_id if adopted else None)


def test_find_started_run_refuses_to_guess_between_two_matches(frozen, frozen_client):
    first = frozen_client.create_run("rbt_shoes", budget=5)
    second = frozen_client.create_run("rbt_shoes", budget=5)
    with pytest.raises(ExtraltAPIError) as info:
        frozen_client.find_started_run("rbt_shoes", 5, None, since=T0)
    assert str(info.value) == (
        "A create request for robot rbt_shoes failed ambiguously and 2 matching runs were "
        f"started since ({second}, {first}). Refusing to guess or start another; check the "
        "Extralt dashboard."
    )


def test_find_started_run_looks_at_the_50_newest_runs_only(frozen, frozen_client):
    oldest = frozen_client.create_run("rbt_shoes", budget=5)
    for _ in range(50):
        frozen_client.create_run("rbt_books", budget=5)
    assert frozen_client.find_started_run("rbt_shoes", 5, None, since=T0) is None
    assert frozen.run(oldest).budget == 5  # it matches: only its age in the listing hides it


# --- restart: never sent twice blindly -------------------------------------------------------


def test_restart_with_a_bad_budget_fails_before_any_request(frozen, frozen_client):
    run_id = frozen_client.create_run("rbt_shoes", budget=5)
    frozen.clear_requests()
    with pytest.raises(ExtraltValidationError, match="budget"):
        frozen_client.restart_run(run_id, budget=0)
    assert frozen.count_requests() == 0


def test_a_restart_answering_502_is_not_sent_again(frozen, frozen_client, sleeps):
    run_id = frozen_client.create_run("rbt_shoes", budget=5)
    frozen.stop_run_externally(run_id)
    frozen.set_faults(error_status=502, error_count=1, match="POST /v0/extract/runs/*/restart")
    with pytest.raises(ExtraltServerError):
        frozen_client.restart_run(run_id)
    assert frozen.count_requests("POST", "/v0/extract/runs/*/restart") == 1 and sleeps == []


def test_a_restart_answer_without_an_id_names_the_request(frozen, frozen_client):
    run_id = frozen_client.create_run("rbt_shoes", budget=5)
    frozen.stop_run_externally(run_id)
    frozen.set_faults(wrong_body='{"run": 1}', match="POST /v0/extract/runs/*/restart")
    with pytest.raises(ExtraltAPIError) as info:
        frozen_client.restart_run(run_id)
    assert str(info.value) == (
        f"Extralt POST /v0/extract/runs/{run_id}/restart answered without a run id."
    )


# --- a create that never reached the server is retried; one that may have is not ---------------


@pytest.mark.parametrize(
    "never_sent", [httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout]
)
def test_a_create_that_never_reached_the_server_is_retried_without_a_look_up(never_sent, sleeps):
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(f"{request.method} {request.url.path}")
        if len(seen) == 1:
            raise never_sent("no connection", request=request)
        return httpx.Response(202, json={"id": "run_1"})

    with ExtraltClient(
        "k",
        "https://api.extralt.com",
        sleep=sleeps.append,
        rate_limit_per_minute=None,
        transport=httpx.MockTransport(handler),
    ) as c:
        assert c.create_run("rbt_shoes", budget=5) == "run_1"
    assert seen == ["POST /v0/extract/runs"] * 2 and len(sleeps) == 1


def test_a_create_refused_with_503_past_its_retries_raises_without_a_look_up(client, emulator):
    """503 means the server did not take the request: no run can have started."""
    emulator.set_faults(error_status=503, error_count=100, match="POST /v0/extract/runs")
    with pytest.raises(ExtraltServerError) as info:
        client.create_run("rbt_shoes", budget=5)
    assert info.value.status_code == 503 and "not re-sent" not in str(info.value)
    assert getattr(info.value, "__notes__", []) == []  # no note about an ambiguous create
    assert emulator.count_requests(*CREATE) == 4  # 1 + max_retries
    assert emulator.count_requests("GET", "/v0/extract/runs") == 0 and emulator.runs == {}


@pytest.mark.parametrize(("end", "expected"), [("high", [1.0, 2.0, 4.0, 8.0]), ("low", [0.0] * 4)])
def test_5xx_backoff_is_full_jitter_under_a_doubling_cap(
    emulator, sleeps, monkeypatch, end, expected
):
    """Each wait is uniform in [0, backoff x 2^try]: pinned to either end, the caps show."""
    monkeypatch.setattr(random, "uniform", (lambda a, b: b) if end == "high" else (lambda a, b: a))
    emulator.set_faults(error_status=503, error_count=4, match="GET /v0/extract/runs/*")
    with (
        ExtraltClient(
            emulator.api_key,
            emulator.url,
            max_retries=4,
            backoff_seconds=1.0,
            sleep=sleeps.append,
            rate_limit_per_minute=None,
        ) as c,
        pytest.raises(ExtraltNotFoundError),
    ):
        c.get_run("run_x")
    assert sleeps == expected


def test_a_create_asks_for_enrichment_only_when_told(client, emulator):
    plain = client.create_run("rbt_shoes", budget=5)
    assert emulator.run(plain).auto_enrich is False
    with pytest.raises(ExtraltValidationError) as info:
        client.create_run("rbt_shoes", budget=5, auto_enrich="yes")
    assert str(info.value) == "auto_enrich must be true or false, got 'yes'."
    assert emulator.count_requests(*CREATE) == 1


# --- what goes over the wire: the bodies the emulator received ---------------------------------


def _bodies(emulator, method, path):
    return [r.json for r in emulator.requests if r.method == method and r.path == path]


def test_a_restart_sends_a_budget_only_when_given_one(frozen, frozen_client):
    """The API documents the restart body as an optional `{"budget": int}`: no budget, no key."""
    run_id = frozen_client.create_run("rbt_shoes", budget=5)
    frozen.stop_run_externally(run_id)
    frozen.clear_requests()
    plain = frozen_client.restart_run(run_id)
    assert _bodies(frozen, "POST", f"/v0/extract/runs/{run_id}/restart") == [None]
    assert frozen.run(plain).budget == 5  # the original's budget, not overridden with null
    frozen.stop_run_externally(plain)
    overridden = frozen_client.restart_run(plain, budget=10)
    assert _bodies(frozen, "POST", f"/v0/extract/runs/{plain}/restart") == [{"budget": 10}]
    assert frozen.run(overridden).budget == 10


def test_a_create_sends_only_the_fields_it_was_given(frozen, frozen_client):
    frozen_client.create_run("rbt_shoes")
    frozen_client.create_run("rbt_shoes", URLS, budget=5, auto_enrich=True)
    assert _bodies(frozen, *CREATE) == [
        {"robot_id": "rbt_shoes"},
        {"robot_id": "rbt_shoes", "start_urls": URLS, "budget": 5, "auto_enrich": True},
    ]


# --- the error tree: branch on the class, not on a string ----------------------------------------


def test_a_refused_connection_is_a_connect_error_and_a_slow_answer_a_read_error(make_emulator):
    closed = make_emulator()
    url = closed.url
    closed.stop()
    with (
        ExtraltClient("k", url, max_retries=0) as c,
        pytest.raises(ExtraltConnectError) as refused,
    ):
        c.get_run("run_x")
    assert not isinstance(refused.value, ExtraltReadError)
    slow = make_emulator()
    slow.set_faults(latency_seconds=0.5, match="GET *")
    with (
        ExtraltClient(slow.api_key, slow.url, timeout=0.1, max_retries=0) as c,
        pytest.raises(ExtraltReadError) as timed_out,
    ):
        c.get_run("run_x")
    assert not isinstance(timed_out.value, ExtraltConnectError)
    assert isinstance(timed_out.value, ExtraltConnectionError)


def test_an_api_error_declares_the_retry_after_it_was_sent(client, emulator):
    emulator.set_faults(error_status=429, error_count=100, retry_after=7)
    with pytest.raises(ExtraltRateLimitError) as info:
        client.get_run("run_x")
    assert info.value.retry_after == 7.0
    emulator.set_faults(error_status=404, error_count=1)
    with pytest.raises(ExtraltNotFoundError) as info:
        client.get_run("run_x")
    assert info.value.retry_after is None


def test_an_ambiguous_create_says_so_in_a_note_and_keeps_its_own_message(client, emulator):
    emulator.set_faults(error_status=502, error_count=1, match="POST /v0/extract/runs")
    with pytest.raises(ExtraltServerError) as info:
        client.create_run("rbt_shoes", budget=5)
    assert (
        str(info.value)
        == info.value.message
        == ("Extralt POST /v0/extract/runs returned 502 (BadGateway: Injected fault).")
    )
    assert info.value.__notes__ == [
        "The create request may still start a run; none was found yet, so it was not re-sent. "
        "A later attempt should call find_started_run() first (the Dagster asset does)."
    ]


def test_an_ambiguous_create_whose_look_up_fails_says_a_run_may_have_started(
    client, emulator, sleeps
):
    # The create lands and answers 502; every look-up answers 502 too.
    emulator.set_faults(
        error_status=502, error_count=100, error_after_handling=True, match="* /v0/extract/runs"
    )
    with pytest.raises(ExtraltAPIError) as info:
        client.create_run("rbt_shoes", budget=5)
    assert str(info.value) == (
        "Creating a run for robot rbt_shoes failed ambiguously (HTTP 502) and the follow-up "
        "look-up failed too (ExtraltServerError). A run may have started: check the Extralt "
        "dashboard before retrying."
    )
    assert isinstance(info.value.__cause__, ExtraltServerError)
    assert emulator.count_requests(*CREATE) == 1 and len(emulator.runs) == 1


def test_adopting_the_run_an_ambiguous_create_started_is_logged_naming_it(client, emulator, caplog):
    emulator.set_faults(
        error_status=502, error_count=1, error_after_handling=True, match="POST /v0/extract/runs"
    )
    with caplog.at_level(logging.WARNING, logger="extralt_dagster.client"):
        run_id = client.create_run("rbt_shoes", budget=5)
    assert [r.getMessage() for r in caplog.records if r.name == "extralt_dagster.client"] == [
        f"Create request for robot rbt_shoes failed ambiguously (HTTP 502); adopting run "
        f"{run_id} that it had already started instead of paying for a second run."
    ]


def test_an_ambiguous_create_with_start_urls_adopts_the_run_of_those_urls(client, emulator):
    emulator.set_faults(
        error_status=502, error_count=1, error_after_handling=True, match="POST /v0/extract/runs"
    )
    run_id = client.create_run("rbt_shoes", URLS, budget=5)
    assert list(emulator.runs) == [run_id]
    assert emulator.count_requests(*CREATE) == 1


def test_a_stop_gives_up_within_its_own_timeout_not_the_clients(client, emulator, sleeps):
    run_id = client.create_run("rbt_shoes", budget=5)
    emulator.set_faults(
        error_status=503, error_count=100, retry_after=2, match="POST /v0/extract/runs/*/stop"
    )
    with pytest.raises(ExtraltServerError):
        client.stop_run(run_id, timeout=1.5)  # the next try would start after 2 s
    assert sleeps == []
    assert emulator.count_requests("POST", f"/v0/extract/runs/{run_id}/stop") == 1


def test_a_create_answer_without_an_id_names_the_request(frozen, frozen_client):
    frozen.set_faults(wrong_body='{"run": 1}', match="POST /v0/extract/runs")
    with pytest.raises(ExtraltAPIError) as info:
        frozen_client.create_run("rbt_shoes", budget=5)
    assert str(info.value) == "Extralt POST /v0/extract/runs answered without a run id."


def test_each_retry_is_logged_with_the_request_the_cause_and_the_wait(emulator, sleeps, caplog):
    emulator.set_faults(error_status=503, error_count=2, retry_after=5, match="GET /v0/*")
    with (
        ExtraltClient(
            emulator.api_key, emulator.url, sleep=sleeps.append, rate_limit_per_minute=None
        ) as c,
        caplog.at_level(logging.WARNING, logger="extralt_dagster.client"),
        pytest.raises(ExtraltNotFoundError),
    ):
        c.get_run("run_x")
    assert [r.getMessage() for r in caplog.records] == [
        f"Extralt GET /v0/extract/runs/run_x failed (HTTP 503); retry {n}/5 in 5.00s"
        for n in (1, 2)
    ]
