"""The poll schedule of `ExtraltRunHandler`, over real HTTP, with time under the test's control.

The emulator's clock is frozen (`speed=0`) and the handler's `clock`/`sleep` are one controlled
clock: each sleep of the poll loop moves both by the same amount, so a run's lifecycle, the
backoff, the heartbeat and the timeout are exact and nothing waits on the wall clock.
"""

import re

import pytest

from extralt_dagster import ExtraltClient, ExtraltTimeoutError, RunStatus
from extralt_dagster.api.run_handler import ExtraltRunHandler, PollSettings

STOP = ("POST", "/v0/extract/runs/*/stop")


class ControlledTime:
    """The poll loop's monotonic clock and sleep; a sleep also advances the emulator's clock."""

    def __init__(self, emulator) -> None:
        self.emulator = emulator
        self.now = 1000.0  # not 0: elapsed time is a difference of two readings
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        assert len(self.sleeps) < 500, "the poll loop does not end"
        self.sleeps.append(seconds)
        self.now += seconds
        self.emulator.clock.advance(seconds)


class RecordingLog:
    def __init__(self) -> None:
        self.lines: list[tuple[str, str]] = []

    def info(self, msg: str) -> None:
        self.lines.append(("info", msg))

    def warning(self, msg: str) -> None:
        self.lines.append(("warning", msg))

    def messages(self, level: str) -> list[str]:
        return [m for lvl, m in self.lines if lvl == level]


@pytest.fixture
def frozen(make_emulator):
    return make_emulator(speed=0)


@pytest.fixture
def client(frozen):
    with ExtraltClient(
        frozen.api_key, frozen.url, max_retries=0, rate_limit_per_minute=None, timeout=5
    ) as c:
        yield c


def follow(client, emulator, run_id):
    time = ControlledTime(emulator)
    log = RecordingLog()
    handler = ExtraltRunHandler(client, run_id, log=log, clock=time.monotonic, sleep=time.sleep)
    return handler, time, log


def test_a_run_is_polled_with_growing_waits_until_it_completes(client, frozen):
    # 100 captures: 2 s starting, then 5 s extracting at 20/s; done at t=7.
    run_id = client.create_run("rbt_shoes", budget=100)
    handler, time, _ = follow(client, frozen, run_id)
    final = handler.wait(PollSettings())
    assert (final.status, final.extracted) == (RunStatus.COMPLETED, 100)
    # Polls at t = 0, 1, 2.5, 4.75 and 8.125: the first terminal answer ends the wait.
    assert time.sleeps == [1.0, 1.5, 2.25, 3.375]
    assert handler.polls == 5 and handler.last_run == final


def test_backoff_grows_to_the_cap_and_the_last_wait_ends_at_the_timeout(client, frozen):
    frozen.set_faults(never_finish=True)
    run_id = client.create_run("rbt_shoes", budget=100)
    handler, time, _ = follow(client, frozen, run_id)
    settings = PollSettings(
        initial_interval_seconds=1, backoff=1.5, interval_seconds=10, timeout_seconds=60
    )
    with pytest.raises(ExtraltTimeoutError):
        handler.wait(settings)
    # 1 x 1.5 each poll up to the 10 s cap; the last wait is what is left of the 60 s.
    assert time.sleeps == [1.0, 1.5, 2.25, 3.375, 5.0625, 7.59375, 10.0, 10.0, 10.0, 9.21875]
    assert time.now == 1060.0 and handler.polls == 11


def test_a_backoff_of_one_polls_at_the_initial_interval(client, frozen):
    frozen.set_faults(never_finish=True)
    handler, time, _ = follow(client, frozen, client.create_run("rbt_shoes", budget=100))
    with pytest.raises(ExtraltTimeoutError):
        handler.wait(PollSettings(initial_interval_seconds=2, backoff=1, timeout_seconds=8.5))
    assert time.sleeps == [2.0, 2.0, 2.0, 2.0, 0.5]


def test_an_initial_interval_above_the_cap_starts_at_the_cap(client, frozen):
    frozen.set_faults(never_finish=True)
    handler, time, _ = follow(client, frozen, client.create_run("rbt_shoes", budget=100))
    with pytest.raises(ExtraltTimeoutError):
        handler.wait(
            PollSettings(initial_interval_seconds=30, interval_seconds=4, timeout_seconds=10)
        )
    assert time.sleeps == [4.0, 4.0, 2.0]


def test_status_changes_are_logged_once_and_a_heartbeat_every_heartbeat_seconds(client, frozen):
    frozen.set_faults(never_finish=True)
    run_id = client.create_run("rbt_shoes", budget=1000)
    handler, _, log = follow(client, frozen, run_id)
    settings = PollSettings(
        initial_interval_seconds=10, interval_seconds=10, heartbeat_seconds=30, timeout_seconds=100
    )
    with pytest.raises(ExtraltTimeoutError):
        handler.wait(settings)
    info = log.messages("info")
    # t=0: starting; t=10: running (the last change); then a heartbeat each 30 s without one.
    assert info[0] == f"Extralt run {run_id} is starting: 0 extracted, 1000 in queue (0s elapsed)"
    assert re.fullmatch(
        rf"Extralt run {run_id} is running: \d+ extracted, .* \(10s elapsed\)", info[1]
    )
    beats = [m for m in info if " still running: " in m]
    assert [re.search(r"(\d+)s elapsed$", m).group(1) for m in beats] == ["40", "70", "100"]
    for beat in beats:
        assert re.fullmatch(
            rf"Extralt run {run_id} still running: \d+ extracted, \d+ in queue, \d+s elapsed", beat
        ), beat
    assert info[2:] == [*beats, f"Stopped Extralt run {run_id}"]


def test_a_timeout_stops_the_run_and_says_so(client, frozen):
    frozen.set_faults(never_finish=True)
    run_id = client.create_run("rbt_shoes", budget=100)
    handler, _, _ = follow(client, frozen, run_id)
    with pytest.raises(ExtraltTimeoutError) as info:
        handler.wait(PollSettings(timeout_seconds=30))
    assert info.value.stopped is True and info.value.run_id == run_id
    message = str(info.value)
    assert message.startswith(
        f"Extralt run {run_id} was still running after 30s (poll_timeout_seconds); it was "
        "stopped so it spends no more credits. "
    )
    assert message.endswith(f"captures were extracted. See {handler.dashboard_url}")
    assert frozen.count_requests(*STOP) == 1
    assert frozen.run(run_id).status == "stopped"


def test_with_stop_on_timeout_off_the_run_is_not_stopped_and_the_error_says_so(client, frozen):
    frozen.set_faults(never_finish=True)
    run_id = client.create_run("rbt_shoes", budget=100)
    handler, _, log = follow(client, frozen, run_id)
    with pytest.raises(ExtraltTimeoutError) as info:
        handler.wait(PollSettings(timeout_seconds=30, stop_on_timeout=False))
    assert info.value.stopped is False
    assert (
        "; it was NOT stopped (stop_on_timeout is off or the stop failed) and may still be "
        "running. "
    ) in str(info.value)
    assert frozen.count_requests(*STOP) == 0
    assert frozen.run(run_id).status == "running"
    assert log.messages("warning") == []


def test_a_stop_that_fails_is_reported_as_not_stopped_with_a_warning(client, frozen):
    frozen.set_faults(never_finish=True, error_status=503, error_count=100, match="POST */stop")
    run_id = client.create_run("rbt_shoes", budget=100)
    handler, _, log = follow(client, frozen, run_id)
    with pytest.raises(ExtraltTimeoutError) as info:
        handler.wait(PollSettings(timeout_seconds=30))
    assert info.value.stopped is False and "it was NOT stopped" in str(info.value)
    [warning] = log.messages("warning")
    assert warning.startswith(f"Could not stop Extralt run {run_id} (ExtraltServerError: ")
    assert warning.endswith(
        f"Stop it by hand at {handler.dashboard_url} so it spends no more credits."
    )
    assert frozen.count_requests(*STOP) == 1  # max_retries=0
    assert frozen.run(run_id).status == "running"


def test_stopping_a_run_that_already_ended_counts_as_stopped(client, frozen):
    run_id = client.create_run("rbt_shoes", budget=5)
    frozen.finish_run(run_id)
    handler, _, log = follow(client, frozen, run_id)
    assert handler.stop() is True
    assert log.lines == []  # a 409: nothing was crawling, nothing to report
    assert frozen.count_requests(*STOP) == 1


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("interval_seconds", 0),
        ("interval_seconds", -1),
        ("initial_interval_seconds", 0),
        ("timeout_seconds", 0),
        ("timeout_seconds", -5),
        ("backoff", 0.99),
    ],
)
def test_poll_settings_refuse_values_that_would_spin_or_never_wait(field, value):
    with pytest.raises(ValueError) as info:
        PollSettings(**{field: value})
    expected = (
        f"backoff must be >= 1, got {value!r}"
        if field == "backoff"
        else (f"{field} must be positive, got {value!r}")
    )
    assert str(info.value) == expected


def test_poll_settings_accept_the_smallest_valid_values():
    settings = PollSettings(
        interval_seconds=0.001, initial_interval_seconds=0.001, timeout_seconds=0.001, backoff=1
    )
    assert settings.backoff == 1


@pytest.mark.parametrize(
    ("timeout", "retry_after", "stops_sent"), [(None, 11, 1), (5.0, 6, 1), (12.0, 6, 3)]
)
def test_a_stop_retries_only_within_its_timeout(frozen, timeout, retry_after, stops_sent):
    """Each failed stop asks to wait `retry_after` s: a retry is sent only while the waits fit
    in the stop's bound (10 s by default). The waits are recorded, not slept."""
    sleeps: list[float] = []
    with ExtraltClient(
        frozen.api_key, frozen.url, max_retries=5, sleep=sleeps.append, rate_limit_per_minute=None
    ) as c:
        run_id = c.create_run("rbt_shoes", budget=100)
        frozen.set_faults(
            error_status=503, error_count=100, retry_after=retry_after, match="POST */stop"
        )
        handler, _, log = follow(c, frozen, run_id)
        stopped = handler.stop() if timeout is None else handler.stop(timeout)
    assert stopped is False and len(log.messages("warning")) == 1
    assert frozen.count_requests(*STOP) == stops_sent
    assert sleeps == [float(retry_after)] * (stops_sent - 1)


def test_a_timeout_stop_is_bounded_by_stop_timeout_seconds(frozen):
    """The stop on timeout retries only within `stop_timeout_seconds` (recorded, not slept)."""
    sleeps: list[float] = []
    frozen.set_faults(never_finish=True)
    with ExtraltClient(
        frozen.api_key, frozen.url, max_retries=5, sleep=sleeps.append, rate_limit_per_minute=None
    ) as c:
        run_id = c.create_run("rbt_shoes", budget=100)
        frozen.set_faults(
            never_finish=True, error_status=503, error_count=100, retry_after=6, match="POST */stop"
        )
        handler, _, _ = follow(c, frozen, run_id)
        with pytest.raises(ExtraltTimeoutError) as info:
            handler.wait(PollSettings(timeout_seconds=5, stop_timeout_seconds=10))
    assert info.value.stopped is False
    assert frozen.count_requests(*STOP) == 2 and sleeps == [6.0]  # 6 fits in 10, 12 does not


def test_a_run_document_without_a_queue_size_is_shown_as_unknown(client, frozen):
    run_id = client.create_run("rbt_shoes", budget=100)
    frozen.set_faults(
        wrong_body=f'{{"_id": "{run_id}", "status": "completed", "extracted": 3}}',
        match="GET /v0/extract/runs/*",
    )
    handler, _, log = follow(client, frozen, run_id)
    assert handler.wait().extracted == 3
    assert log.messages("info") == [
        f"Extralt run {run_id} is completed: 3 extracted, ? in queue (0s elapsed)"
    ]
