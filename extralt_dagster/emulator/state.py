"""Robots, runs and credits, advanced lazily from the clock under one lock.

No thread ticks in the background: every read first replays what happened between the last
read and now (runs leaving the queue, extracting, running out of credits, finishing) as a
small event simulation, so any clock speed or `advance()` gives exact, repeatable state.
"""

import base64
import binascii
import json
import math
import random
import threading
from dataclasses import dataclass, field
from typing import Any

from .clock import EmulatorClock

PENDING, STARTING, RUNNING, RESTARTING = "pending", "starting", "running", "restarting"
COMPLETED, FAILED, STOPPED = "completed", "failed", "stopped"
STATUSES = (PENDING, STARTING, RUNNING, RESTARTING, COMPLETED, FAILED, STOPPED)
LIVE = frozenset({PENDING, STARTING, RUNNING, RESTARTING})
TERMINAL = frozenset({COMPLETED, FAILED, STOPPED})
CREDITS_PER_CAPTURE = 2
_EPS = 1e-9


class ApiError(Exception):
    """An error the API answers with: `{"error": type, "message": message}` and `status`."""

    def __init__(self, status: int, error: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.error = error
        self.message = message


@dataclass(frozen=True)
class Robot:
    id: str
    host: str
    name: str
    country: str = "US"
    currency: str = "USD"
    catalogue_size: int = 1000


DEMO_ROBOTS = (
    Robot("rbt_shoes", "shoes.example", "Shoes Example (US)", "US", "USD", 1200),
    Robot("rbt_outdoor", "outdoor.example", "Outdoor Example (DE)", "DE", "EUR", 800),
    Robot("rbt_books", "books.example", "Books Example (GB)", "GB", "GBP", 2500),
)


@dataclass
class _Run:
    id: str
    seq: int
    robot: Robot
    name: str
    budget: int | None
    start_urls: list[str] | None
    auto_enrich: bool
    created_at: float
    status: str
    since: float  # when the current status began (emulated seconds)
    queued_at: float  # the pending queue is served in (queued_at, seq) order
    target: int
    fail_at: int | None = None
    fail_message: str | None = None
    stall_at: int | None = None
    extracted: float = 0.0
    started_at: float | None = None
    running_at: float | None = None
    ended_at: float | None = None
    restarted_from: str | None = None
    error_message: str | None = None
    stop_reason: str | None = None
    forced_status: str | None = None
    generation: int = 0

    @property
    def goal(self) -> int:
        """Where extraction stops: the target, or earlier for a failing or stalling run."""
        goal = self.target
        for cap in (self.fail_at, self.stall_at):
            if cap is not None:
                goal = min(goal, cap)
        return goal

    @property
    def count(self) -> int:
        return int(self.extracted + _EPS)


@dataclass(frozen=True)
class RunView:
    """A snapshot of one run, for tests and the admin endpoint. Times are emulated epoch s."""

    id: str
    status: str  # what GET /runs/{id} reports (a forced status included)
    true_status: str  # the lifecycle status underneath
    extracted: int
    target: int
    in_queue: int
    robot_id: str
    budget: int | None
    auto_enrich: bool
    start_urls: list[str] | None
    created_at: float
    started_at: float | None
    running_at: float | None
    ended_at: float | None
    restarted_from: str | None
    error_message: str | None
    stop_reason: str | None
    credits_used: int
    generation: int


@dataclass(frozen=True)
class ExportSpec:
    """Everything the data generator needs to write a run's captures as of now."""

    run_id: str
    data_key: str  # the run id, or run id + generation after an in-place restart
    count: int
    host: str
    currency: str
    store: str
    started_at: float
    ended_at: float


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
        self._runs: dict[str, _Run] = {}
        self._live: list[_Run] = []
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
            pool = self._pool()
            if extracting:
                for r in extracting:
                    nxt = min(nxt, t + (r.goal - r.extracted) / rate)
                nxt = min(nxt, t + max(pool, 0.0) / (rate * len(extracting)))
            dt = max(0.0, nxt - t)
            for r in extracting:
                r.extracted = min(float(r.goal), r.extracted + rate * dt)
            t = max(t, nxt)
            if not self._transitions(t, extracting) and t >= now:
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

    def _transitions(self, t: float, extracting: list[_Run]) -> bool:
        changed = False
        for r in list(self._live):
            if r.status == STARTING and r.since + self.starting_seconds <= t + _EPS:
                r.status = RUNNING
                r.since = r.running_at = r.since + self.starting_seconds
                changed = True
            elif r.status == RESTARTING and r.since + self.restarting_seconds <= t + _EPS:
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

    def _end(self, r: _Run, status: str, t: float, *, reason: str | None = None) -> None:
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

    def _mark(self, r: _Run, fail: str | None, stall: bool) -> None:
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

    def create_run(
        self,
        robot_id: str,
        *,
        start_urls: list[str] | None = None,
        budget: int | None = None,
        auto_enrich: bool = False,
        fail: str | None = None,
        stall: bool = False,
    ) -> str:
        """Queue a run; `fail` (an error message) and `stall` arm the run faults."""
        with self._lock:
            now = self._sync()
            robot = self.robots.get(robot_id)
            if robot is None:
                raise ApiError(404, "NotFound", f"Robot {robot_id} not found")
            self._need_credits()
            self._seq += 1
            r = _Run(
                id=self._new_id(),
                seq=self._seq,
                robot=robot,
                name=f"{robot.name} #{self._seq}",
                budget=budget,
                start_urls=list(start_urls) if start_urls else None,
                auto_enrich=auto_enrich,
                created_at=now,
                status=PENDING,
                since=now,
                queued_at=now,
                target=self._target(robot, budget),
            )
            self._mark(r, fail, stall)
            self._runs[r.id] = r
            self._live.append(r)
            self._sync()
            return r.id

    def _get(self, run_id: str) -> _Run:
        r = self._runs.get(run_id)
        if r is None:
            raise ApiError(404, "NotFound", f"Run {run_id} not found")
        return r

    def stop(self, run_id: str) -> None:
        with self._lock:
            now = self._sync()
            r = self._get(run_id)
            if r.status in TERMINAL:
                raise ApiError(409, "Conflict", f"Run {run_id} is already {r.status}")
            self._end(r, STOPPED, now, reason="stopped_by_user")
            self._sync()

    def restart(
        self,
        run_id: str,
        *,
        budget: int | None = None,
        fail: str | None = None,
        stall: bool = False,
    ) -> str:
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
            if self.restart_keeps_id:
                r = old
                r.generation += 1
                r.budget, r.extracted = budget, 0.0
                r.started_at = r.running_at = r.ended_at = None
                r.error_message = r.stop_reason = r.forced_status = None
            else:
                r = _Run(
                    id=self._new_id(),
                    seq=self._seq,
                    robot=old.robot,
                    name=old.name,
                    budget=budget,
                    start_urls=old.start_urls,
                    auto_enrich=old.auto_enrich,
                    created_at=now,
                    status=RESTARTING,
                    since=now,
                    queued_at=now,
                    target=0,
                    restarted_from=old.id,
                )
                self._runs[r.id] = r
            r.status, r.since, r.queued_at = RESTARTING, now, now
            r.target = self._target(r.robot, budget)
            self._mark(r, fail, stall)
            self._live.append(r)
            self._sync()
            return r.id

    def fail(self, run_id: str, message: str) -> None:
        with self._lock:
            now = self._sync()
            r = self._get(run_id)
            if r.status in TERMINAL:
                raise ApiError(409, "Conflict", f"Run {run_id} is already {r.status}")
            r.error_message = message
            self._end(r, FAILED, now)
            self._sync()

    def finish(self, run_id: str) -> None:
        """Complete a live run now, with as many captures as its target and credits allow."""
        with self._lock:
            now = self._sync()
            r = self._get(run_id)
            if r.status in TERMINAL:
                raise ApiError(409, "Conflict", f"Run {run_id} is already {r.status}")
            if r.started_at is None:
                r.started_at = now
            if r.running_at is None:
                r.running_at = now
            room = max(0, math.floor(self._pool() + r.extracted + _EPS))
            r.extracted = float(min(r.target, room))
            self._end(r, COMPLETED, now)
            self._sync()

    def force_status(self, run_id: str, status: str | None) -> None:
        with self._lock:
            self._get(run_id).forced_status = status

    def add_robot(self, robot: Robot) -> None:
        with self._lock:
            self.robots[robot.id] = robot

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

    def _in_queue(self, r: _Run) -> int:
        if r.status == STARTING:
            return r.target
        if r.status == RUNNING:
            return max(0, r.target - r.count)
        return 0

    def _doc(self, r: _Run, now: float) -> dict[str, Any]:
        end = r.ended_at if r.ended_at is not None else now
        doc: dict[str, Any] = {
            "_id": r.id,
            "status": r.forced_status or r.status,
            "extracted": r.count,
            "inQueue": self._in_queue(r),
            "robotId": r.robot.id,
            "robotName": r.robot.name,
            "name": r.name,
            "budget": r.budget,
            "autoEnrich": r.auto_enrich,
            "createdAt": _ms(r.created_at),
            "startedAt": None if r.started_at is None else _ms(r.started_at),
            "duration": 0 if r.started_at is None else _ms(end) - _ms(r.started_at),
            "startUrls": list(r.start_urls or []),
            # Undocumented extras, as the real documents carry more than the docs list.
            "finishedAt": None if r.ended_at is None else _ms(r.ended_at),
            "updatedAt": _ms(max(r.since, r.created_at)),
            "creditsUsed": r.count * CREDITS_PER_CAPTURE,
            "restartedFrom": r.restarted_from,
            "host": r.robot.host,
            "country": r.robot.country,
        }
        if r.status == FAILED:
            doc["errorMessage"] = r.error_message
        if r.stop_reason:
            doc["stopReason"] = r.stop_reason
        return doc

    def run_doc(self, run_id: str) -> dict[str, Any]:
        with self._lock:
            now = self._sync()
            return self._doc(self._get(run_id), now)

    def list_docs(
        self,
        *,
        limit: int,
        cursor: str | None,
        robot_id: str | None = None,
        status: str | None = None,
    ) -> tuple[list[dict[str, Any]], str | None]:
        """Newest first; the cursor names the last row's sequence number, so pages stay stable
        while new runs arrive."""
        before = _decode_cursor(cursor, "runs")["before"] if cursor else None
        with self._lock:
            now = self._sync()
            runs = sorted(self._runs.values(), key=lambda r: r.seq, reverse=True)
            rows = [
                r
                for r in runs
                if (before is None or r.seq < before)
                and (robot_id is None or r.robot.id == robot_id)
                and (status is None or (r.forced_status or r.status) == status)
            ]
            page = rows[:limit]
            more = len(rows) > limit
            nxt = _encode_cursor("runs", before=page[-1].seq) if more and page else None
            return [self._doc(r, now) for r in page], nxt

    def _view(self, r: _Run) -> RunView:
        return RunView(
            id=r.id,
            status=r.forced_status or r.status,
            true_status=r.status,
            extracted=r.count,
            target=r.target,
            in_queue=self._in_queue(r),
            robot_id=r.robot.id,
            budget=r.budget,
            auto_enrich=r.auto_enrich,
            start_urls=list(r.start_urls) if r.start_urls else None,
            created_at=r.created_at,
            started_at=r.started_at,
            running_at=r.running_at,
            ended_at=r.ended_at,
            restarted_from=r.restarted_from,
            error_message=r.error_message,
            stop_reason=r.stop_reason,
            credits_used=r.count * CREDITS_PER_CAPTURE,
            generation=r.generation,
        )

    def view(self, run_id: str) -> RunView:
        with self._lock:
            self._sync()
            r = self._runs.get(run_id)
            if r is None:
                raise KeyError(run_id)
            return self._view(r)

    def views(self) -> dict[str, RunView]:
        with self._lock:
            self._sync()
            return {r.id: self._view(r) for r in sorted(self._runs.values(), key=lambda r: r.seq)}

    def export_spec(self, run_id: str) -> ExportSpec:
        """The run's captures as of now. Capture times spread over the running window at the
        capture rate, so the window (and the cached file) is fixed once the count is."""
        with self._lock:
            now = self._sync()
            r = self._get(run_id)
            count = r.count
            t0 = r.running_at if r.running_at is not None else now
            t1 = t0 + count / self.capture_rate
            if r.ended_at is not None:
                t1 = max(t0, min(t1, r.ended_at))
            return ExportSpec(
                run_id=r.id,
                data_key=r.id if r.generation == 0 else f"{r.id}~{r.generation}",
                count=count,
                host=r.robot.host,
                currency=r.robot.currency,
                store=r.robot.name,
                started_at=t0,
                ended_at=t1,
            )


def _ms(seconds: float) -> int:
    return round(seconds * 1000)


def _encode_cursor(kind: str, **values: Any) -> str:
    raw = json.dumps({"k": kind, **values}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(cursor: str, kind: str) -> dict[str, Any]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        data = json.loads(raw)
        if not isinstance(data, dict) or data.get("k") != kind:
            raise ValueError(cursor)
        return data
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise ApiError(400, "BadRequest", f"Invalid cursor {cursor!r}") from None


def encode_cursor(kind: str, **values: Any) -> str:
    return _encode_cursor(kind, **values)


def decode_cursor(cursor: str, kind: str) -> dict[str, Any]:
    return _decode_cursor(cursor, kind)
