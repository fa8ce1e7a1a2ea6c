"""A run as the emulator keeps it, and how it reads: the API's run document, the `RunView`
tests get, and the `ExportSpec` the data generator writes its captures from."""

from dataclasses import dataclass
from typing import Any

PENDING, STARTING, RUNNING, RESTARTING = "pending", "starting", "running", "restarting"
COMPLETED, FAILED, STOPPED = "completed", "failed", "stopped"
STATUSES = (PENDING, STARTING, RUNNING, RESTARTING, COMPLETED, FAILED, STOPPED)
TERMINAL = frozenset({COMPLETED, FAILED, STOPPED})
#: The lifecycle statuses a run can still leave (a forced, unknown status is in neither set).
LIVE = frozenset(STATUSES) - TERMINAL
CREDITS_PER_CAPTURE = 2
#: Who made a run, stopped it or restarted it: a client of the API, a person on the dashboard
#: (the emulator's Python API), or one of the emulator's schedules. The emulator's own record
#: only: the API's run documents never say (the real API's do not).
ORIGINS = ("api", "dashboard", "schedule")
EPS = 1e-9  # float time: a capture count this close to the next whole one has reached it


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
class Run:
    """The state's mutable record of one run; only `EmulatorState` changes it, under its lock."""

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
    origin: str = "api"

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
        return int(self.extracted + EPS)

    @property
    def reported_status(self) -> str:
        """What GET /runs/{id} reports: a forced status, else the lifecycle one."""
        return self.forced_status or self.status

    @property
    def in_queue(self) -> int:
        if self.status == STARTING:
            return self.target
        if self.status == RUNNING:
            return max(0, self.target - self.count)
        return 0


@dataclass
class Schedule:
    """A robot's recurring runs, as set in the dashboard: one every `every_seconds` of the
    emulator's clock from `next_at` on, `runs` of them at most (None: no end). The scheduled runs
    numbered in `failing` (1 = the first) fail partway with `fail_message`."""

    robot_id: str
    every_seconds: float
    next_at: float
    budget: int | None = None
    runs: int | None = None
    failing: frozenset[int] = frozenset()
    fail_message: str = "Robot crashed"
    fired: int = 0
    skipped: int = 0  # fire times the credit balance could not pay for a single capture

    def to_dict(self) -> dict[str, Any]:
        return {
            "robot_id": self.robot_id,
            "every_seconds": self.every_seconds,
            "next_at": self.next_at,
            "budget": self.budget,
            "runs": self.runs,
            "failing": sorted(self.failing),
            "fail_message": self.fail_message,
            "fired": self.fired,
            "skipped": self.skipped,
        }


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
    origin: str  # who created the run: api, dashboard or schedule (never in the API's documents)


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

    def capture_arguments(self) -> dict[str, Any]:
        """The arguments of `write_captures`/`read_captures` that say whose captures these are."""
        return {
            "run_id": self.data_key,
            "count": self.count,
            "host": self.host,
            "currency": self.currency,
            "store": self.store,
            "started_at": self.started_at,
            "ended_at": self.ended_at,
        }


def run_document(r: Run, now: float) -> dict[str, Any]:
    """The run as GET /runs/{id} answers it (times in epoch ms)."""
    end = r.ended_at if r.ended_at is not None else now
    doc: dict[str, Any] = {
        "_id": r.id,
        "status": r.reported_status,
        "extracted": r.count,
        "inQueue": r.in_queue,
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


def run_view(r: Run) -> RunView:
    return RunView(
        id=r.id,
        status=r.reported_status,
        true_status=r.status,
        extracted=r.count,
        target=r.target,
        in_queue=r.in_queue,
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
        origin=r.origin,
    )


def export_spec(r: Run, now: float, capture_rate: float) -> ExportSpec:
    """The run's captures as of `now`. Capture times spread over the running window at the
    capture rate, so the window (and the cached file) is fixed once the count is."""
    count = r.count
    t0 = r.running_at if r.running_at is not None else now
    t1 = t0 + count / capture_rate
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
