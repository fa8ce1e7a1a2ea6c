"""One object that can wait for an Extralt run and stop it. No Dagster in here.

The asset layer decides *which* run to follow (create, resume or restart); this module only
follows one, with an adaptive poll that is cheap on long runs and quick on short ones.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from .client import ExtraltClient
from .errors import ExtraltConflictError, ExtraltError, ExtraltTimeoutError
from .models import ExtraltRun, RunStatus

logger = logging.getLogger("extralt_dagster.run_handler")


class LogSink(Protocol):
    def info(self, msg: str) -> None: ...
    def warning(self, msg: str) -> None: ...


@dataclass(frozen=True)
class PollSettings:
    """How to wait: start at `initial_interval_seconds`, grow by `backoff` up to `interval_seconds`."""

    interval_seconds: float = 10.0
    initial_interval_seconds: float = 1.0
    backoff: float = 1.5
    timeout_seconds: float = 6 * 3600.0
    heartbeat_seconds: float = 60.0
    stop_on_timeout: bool = True
    stop_timeout_seconds: float = 10.0

    def __post_init__(self) -> None:
        for name in ("interval_seconds", "initial_interval_seconds", "timeout_seconds"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)!r}")
        if self.backoff < 1:
            raise ValueError(f"backoff must be >= 1, got {self.backoff!r}")


class ExtraltRunHandler:
    """Follows one Extralt run: poll to a terminal status, or stop it."""

    def __init__(
        self,
        client: ExtraltClient,
        run_id: str,
        *,
        log: LogSink | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.client = client
        self.run_id = run_id
        self.log: LogSink = log or logger
        self.polls = 0
        self.last_run: ExtraltRun | None = None
        self._clock = clock
        self._sleep = sleep

    @property
    def dashboard_url(self) -> str:
        return self.client.dashboard_url(self.run_id)

    def poll(self) -> ExtraltRun:
        run = self.client.get_run(self.run_id)
        self.polls += 1
        self.last_run = run
        return run

    def wait(self, settings: PollSettings = PollSettings()) -> ExtraltRun:
        """Poll until terminal and return the final run; on timeout stop it and raise.

        Unknown statuses raise `ExtraltUnknownStatusError` from the client: never treated as done.
        """
        started = self._clock()
        interval = min(settings.initial_interval_seconds, settings.interval_seconds)
        last_status: RunStatus | None = None
        last_heartbeat = started
        while True:
            run = self.poll()
            elapsed = self._clock() - started
            if run.status is not last_status:
                self.log.info(_status_line(run, elapsed))
                last_status = run.status
                last_heartbeat = self._clock()
            elif self._clock() - last_heartbeat >= settings.heartbeat_seconds:
                self.log.info(
                    f"Extralt run {run.id} still {run.status.value}: {run.extracted} extracted, "
                    f"{_fmt(run.in_queue)} in queue, {elapsed:.0f}s elapsed"
                )
                last_heartbeat = self._clock()
            if run.status.is_terminal:
                return run
            if elapsed >= settings.timeout_seconds:
                stopped = settings.stop_on_timeout and self.stop(settings.stop_timeout_seconds)
                action = (
                    "it was stopped so it spends no more credits"
                    if stopped
                    else "it was NOT stopped (stop_on_timeout is off or the stop failed) and may "
                    "still be running"
                )
                raise ExtraltTimeoutError(
                    f"Extralt run {run.id} was still {run.status.value} after "
                    f"{settings.timeout_seconds:.0f}s (poll_timeout_seconds); {action}. "
                    f"{run.extracted} captures were extracted. See {self.dashboard_url}",
                    run_id=run.id,
                    stopped=stopped,
                )
            remaining = settings.timeout_seconds - elapsed
            self._sleep(max(0.0, min(interval, remaining)))
            interval = min(settings.interval_seconds, interval * settings.backoff)

    def stop(self, timeout_seconds: float = 10.0) -> bool:
        """Best-effort stop, bounded by `timeout_seconds`; True if the run is no longer live.

        Never raises: it runs on failure paths, where the original error must stay visible.
        """
        try:
            self.client.stop_run(self.run_id, timeout=timeout_seconds)
        except ExtraltConflictError:
            return True  # already terminal: nothing is crawling
        except (ExtraltError, OSError) as exc:
            self.log.warning(
                f"Could not stop Extralt run {self.run_id} ({type(exc).__name__}: {exc}). "
                f"Stop it by hand at {self.dashboard_url} so it spends no more credits."
            )
            return False
        self.log.info(f"Stopped Extralt run {self.run_id}")
        return True


def _fmt(value: object) -> str:
    return "?" if value is None else str(value)


def _status_line(run: ExtraltRun, elapsed: float) -> str:
    if run.status is RunStatus.PENDING:
        return (
            f"Extralt run {run.id} is pending: queued behind the plan's concurrency limit "
            f"({elapsed:.0f}s elapsed)"
        )
    return (
        f"Extralt run {run.id} is {run.status.value}: {run.extracted} extracted, "
        f"{_fmt(run.in_queue)} in queue ({elapsed:.0f}s elapsed)"
    )
