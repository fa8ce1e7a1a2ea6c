"""Robots, runs, schedules and credits, advanced lazily from the clock under one lock.

No thread ticks in the background: every read first replays what happened between the last
read and now (schedules creating runs, runs leaving the queue, extracting, running out of
credits, finishing) as a small event simulation, so any clock speed or `advance()` gives exact,
repeatable state.
"""

import math
import random
import threading
from collections import Counter
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any

from .clock import EmulatorClock
from .cursors import decode_cursor, encode_cursor
from .errors import ApiError
from .runs import (
    COMPLETED,
    CREDITS_PER_CAPTURE,
    DEMO_ROBOTS,
    EPS,
    FAILED,
    ORIGINS,
    PENDING,
    RESTARTING,
    RUNNING,
    STARTING,
    STATUSES,
    STOPPED,
    TERMINAL,
    ExportSpec,
    Robot,
    Run,
    RunView,
    Schedule,
    export_spec,
    run_document,
    run_view,
)

__all__ = [
    "DEMO_ROBOTS",
    "ORIGINS",
    "STATUSES",
    "ApiError",
    "EmulatorState",
    "Robot",
    "RunView",
    "Schedule",
]

#: What `counts()` counts, each by origin.
ACTIONS = ("created", "stopped", "restarted")


@dataclass
class EmulatorState:
    """`seed` None (the default): run ids are random, so no two emulator processes ever hand out
    the same id. An int: ids repeat from one emulator to the next, for benchmarks and replays."""

    clock: EmulatorClock
    seed: int | None = None
    concurrency_limit: int | None = 1
    credits: int = 10_000_000
    capture_rate: float = 20.0
    starting_seconds: float = 2.0
    restarting_seconds: float = 1.0
    restart_keeps_id: bool = False
    robots: dict[str, Robot] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __post_init__(self) -> None:
        if self.capture_rate <= 0:
            raise ValueError("capture_rate must be > 0")
        if self.concurrency_limit is not None and self.concurrency_limit < 1:
            raise ValueError("concurrency_limit must be >= 1, or None for no limit")
        self._credits_total = int(self.credits)  # credits ever granted; spending is derived
        self._runs: dict[str, Run] = {}
        self._live: list[Run] = []
        self._schedules: dict[str, Schedule] = {}
        self._counts: Counter[tuple[str, str]] = Counter()
        self._seq = 0
        self._rng: random.Random = (
            random.SystemRandom()
            if self.seed is None
            else random.Random(f"extralt-emulator:{self.seed}")
        )
        self._t = self.clock.now()
        if not self.robots:
            self.robots = {r.id: r for r in DEMO_ROBOTS}

    # --- The lazy simulation ------------------------------------------------------------

    def _sync(self) -> float:
        """Bring every run up to the clock's now; call with the lock held."""
        now = max(self.clock.now(), self._t)
        t = self._t
        rate = self.capture_rate
        for _ in range(1_000_000):
            self._admit(t)
            nxt = now
            extracting = [
                r for r in self._live if r.status == RUNNING and r.extracted < r.goal - 1e-3
            ]
            for r in self._live:
                if r.status == STARTING:
                    nxt = min(nxt, r.since + self.starting_seconds)
                elif r.status == RESTARTING:
                    nxt = min(nxt, r.since + self.restarting_seconds)
            for sched in self._schedules.values():
                if sched.runs is None or sched.fired < sched.runs:
                    nxt = min(nxt, max(t, sched.next_at))
            pool = self._pool()
            if extracting:
                for r in extracting:
                    nxt = min(nxt, t + (r.goal - r.extracted) / rate)
                nxt = min(nxt, t + max(pool, 0.0) / (rate * len(extracting)))
            dt = max(0.0, nxt - t)
            for r in extracting:
                r.extracted = min(float(r.goal), r.extracted + rate * dt)
            t = max(t, nxt)
            changed = self._transitions(t, extracting)
            if not self._fire_schedules(t) and not changed and t >= now:
                break
        self._t = t
        return t

    def _pool(self) -> float:
        """Captures the remaining credits can still pay for."""
        spent = sum(r.extracted for r in self._runs.values())
        return self._credits_total // CREDITS_PER_CAPTURE - spent

    def _admit(self, t: float) -> None:
        limit = self.concurrency_limit
        busy = sum(1 for r in self._live if r.status in (STARTING, RUNNING))
        queue = sorted(
            (r for r in self._live if r.status == PENDING), key=lambda r: (r.queued_at, r.seq)
        )
        for r in queue:
            if limit is not None and busy >= limit:
                break
            r.status, r.since, r.started_at = STARTING, t, t
            busy += 1

    def _transitions(self, t: float, extracting: list[Run]) -> bool:
        changed = False
        for r in list(self._live):
            if r.status == STARTING and r.since + self.starting_seconds <= t + EPS:
                r.status = RUNNING
                r.since = r.running_at = r.since + self.starting_seconds
                changed = True
            elif r.status == RESTARTING and r.since + self.restarting_seconds <= t + EPS:
                r.status = PENDING
                r.since = r.queued_at = r.since + self.restarting_seconds
                changed = True
            elif r.status == RUNNING and r.extracted >= r.goal - 1e-3:  # float time: snap
                r.extracted = float(r.goal)
                if r.fail_at is not None and r.goal == r.fail_at:
                    r.error_message = r.fail_message or "Robot crashed"
                    self._end(r, FAILED, t)
                    changed = True
                elif r.stall_at is None or r.goal != r.stall_at:
                    self._end(r, COMPLETED, t)
                    changed = True
        if extracting and self._pool() <= 1e-6:
            for r in extracting:
                if r.status == RUNNING and r.extracted < r.goal:
                    r.extracted = float(r.count)
                    self._end(r, COMPLETED, t, reason="credits_exhausted")
                    changed = True
        return changed

    def _fire_schedules(self, t: float) -> bool:
        """Create the runs schedules owe at `t` (each at its own fire time); whether any was."""
        fired = False
        for sched in self._schedules.values():
            while (sched.runs is None or sched.fired < sched.runs) and sched.next_at <= t + EPS:
                at = sched.next_at
                sched.next_at = at + sched.every_seconds
                robot = self.robots.get(sched.robot_id)
                if robot is None or self._pool() < 1 - 1e-6:
                    sched.skipped += 1
                    continue
                sched.fired += 1
                fail = sched.fail_message if sched.fired in sched.failing else None
                self._seq += 1
                r = self._add_run(
                    robot, f"{robot.name} #{self._seq}", sched.budget, None, False, at
                )
                r.origin = "schedule"
                self._enqueue(r, PENDING, at, sched.budget, fail, False)
                self._counts["created", "schedule"] += 1
                fired = True
        return fired

    def _end(self, r: Run, status: str, t: float, *, reason: str | None = None) -> None:
        r.extracted = float(r.count)
        r.status, r.since, r.ended_at = status, t, t
        r.stop_reason = reason
        if r in self._live:
            self._live.remove(r)

    # --- Runs ---------------------------------------------------------------------------

    def _new_id(self) -> str:
        while True:
            run_id = f"run_{self._rng.getrandbits(96):024x}"
            if run_id not in self._runs:
                return run_id

    def _target(self, robot: Robot, budget: int | None) -> int:
        return budget if budget is not None else robot.catalogue_size

    def _mark(self, r: Run, fail: str | None, stall: bool) -> None:
        """Arm the run faults: fail 40% of the way in, or stall halfway and never finish."""
        r.fail_message = fail
        r.fail_at = None if fail is None else max(1, (r.target * 2) // 5) if r.target else 0
        r.stall_at = r.target // 2 if stall else None

    def _need_credits(self) -> None:
        if self._pool() < 1 - 1e-6:
            raise ApiError(
                402,
                "InsufficientCredits",
                f"Not enough credits: a capture costs {CREDITS_PER_CAPTURE} and the balance is "
                f"{self._balance()}. Top up on the dashboard.",
            )

    def _add_run(
        self,
        robot: Robot,
        name: str,
        budget: int | None,
        start_urls: list[str] | None,
        auto_enrich: bool,
        now: float,
        restarted_from: str | None = None,
    ) -> Run:
        """A new run with a fresh id, created now; `_queue` puts it in the queue."""
        r = Run(
            id=self._new_id(),
            seq=self._seq,
            robot=robot,
            name=name,
            budget=budget,
            start_urls=start_urls,
            auto_enrich=auto_enrich,
            created_at=now,
            status=PENDING,
            since=now,
            queued_at=now,
            target=0,
            restarted_from=restarted_from,
        )
        self._runs[r.id] = r
        return r

    def _enqueue(
        self, r: Run, status: str, now: float, budget: int | None, fail: str | None, stall: bool
    ) -> None:
        """Put `r` in the queue as of now, with its target and run faults."""
        r.status, r.since, r.queued_at = status, now, now
        r.target = self._target(r.robot, budget)
        self._mark(r, fail, stall)
        self._live.append(r)

    def _queue(
        self, r: Run, status: str, now: float, budget: int | None, fail: str | None, stall: bool
    ) -> str:
        """`_enqueue`, then the simulation brought up to now; the run's id."""
        self._enqueue(r, status, now, budget, fail, stall)
        self._sync()
        return r.id

    def create_run(
        self,
        robot_id: str,
        *,
        start_urls: list[str] | None = None,
        budget: int | None = None,
        auto_enrich: bool = False,
        fail: str | None = None,
        stall: bool = False,
        origin: str = "api",
    ) -> str:
        """Queue a run; `fail` (an error message) and `stall` arm the run faults. `origin` says
        who made it (`api`, or `dashboard` for a run a person started), for `counts()`."""
        _check_origin(origin)
        with self._lock:
            now = self._sync()
            robot = self.robots.get(robot_id)
            if robot is None:
                raise ApiError(404, "NotFound", f"Robot {robot_id} not found")
            self._need_credits()
            self._seq += 1
            name = f"{robot.name} #{self._seq}"
            urls = list(start_urls) if start_urls else None
            r = self._add_run(robot, name, budget, urls, auto_enrich, now)
            r.origin = origin
            self._counts["created", origin] += 1
            return self._queue(r, PENDING, now, budget, fail, stall)

    def _get(self, run_id: str) -> Run:
        r = self._runs.get(run_id)
        if r is None:
            raise ApiError(404, "NotFound", f"Run {run_id} not found")
        return r

    def _unended(self, run_id: str) -> Run:
        """The run, if it has not ended yet: a 409 for an ended one."""
        r = self._get(run_id)
        if r.status in TERMINAL:
            raise ApiError(409, "Conflict", f"Run {run_id} is already {r.status}")
        return r

    def stop(self, run_id: str, *, by: str = "api") -> None:
        _check_origin(by)
        with self._lock:
            now = self._sync()
            self._end(self._unended(run_id), STOPPED, now, reason="stopped_by_user")
            self._counts["stopped", by] += 1
            self._sync()

    def restart(
        self,
        run_id: str,
        *,
        budget: int | None = None,
        fail: str | None = None,
        stall: bool = False,
        by: str = "api",
    ) -> str:
        _check_origin(by)
        with self._lock:
            now = self._sync()
            old = self._get(run_id)
            if old.status not in TERMINAL:
                raise ApiError(
                    409, "Conflict", f"Run {run_id} is {old.status}; only ended runs restart"
                )
            self._need_credits()
            budget = old.budget if budget is None else budget
            self._seq += 1
            self._counts["restarted", by] += 1
            if self.restart_keeps_id:
                r = old
                r.generation += 1
                r.budget, r.extracted = budget, 0.0
                r.started_at = r.running_at = r.ended_at = None
                r.error_message = r.stop_reason = r.forced_status = None
            else:
                r = self._add_run(
                    old.robot, old.name, budget, old.start_urls, old.auto_enrich, now, old.id
                )
                r.origin = by
            return self._queue(r, RESTARTING, now, budget, fail, stall)

    def fail(self, run_id: str, message: str) -> None:
        with self._lock:
            now = self._sync()
            r = self._unended(run_id)
            r.error_message = message
            self._end(r, FAILED, now)
            self._sync()

    def finish(self, run_id: str) -> None:
        """Complete a live run now, with as many captures as its target and credits allow."""
        with self._lock:
            now = self._sync()
            r = self._unended(run_id)
            if r.started_at is None:
                r.started_at = now
            if r.running_at is None:
                r.running_at = now
            room = max(0, math.floor(self._pool() + r.extracted + EPS))
            r.extracted = float(min(r.target, room))
            self._end(r, COMPLETED, now)
            self._sync()

    def force_status(self, run_id: str, status: str | None) -> None:
        with self._lock:
            self._get(run_id).forced_status = status

    def add_robot(self, robot: Robot) -> None:
        with self._lock:
            self.robots[robot.id] = robot

    # --- Schedules ----------------------------------------------------------------------

    def set_schedule(
        self,
        robot_id: str,
        every_seconds: float,
        *,
        budget: int | None = None,
        runs: int | None = None,
        failing: Collection[int] = (),
        fail_message: str = "Robot crashed",
        first_in: float | None = None,
    ) -> Schedule:
        """Give a robot recurring runs: the first `first_in` seconds from now (default: one
        interval), then one every `every_seconds`; it replaces the robot's schedule."""
        if isinstance(every_seconds, bool) or not every_seconds > 0:
            raise ValueError(f"every_seconds must be > 0, got {every_seconds!r}")
        if budget is not None and (isinstance(budget, bool) or int(budget) < 1):
            raise ValueError(f"budget must be a positive count of captures, got {budget!r}")
        if runs is not None and (isinstance(runs, bool) or int(runs) < 0):
            raise ValueError(f"runs must be >= 0 or None for no end, got {runs!r}")
        if any(isinstance(n, bool) or int(n) < 1 for n in failing):
            raise ValueError(f"failing counts scheduled runs from 1, got {sorted(failing)!r}")
        if first_in is not None and first_in < 0:
            raise ValueError(f"first_in must be >= 0, got {first_in!r}")
        with self._lock:
            if robot_id not in self.robots:
                raise ApiError(404, "NotFound", f"Robot {robot_id} not found")
            now = self._sync()
            sched = Schedule(
                robot_id=robot_id,
                every_seconds=float(every_seconds),
                next_at=now + float(every_seconds if first_in is None else first_in),
                budget=None if budget is None else int(budget),
                runs=None if runs is None else int(runs),
                failing=frozenset(int(n) for n in failing),
                fail_message=fail_message,
            )
            self._schedules[robot_id] = sched
            self._sync()  # a schedule due at once (first_in=0) fires now
            return sched

    def clear_schedule(self, robot_id: str) -> bool:
        """Remove a robot's schedule; whether it had one."""
        with self._lock:
            self._sync()
            return self._schedules.pop(robot_id, None) is not None

    def schedules(self) -> dict[str, dict[str, Any]]:
        with self._lock:
            self._sync()
            return {k: s.to_dict() for k, s in self._schedules.items()}

    def counts(self) -> dict[str, dict[str, int]]:
        """Runs created, stopped and restarted, each by origin (api, dashboard, schedule)."""
        with self._lock:
            self._sync()
            return {a: {o: self._counts[a, o] for o in ORIGINS} for a in ACTIONS}

    # --- Credits ------------------------------------------------------------------------

    def _balance(self) -> int:
        used = sum(r.count for r in self._runs.values()) * CREDITS_PER_CAPTURE
        return self._credits_total - used

    def balance(self) -> int:
        with self._lock:
            self._sync()
            return self._balance()

    def set_balance(self, credits: int) -> None:
        with self._lock:
            self._sync()
            self._credits_total += int(credits) - self._balance()

    # --- Reads --------------------------------------------------------------------------

    def run_doc(self, run_id: str) -> dict[str, Any]:
        with self._lock:
            now = self._sync()
            return run_document(self._get(run_id), now)

    def list_docs(
        self,
        *,
        limit: int,
        cursor: str | None,
        robot_id: str | None = None,
        status: str | None = None,
        oldest_first: bool = False,
    ) -> tuple[list[dict[str, Any]], str | None]:
        """Newest first (or oldest first); the cursor names the last row's sequence number, so
        pages stay stable while new runs arrive."""
        past = decode_cursor(cursor, "runs")["past"] if cursor else None
        with self._lock:
            now = self._sync()
            runs = sorted(self._runs.values(), key=lambda r: r.seq, reverse=not oldest_first)
            rows = [
                r
                for r in runs
                if (past is None or (r.seq > past if oldest_first else r.seq < past))
                and (robot_id is None or r.robot.id == robot_id)
                and (status is None or r.reported_status == status)
            ]
            page = rows[:limit]
            more = len(rows) > limit
            nxt = encode_cursor("runs", past=page[-1].seq) if more and page else None
            return [run_document(r, now) for r in page], nxt

    def view(self, run_id: str) -> RunView:
        with self._lock:
            self._sync()
            r = self._runs.get(run_id)
            if r is None:
                raise KeyError(run_id)
            return run_view(r)

    def views(self) -> dict[str, RunView]:
        with self._lock:
            self._sync()
            return {r.id: run_view(r) for r in sorted(self._runs.values(), key=lambda r: r.seq)}

    def export_spec(self, run_id: str) -> ExportSpec:
        """The run's captures as of now (see `runs.export_spec`)."""
        with self._lock:
            now = self._sync()
            return export_spec(self._get(run_id), now, self.capture_rate)


def _check_origin(origin: str) -> None:
    if origin not in ORIGINS:
        raise ValueError(f"origin must be one of {', '.join(ORIGINS)}, got {origin!r}")
