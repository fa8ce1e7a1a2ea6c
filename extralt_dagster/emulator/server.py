"""The emulator itself: `Emulator`, its lifecycle and the Python API tests use, served by uvicorn.

`Emulator` runs uvicorn in a background thread on 127.0.0.1 and exposes the state, the clock
and the faults to tests. Everything a client sees goes over real HTTP: the routes are in
`app`, the gate in front of them (recording, auth, faults, rate limit) in `gate`.
"""

import fnmatch
import logging
import os
import shutil
import socket
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import uvicorn

from .app import build_app
from .clock import EmulatorClock
from .datagen import DEFAULT_CATALOGUE, Catalogue
from .exports import EmulatorAbort, ExportCache
from .faults import FaultInjector, Faults
from .gate import Gate, RateLimiter, RecordedRequest, RequestLog
from .state import EmulatorState, Robot, RunView, Schedule

DEMO_API_KEY = "extralt-demo-key"


#: The orders `GET /v0/extract/runs` can list runs in.
RUNS_ORDERS = ("newest", "oldest")


class Emulator:
    """A local, stateful Extralt API on real HTTP. Use as a context manager, or start()/stop().

    Time is `clock` (emulated, `speed` x real time, plus `clock.advance()`); runs move through
    their lifecycle whenever anything reads them. Faults are switched on with `set_faults()`.
    Run ids are random, unique per emulator, unless `seed` is given: then they repeat from one
    emulator to the next. `catalogue` shapes every robot's products (variants and offers per
    capture). `GET /runs/<id>` is a read-only HTML page of the run, for people. `set_schedule()`
    gives a robot runs that the emulator creates by itself as its clock advances, and
    `runs_page_size` is the most runs one page of `GET /v0/extract/runs` holds, and
    `runs_order` its order: "newest" first (the default) or "oldest" first (the docs give none).
    """

    def __init__(
        self,
        api_key: str = DEMO_API_KEY,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        speed: float = 1.0,
        seed: int | None = None,
        concurrency_limit: int | None = 1,
        credits: int = 10_000_000,
        rate_limit: tuple[float, int] | None = (120, 30),
        capture_rate: float = 20.0,
        starting_seconds: float = 2.0,
        restarting_seconds: float = 1.0,
        restart_keeps_id: bool = False,
        cache_dir: str | os.PathLike[str] | None = None,
        start_time: float | None = None,
        robots: list[Robot] | None = None,
        catalogue: Catalogue = DEFAULT_CATALOGUE,
        runs_page_size: int = 100,
        runs_order: str = "newest",
    ) -> None:
        if not api_key:
            raise ValueError("api_key must be a non-empty string")
        if isinstance(runs_page_size, bool) or not isinstance(runs_page_size, int):
            raise ValueError(f"runs_page_size must be an integer, got {runs_page_size!r}")
        if runs_page_size < 1:
            raise ValueError(f"runs_page_size must be >= 1, got {runs_page_size}")
        if runs_order not in RUNS_ORDERS:
            raise ValueError(f"runs_order must be one of {RUNS_ORDERS}, got {runs_order!r}")
        self.runs_page_size = runs_page_size
        self.runs_order = runs_order
        self.api_key = api_key
        self.host = host
        # No seed: random run ids, unique per process (a restarted emulator must never hand out
        # an id a warehouse already holds). A seed repeats ids, for benchmarks and replays.
        # Captures, faults' error_rate and the export cache are seeded either way (0 by default):
        # a run's data depends only on its id and this.
        self.seed = seed
        self.data_seed = 0 if seed is None else seed
        self.clock = EmulatorClock(speed, start=start_time)
        self.state = EmulatorState(
            self.clock,
            seed=seed,
            concurrency_limit=concurrency_limit,
            credits=credits,
            capture_rate=capture_rate,
            starting_seconds=starting_seconds,
            restarting_seconds=restarting_seconds,
            restart_keeps_id=restart_keeps_id,
            robots={r.id: r for r in robots} if robots else {},
        )
        self._injector = FaultInjector(seed=self.data_seed)
        self._log = RequestLog(self.clock)
        self.catalogue = catalogue
        self._exports = ExportCache(self.data_seed, catalogue)
        self._own_cache = cache_dir is None
        self._cache_dir = Path(cache_dir) if cache_dir else None
        self._requested_port = port
        self._port: int | None = None
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._quieting = False
        self.app = self._gated_app(RateLimiter(*rate_limit) if rate_limit else None)

    def _gated_app(self, limiter: RateLimiter | None) -> Gate:
        """The ASGI app uvicorn serves: the routes behind the gate."""
        return Gate(
            build_app(self, injector=self._injector, exports=self._exports),
            api_key=self.api_key,
            log=self._log,
            injector=self._injector,
            limiter=limiter,
            stopping=self._stopping,
        )

    # --- Lifecycle ----------------------------------------------------------------------

    def start(self, timeout: float = 10.0) -> "Emulator":
        """Bind (port 0 picks a free port), serve in a background thread, wait until ready."""
        if self._thread is not None:
            raise RuntimeError("emulator already started")
        if self._cache_dir is None:
            self._cache_dir = Path(tempfile.mkdtemp(prefix="extralt-emulator-"))
        self._cache_dir.mkdir(parents=True, exist_ok=True)
        self._exports.use(self._cache_dir)
        sock = self._bind()
        self._port = sock.getsockname()[1]
        config = uvicorn.Config(
            self.app,
            log_config=None,
            log_level="warning",
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=2,
        )
        self._server = _Server(config)
        self._stopping.clear()
        self._quiet_aborts(True)
        self._thread = threading.Thread(
            target=self._server.run,
            kwargs={"sockets": [sock]},
            name=f"extralt-emulator-{self._port}",
            daemon=True,
        )
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.ready.wait(0.05):
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self._server.should_exit = True
                self._thread.join(5)
                self._thread = None
                self._quiet_aborts(False)
                sock.close()
                raise RuntimeError(f"the Extralt emulator did not start on {self.host}")
        return self

    def _bind(self) -> socket.socket:
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self.host, self._requested_port))
        except OSError:
            sock.close()
            raise
        return sock

    def _quiet_aborts(self, on: bool) -> None:
        """Hold (or let go of) uvicorn's filter of deliberate cuts, once per emulator."""
        if on and not self._quieting:
            _QUIET_ABORTS.hold()
        elif self._quieting and not on:
            _QUIET_ABORTS.release()
        self._quieting = on

    def stop(self) -> None:
        """Stop serving and remove the export cache (if the emulator made it)."""
        self._stopping.set()
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(15)
        self._thread = None
        self._server = None
        self._quiet_aborts(False)
        if self._own_cache and self._cache_dir is not None:
            shutil.rmtree(self._cache_dir, ignore_errors=True)
            self._cache_dir = None

    def __enter__(self) -> "Emulator":
        return self.start() if self._thread is None else self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def serve_forever(self, stop: threading.Event) -> None:
        """Serve until `stop` is set (the CLI sets it on SIGINT/SIGTERM)."""
        if self._thread is None:
            self.start()
        while not stop.wait(0.5):
            if self._thread is None or not self._thread.is_alive():
                break
        self.stop()

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("emulator not started")
        return self._port

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def cache_dir(self) -> Path | None:
        return self._cache_dir

    def __repr__(self) -> str:
        where = self.url if self._port is not None else "not started"
        return f"Emulator({where}, api_key='***')"

    # --- Requests -----------------------------------------------------------------------

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every request so far (faulted, rejected and admin ones too), oldest first."""
        return self._log.snapshot()

    def count_requests(self, method: str | None = None, path: str | None = None) -> int:
        """How many requests match `method` and the fnmatch pattern `path`."""
        return sum(
            1
            for r in self.requests
            if (method is None or r.method == method.upper())
            and (path is None or fnmatch.fnmatchcase(r.path, path))
        )

    def clear_requests(self) -> None:
        self._log.clear()

    # --- State --------------------------------------------------------------------------

    @property
    def runs(self) -> dict[str, RunView]:
        return self.state.views()

    def run(self, run_id: str) -> RunView:
        return self.state.view(run_id)

    @property
    def robots(self) -> dict[str, Robot]:
        return dict(self.state.robots)

    def add_robot(
        self,
        robot_id: str,
        host: str,
        name: str | None = None,
        catalogue_size: int = 1000,
        *,
        country: str = "US",
        currency: str = "USD",
    ) -> Robot:
        robot = Robot(
            robot_id, host, name or f"{host} ({country})", country, currency, catalogue_size
        )
        self.state.add_robot(robot)
        return robot

    @property
    def credits(self) -> int:
        return self.state.balance()

    def set_credits(self, credits: int) -> None:
        """Set the balance, e.g. low enough that a run runs out partway."""
        self.state.set_balance(credits)

    def create_run_externally(self, robot_id: str, *, budget: int | None = None) -> str:
        """As if a person started a run on the dashboard: counted as `dashboard`, not `api`."""
        return self.state.create_run(robot_id, budget=budget, origin="dashboard")

    def stop_run_externally(self, run_id: str) -> None:
        """As if a person clicked Stop on the dashboard."""
        self.state.stop(run_id, by="dashboard")

    def run_counts(self) -> dict[str, dict[str, int]]:
        """Runs `created`, `stopped` and `restarted`, each by who did it: `api` (requests to the
        API), `dashboard` (this Python API, as a person would) and `schedule`."""
        return self.state.counts()

    # --- Schedules ----------------------------------------------------------------------

    def set_schedule(self, robot_id: str, *, every_seconds: float, **options: Any) -> Schedule:
        """Recurring runs of a robot, as Extralt's dashboard sets them up: the emulator creates
        one every `every_seconds` of its clock by itself. `options` (`budget`, `runs`,
        `failing`, `fail_message`, `first_in`) are `EmulatorState.set_schedule`'s. Their
        documents are like any other run's; `run(id).origin` is `schedule`."""
        return self.state.set_schedule(robot_id, every_seconds, **options)

    def clear_schedule(self, robot_id: str) -> bool:
        return self.state.clear_schedule(robot_id)

    @property
    def schedules(self) -> dict[str, dict[str, Any]]:
        return self.state.schedules()

    def fail_run(self, run_id: str, message: str = "Robot crashed") -> None:
        self.state.fail(run_id, message)

    def finish_run(self, run_id: str) -> None:
        """Complete a live run now, with its full target (as far as credits allow)."""
        self.state.finish(run_id)

    def force_status(self, run_id: str, status: str | None) -> None:
        """Make GET report `status` (e.g. "paused", outside the seven); None undoes it."""
        self.state.force_status(run_id, status)

    # --- Faults -------------------------------------------------------------------------

    @property
    def faults(self) -> Faults:
        """The live faults; setting a field on it takes effect at once."""
        return self._injector.faults

    def set_faults(self, **fields: Any) -> Faults:
        """Replace all faults with `Faults(**fields)` (fields not named are off)."""
        faults = Faults.from_dict(fields)
        self._injector.replace(faults)
        return faults

    def clear_faults(self) -> None:
        self._injector.replace(Faults())


class _Server(uvicorn.Server):
    """uvicorn.Server that signals readiness through an Event instead of being polled."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.ready = threading.Event()

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        self.ready.set()


class _QuietAborts(logging.Filter):
    """uvicorn logs an app exception as an error; a deliberate cut is not one.

    On uvicorn's error logger while any emulator serves: each holds it from start() to stop().
    """

    def __init__(self) -> None:
        super().__init__()
        self._holders = 0
        self._lock = threading.Lock()

    def hold(self) -> None:
        with self._lock:
            if self._holders == 0:
                logging.getLogger("uvicorn.error").addFilter(self)
            self._holders += 1

    def release(self) -> None:
        with self._lock:
            self._holders -= 1
            if self._holders == 0:
                logging.getLogger("uvicorn.error").removeFilter(self)

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        for _ in range(10):  # follow causes and exception groups, but never around a cycle
            if exc is None:
                break
            if isinstance(exc, EmulatorAbort):
                return False
            inner = getattr(exc, "exceptions", None)  # an ExceptionGroup from a task group
            exc = inner[0] if inner else exc.__cause__ or exc.__context__
        return True


_QUIET_ABORTS = _QuietAborts()

__all__ = [
    "DEMO_API_KEY",
    "Emulator",
    "EmulatorAbort",
    "RecordedRequest",
    "RunView",
]
