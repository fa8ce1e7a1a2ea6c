"""Run the chaos soak: `python -m soak.run_soak [--size small|large] [--seed N]` (`make soak`).

Three parties, as in production:

- **Extralt** is the emulator, served from a thread of this process, with faults on demand.
- **Dagster** is a worker subprocess (`soak.worker`) that executes each round as a real Dagster
  run: `dg.execute_job` of a reconstructable job, the multiprocess executor (one process per
  step), a persistent instance in a temporary DAGSTER_HOME holding the project's `dagster.yaml`
  (pools `extralt` and `duckdb` limited to 1).
- **Extralt's own schedule** (`soak.scheduled`): the emulator starts runs of one source's robot
  by itself, and `build_extralt_sensor`, ticked here as the daemon ticks it, loads each completed
  one through Dagster (a second worker) and observes each failed one.
- **The operator and the world** are this process: before each round it arms the round's faults
  in the emulator; during it, a controller stops runs from outside, terminates the Dagster run,
  kills a step process or holds the DuckDB file from another process; after a failed round it
  re-executes from failure, as a person would, with the faults gone.

Afterwards `soak.verify` checks the invariants and the report prints them as figures.
"""

import argparse
import contextlib
import json
import os
import queue
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import dagster as dg
import duckdb

from extralt_dagster import credits, warehouse
from extralt_dagster.api.models import TERMINAL_STATUSES
from extralt_dagster.assets.captures import EXPORT_FOLDER_PREFIX, export_folder_owner
from extralt_dagster.emulator import Emulator, RunView
from extralt_dagster.naming import metadata_key

from .config import (
    CREDIT_PER,
    CREDIT_TIMEZONES,
    EMULATOR_RATE_LIMIT,
    EMULATOR_SPEED,
    SOURCES,
    run_op,
)
from .plan import EXPORT, Fault, Plan, Round, make_plan
from .scheduled import PARTY, PARTY_TAG, ScheduledRuns

ROOT = Path(__file__).resolve().parent.parent
MAX_REEXECUTIONS = 3
ATTEMPT_TIMEOUT_SECONDS = 300.0
#: How long the controller waits for what a fault needs (a victim's step polling its run):
#: on a busy 2-core box, the victim's run step may wait minutes for the `extralt` pool.
ACTION_TIMEOUT_SECONDS = 180.0
DEFAULT_SEED = 20_261_129
#: How long step_killed's run may go unpolled before the runner lets it complete.
UNWATCHED_SECONDS = 5.0  # above a slow poll (read_timeout: 3 s)
#: The events that carry a step process's pid: its first attempt, and each retry.
STEP_PROCESS_STARTS = {dg.DagsterEventType.STEP_START, dg.DagsterEventType.STEP_RESTARTED}
IN_FLIGHT = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
    dg.DagsterRunStatus.CANCELING,
]
#: The emulator's run faults: dropped once the round's first Dagster run is over.
RUN_FAULT_FIELDS = ("fail_runs", "fail_message", "never_finish", "run_fault_robots")
#: The metadata a credit cap's refusal (`CreditLimitReached`) carries: "start" or "restart".
REFUSED_KEY = metadata_key("refused")
STEP_SOURCE_NAME = {run_op(s.name): s.name for s in SOURCES}

_T = TypeVar("_T")


def _say(line: str) -> None:
    print(line, flush=True)  # progress, line by line, even into a pipe


class SoakError(RuntimeError):
    """The soak itself could not run (not a broken invariant: those are reported)."""


@dataclass
class Paths:
    root: Path
    home: Path
    exports: Path
    duckdb: Path
    lake: Path  # a DuckLake's SQLite catalog (catalog.sqlite) and data files (data/)
    worker_log: Path
    daemon_log: Path
    sensor_worker_log: Path

    @classmethod
    def under(cls, root: Path) -> "Paths":
        return cls(
            root=root,
            home=root / "dagster_home",
            exports=root / "exports",
            duckdb=root / "warehouse.duckdb",
            lake=root / "lake",
            worker_log=root / "worker.log",
            daemon_log=root / "daemon.log",
            sensor_worker_log=root / "sensor_worker.log",
        )


@dataclass
class Attempt:
    """One Dagster run of a round: the first, or a re-execution from failure."""

    number: int
    run_id: str | None
    status: str
    success: bool
    seconds: float
    emulated_window: tuple[float, float]
    error: str | None = None
    #: Epoch seconds (the Dagster event log's clock) when it was sent and answered.
    wall_window: tuple[float, float] = (0.0, 0.0)
    #: Steps the credit cap refused; when they are all that failed, nobody re-executes.
    refused: list[str] = field(default_factory=list)
    failed_steps: list[str] = field(default_factory=list)

    def to_emulated(self, wall: float) -> float:
        """An epoch time during this attempt on the emulator's clock (it runs EMULATOR_SPEED
        times faster, from the attempt's start: accurate to a few emulated ms)."""
        return self.emulated_window[0] + (wall - self.wall_window[0]) * EMULATOR_SPEED


@dataclass
class RoundResult:
    round: Round
    attempts: list[Attempt] = field(default_factory=list)
    actions: list[str] = field(default_factory=list)  # what the controller did, in words
    hits: dict[str, int] = field(default_factory=dict)  # fault kind -> times it landed
    lock_window: tuple[float, float] | None = None  # epoch seconds the DuckDB file was held
    controller_errors: list[str] = field(default_factory=list)

    @property
    def success(self) -> bool:
        return bool(self.attempts) and self.attempts[-1].success

    @property
    def window(self) -> tuple[float, float]:
        """Emulated time from the round's first attempt to its last."""
        return self.attempts[0].emulated_window[0], self.attempts[-1].emulated_window[1]


def _end(proc: subprocess.Popen[Any]) -> None:
    """End a child that stops when its stdin closes; killed if it has not within 30 s."""
    with contextlib.suppress(OSError):
        if proc.stdin is not None:
            proc.stdin.close()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


# --- The Dagster side -----------------------------------------------------------------------


class Daemon:
    """`dagster-daemon run` on the soak's instance, as `dagster dev` runs it in production: its
    run monitoring frees pool slots that terminated runs left claimed (dagster.yaml)."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self._log = log_path.open("wb")
        self.proc = subprocess.Popen(
            [str(Path(sys.executable).with_name("dagster-daemon")), "run", "-m", "soak.defs"],
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its code server is stopped with it
        )

    def close(self) -> None:
        if self._log.closed:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self._log.close()


class Worker:
    """The `soak.worker` subprocess: one JSON line per Dagster run in, one out."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self._log = log_path.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "soak.worker"],
            cwd=ROOT,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
            bufsize=1,
        )
        self._lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, name="soak-worker-reader", daemon=True).start()
        self._answer(120.0, "start")

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(line)
        self._lines.put(None)

    def _answer(self, timeout: float, what: str) -> dict[str, Any]:
        try:
            line = self._lines.get(timeout=timeout)
        except queue.Empty:
            raise SoakError(f"the soak worker did not {what} within {timeout:.0f}s") from None
        if line is None:
            raise SoakError(f"the soak worker exited ({self.proc.wait()}) during {what}")
        return json.loads(line)

    def execute(self, spec: dict[str, Any], timeout: float) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(spec) + "\n")
        self.proc.stdin.flush()
        return self._answer(timeout, "finish a run")

    def close(self) -> None:
        if self._log.closed:
            return
        _end(self.proc)
        self._log.close()


# --- The operator and the world -------------------------------------------------------------

_HOLDER = """
import select, sys, time, duckdb
path, hold = sys.argv[1], float(sys.argv[2])
deadline = time.monotonic() + 60
while True:
    try:
        con = duckdb.connect(path)
        break
    except duckdb.IOException:
        if time.monotonic() > deadline:
            raise
        time.sleep(0.02)
print("locked", time.time(), flush=True)
select.select([sys.stdin], [], [], hold)  # the fault: hold the file `hold` s, or until released
con.close()
print("released", time.time(), flush=True)
"""


#: On a lake: a reader holding a transaction open (`duckdb_lock`), which must block no load.
_LAKE_READER = """
import select, sys, time, duckdb
from soak.analyst import ALIAS, attach
catalog, data_path, hold = sys.argv[1], sys.argv[2], float(sys.argv[3])
con = duckdb.connect()
attach(con, catalog, data_path)
con.execute("BEGIN TRANSACTION")
con.execute(f"SELECT * FROM {ALIAS}.current_snapshot()").fetchall()
print("locked", time.time(), flush=True)
select.select([sys.stdin], [], [], hold)
con.execute("ROLLBACK")
con.close()
print("released", time.time(), flush=True)
"""

#: On a lake: another writer holding the SQLite catalog's write lock (`load_killed`), so the
#: round's first load waits at its first catalog write, its export downloaded.
_CATALOG_WRITER = """
import select, sqlite3, sys, time
path, hold = sys.argv[1], float(sys.argv[2])
con = sqlite3.connect(path, timeout=60, isolation_level=None)
con.execute("BEGIN IMMEDIATE")
print("locked", time.time(), flush=True)
select.select([sys.stdin], [], [], hold)
con.execute("ROLLBACK")
con.close()
print("released", time.time(), flush=True)
"""


class DuckDBHolder:
    """Another process that opens the DuckDB file read-write, as a person's notebook would; on a
    lake, a reader holding a transaction open, or (`writer`) another writer of its catalog."""

    def __init__(self, soak: "Soak", hold_seconds: float, *, writer: bool = False) -> None:
        if soak.lake is None:
            args = [_HOLDER, str(soak.paths.duckdb)]
        elif writer:
            args = [_CATALOG_WRITER, soak.lake.location]
        else:
            args = [_LAKE_READER, soak.lake.catalog, soak.lake.data_path]
        self.proc = subprocess.Popen(
            [sys.executable, "-c", *args, str(hold_seconds)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            cwd=ROOT,
            text=True,
        )
        self.times: dict[str, float] = {}

    def wait_locked(self) -> bool:
        return self._next_line() == "locked"

    def release(self, *, now: bool = True) -> tuple[float, float] | None:
        """Let go `now`, or once the hold is over; the epoch window it held the file."""
        if now:
            with contextlib.suppress(OSError):
                assert self.proc.stdin is not None
                self.proc.stdin.close()
        while self._next_line() is not None:
            pass
        self.proc.wait()
        if "locked" in self.times and "released" in self.times:
            return self.times["locked"], self.times["released"]
        return None

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def _next_line(self) -> str | None:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            return None
        what, _, when = line.strip().partition(" ")
        self.times[what] = float(when)
        return what


class RoundController:
    """Does, during one Dagster run, what the round's faults need from outside the emulator."""

    def __init__(self, soak: "Soak", rnd: Round, tags: dict[str, str]) -> None:
        self.soak = soak
        self.round = rnd
        self.tags = tags
        self.emu = soak.emu
        self.known = set(self.emu.runs)
        self.exports_before = self.emu.count_requests("GET", EXPORT)
        self.actions: list[str] = []
        self.errors: list[str] = []
        self.lock_window: tuple[float, float] | None = None
        self._first_over = threading.Event()  # the round's first Dagster run has ended
        self._done = threading.Event()  # the round has ended, re-executions included
        self._threads: list[threading.Thread] = []
        self._holder: DuckDBHolder | None = None

    def start(self) -> None:
        actions: dict[str, Callable[[Fault], None]] = {
            "external_stop": self._stop_from_outside,
            "terminated_mid_poll": self._terminate_dagster_run,
            "step_killed": self._kill_step,
            "duckdb_lock": self._hold_duckdb_file,
            "load_killed": self._kill_loading_step,
        }
        for fault in self.round.faults:
            action = actions.get(fault.kind)
            if action is not None:
                thread = threading.Thread(
                    target=self._guarded, args=(action, fault), name=f"soak-{fault.kind}"
                )
                thread.start()
                self._threads.append(thread)

    def first_run_over(self) -> None:
        """Run faults act on the first Dagster run only; the DuckDB holder may act later."""
        self._first_over.set()

    def finish(self) -> None:
        self._first_over.set()
        self._done.set()
        for thread in self._threads:
            thread.join(ACTION_TIMEOUT_SECONDS)
        if self._holder is not None:
            self._holder.kill()

    def _guarded(self, action: Callable[[Fault], None], fault: Fault) -> None:
        try:
            action(fault)
        except Exception as exc:  # reported, never swallowed
            self.errors.append(f"{fault.kind}: {type(exc).__name__}: {exc}")

    def _wait_for(
        self, predicate: Callable[[], _T | None], what: str, *, whole_round: bool = False
    ) -> _T | None:
        over = self._done if whole_round else self._first_over
        deadline = time.monotonic() + ACTION_TIMEOUT_SECONDS
        while not over.is_set():
            value = predicate()
            if value:
                return value
            if time.monotonic() > deadline:
                self.errors.append(f"gave up waiting for {what}")
                return None
            over.wait(0.02)
        self.errors.append(f"the Dagster run ended before {what}")
        return None

    def _victim_runs(self, fault: Fault) -> list[RunView]:
        """The victim's Extralt runs that this round started, oldest first (not Extralt's
        scheduled ones: the round's faults are Dagster's runs')."""
        robot = fault.victim_robot
        return [
            v
            for v in self.emu.runs.values()
            if v.id not in self.known and v.robot_id == robot and v.origin != "schedule"
        ]

    def _victim_polling(self, fault: Fault) -> RunView | None:
        """The victim's new Extralt run, once it is running and the step has polled it twice."""

        def ready() -> RunView | None:
            for view in self._victim_runs(fault):
                if view.status != "running":
                    continue
                if self.emu.count_requests("GET", f"/v0/extract/runs/{view.id}") >= 2:
                    return view
            return None

        return self._wait_for(ready, f"{fault.victim}'s Extralt run to be polled")

    def _dagster_run(self) -> dg.DagsterRun | None:
        runs = self.soak.instance.get_runs(filters=dg.RunsFilter(tags=self.tags), limit=1)
        return runs[0] if runs else None

    def _stop_from_outside(self, fault: Fault) -> None:
        view = self._victim_polling(fault)
        if view is not None:
            self.emu.stop_run_externally(view.id)
            self.actions.append(f"stopped {fault.victim}'s Extralt run {view.id} from outside")

    def _terminate_dagster_run(self, fault: Fault) -> None:
        view = self._victim_polling(fault)
        run = self._dagster_run() if view is not None else None
        if view is None or run is None:
            return
        # What the UI's Terminate does: mark the run CANCELING, then interrupt its process.
        self.soak.instance.report_run_canceling(run)
        os.kill(self.soak.worker.pid, signal.SIGINT)
        self.actions.append(
            f"terminated Dagster run {run.run_id[:8]} while {fault.victim}'s step polled "
            f"Extralt run {view.id}"
        )

    def _kill_step(self, fault: Fault) -> None:
        """The victim's run never finishes until its step is killed; then it completes, as if
        the crawl went on while no step watched, and the step's retry finds it.

        If no step watches the run (its create timed out and the retry waits for the pool),
        the kill cannot land: the run is completed after UNWATCHED_SECONDS, as a real crawl
        would end, so it does not hold the plan's one concurrent run for good.
        """
        step = run_op(fault.victim or "")
        run = self._wait_for(self._dagster_run, "the round's Dagster run")
        view = self._wait_for(
            lambda: next(iter(self._victim_runs(fault)), None),
            f"{fault.victim}'s Extralt run to start",
        )
        if run is None or view is None:
            return
        polls, quiet_since = -1, time.monotonic()

        def kill() -> int | str | None:
            nonlocal polls, quiet_since
            seen = self.emu.count_requests("GET", f"/v0/extract/runs/{view.id}")
            if seen != polls:
                polls, quiet_since = seen, time.monotonic()
            elif time.monotonic() - quiet_since > UNWATCHED_SECONDS:
                return "unwatched"
            if seen < 2 or self.emu.run(view.id).status in TERMINAL_STATUSES:
                return None
            starts = [
                e
                for e in self.soak.instance.all_logs(run.run_id, of_type=STEP_PROCESS_STARTS)
                if e.step_key == step and e.dagster_event is not None and e.dagster_event.pid
            ]
            if not starts:
                return None
            pid = starts[-1].dagster_event.pid  # type: ignore[union-attr]
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                return None  # that attempt has ended; its retry is on its way
            return pid

        outcome = self._wait_for(kill, f"{step}'s step process, polling its live run")
        if self.emu.run(view.id).status not in TERMINAL_STATUSES:
            self.emu.finish_run(view.id)
        if isinstance(outcome, int):
            self.actions.append(
                f"killed step {step} (pid {outcome}, SIGKILL) while it polled Extralt run {view.id}"
            )
        elif outcome == "unwatched":
            self.actions.append(
                f"no step of {fault.victim} watched Extralt run {view.id} for "
                f"{UNWATCHED_SECONDS:.0f}s (a retry waiting for the pool): completed it unkilled"
            )

    def _hold_duckdb_file(self, fault: Fault) -> None:
        hold = fault.params["hold_seconds"]
        started = self._wait_for(
            lambda: self.emu.count_requests("GET", EXPORT) > self.exports_before,
            "the round's first export",
            whole_round=True,
        )
        if not started:
            return
        self._holder = DuckDBHolder(self.soak, hold)
        self.lock_window = self._holder.release(now=False)
        if self.lock_window is not None:
            what = "a read transaction on the lake" if self.soak.lake else "the DuckDB file"
            self.actions.append(f"another process held {what} for {hold:.1f}s")
        else:
            self.errors.append(f"the DuckDB holder exited {self._holder.proc.returncode}")

    def _kill_loading_step(self, fault: Fault) -> None:
        """Hold the DuckDB file from the round's start; the first captures step downloads its
        export, then waits for the lock: kill it there, with its export on disk, and let go."""
        self._holder = DuckDBHolder(self.soak, ACTION_TIMEOUT_SECONDS, writer=True)
        try:
            if not self._holder.wait_locked():
                self.errors.append(f"the DuckDB holder exited {self._holder.proc.wait()}")
                return
            # Over the whole round: when another fault ends the first run before any step
            # has its export, the re-execution's first loading step is the one killed.
            found = self._wait_for(
                self._step_waiting_with_its_export, "a loading step", whole_round=True
            )
            if found is not None:
                step, pid, folder = found
                os.kill(pid, signal.SIGKILL)
                self.actions.append(
                    f"killed loading step {step} (pid {pid}, SIGKILL) while it waited for the "
                    f"{'catalog' if self.soak.lake else 'DuckDB file'}, its export downloaded "
                    f"into {folder.name}"
                )
        finally:
            self.lock_window = self._holder.release()

    def _step_waiting_with_its_export(self) -> tuple[str, int, Path] | None:
        """A captures step of this round (any of its Dagster runs, or a load the sensor
        launched that is still going) whose export folder holds a whole download."""
        round_tag = {"soak/round": self.tags["soak/round"]}
        runs = self.soak.instance.get_runs(filters=dg.RunsFilter(tags=round_tag))
        runs += self.soak.instance.get_runs(
            filters=dg.RunsFilter(tags={PARTY_TAG: PARTY}, statuses=IN_FLIGHT)
        )
        pids = {
            e.dagster_event.pid: e.step_key
            for run in runs
            for e in self.soak.instance.all_logs(run.run_id, of_type=STEP_PROCESS_STARTS)
            if e.dagster_event is not None and (e.step_key or "").endswith("__captures")
        }
        for folder in self.soak.paths.exports.glob(f"{EXPORT_FOLDER_PREFIX}*"):
            if not any(f.is_file() and not f.name.startswith(".") for f in folder.iterdir()):
                continue
            owner = export_folder_owner(folder)
            pid = owner[1] if owner else None
            if pid in pids:
                return pids[pid] or "", pid, folder
        return None


# --- The soak -------------------------------------------------------------------------------


@dataclass
class SoakReport:
    plan: Plan
    results: list[RoundResult]
    figures: dict[str, Any]
    violations: list[str]
    text: str
    seconds: float

    @property
    def ok(self) -> bool:
        return not self.violations


class Analyst:
    """`soak.analyst` in a child process, attached to the lake for the whole soak; `.queries`
    are its results (a thread reads them as they come); `stop()` ends it."""

    def __init__(self, lake: warehouse.Lake, log_path: Path) -> None:
        self._log = log_path.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "soak.analyst", lake.catalog, lake.data_path],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
        )
        self.lines: queue.Queue[dict[str, Any]] = queue.Queue()
        self.queries: list[dict[str, Any]] = []
        self._reader: threading.Thread | None = None
        assert self.proc.stdout is not None
        first = self.proc.stdout.readline()
        if json.loads(first or "{}") != {"attached": True}:
            self.stop()
            raise SoakError(f"the analyst did not attach the lake (see {log_path})")
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(json.loads(line))

    def stop(self) -> list[dict[str, Any]]:
        """End the analyst (once); every query it ran, and an error if it had exited early."""
        if self._log.closed:
            return self.queries
        alive = self.proc.poll() is None
        _end(self.proc)
        if self._reader is not None:
            self._reader.join(timeout=10)
        while not self.lines.empty():
            self.queries.append(self.lines.get())
        if not alive:
            self.queries.append({"error": f"the analyst exited early ({self.proc.returncode})"})
        self._log.close()
        return self.queries


class Soak:
    """One soak: the emulator, the worker, the instance, and the rounds of the plan. `lake`
    makes the warehouse a DuckLake with a SQLite catalog, an analyst attached throughout."""

    def __init__(
        self,
        plan: Plan,
        paths: Paths,
        log: Callable[[str], None] = _say,
        *,
        lake: bool = False,
    ) -> None:
        self.plan = plan
        self.paths = paths
        self.log = log
        self.lake = (
            warehouse.Lake(
                catalog=f"sqlite:{paths.lake / 'catalog.sqlite'}",
                data_path=f"{paths.lake / 'data'}/",
            )
            if lake
            else None
        )
        self.analyst_queries: list[dict[str, Any]] = []
        # A key only this soak uses, so a leak of it anywhere is unambiguous.
        self.api_key = f"sk-soak-{plan.seed}-{secrets.token_hex(12)}"
        self.emu = Emulator(
            self.api_key,
            speed=EMULATOR_SPEED,
            seed=plan.seed,
            rate_limit=EMULATOR_RATE_LIMIT,
        )
        for s in SOURCES:
            if s.robot_id not in self.emu.robots:
                self.emu.add_robot(s.robot_id, s.host, catalogue_size=400)
        self.results: list[RoundResult] = []
        #: The capped source's calendar period: its time zone, and the period at start and end.
        self.credit_timezone = credit_timezone(time.time())
        self.credit_periods: tuple[credits.Period, credits.Period]
        self.scheduled: ScheduledRuns
        self.worker: Worker
        self.daemon: Daemon
        self.instance: dg.DagsterInstance

    def run(self) -> SoakReport:
        from .verify import verify

        started = time.monotonic()
        self.paths.home.mkdir(parents=True)
        self.paths.exports.mkdir()
        shutil.copy(ROOT / "dagster.yaml", self.paths.home / "dagster.yaml")
        with self.emu, contextlib.ExitStack() as stack:
            # Create the instance's storage here first, so two processes never race to.
            self.instance = stack.enter_context(
                dg.DagsterInstance.from_config(str(self.paths.home))
            )
            self.daemon = Daemon(self._worker_env(), self.paths.daemon_log)
            stack.callback(self.daemon.close)
            self.worker = Worker(self._worker_env(), self.paths.worker_log)
            stack.callback(self.worker.close)
            sensor_worker = Worker(self._worker_env(), self.paths.sensor_worker_log)
            stack.callback(sensor_worker.close)
            self.scheduled = ScheduledRuns(
                self.emu, self.instance, self.api_key, sensor_worker, self.log
            )
            stack.callback(self.scheduled.stop)
            analyst = None
            if self.lake is not None:
                # The lake is made before the team uses it: its catalog in WAL mode.
                warehouse.connect(self.lake).close()
                analyst = Analyst(self.lake, self.paths.root / "analyst.log")
                stack.callback(analyst.stop)
            self.log(
                f"Soak seed {self.plan.seed}, size {self.plan.size}: {len(self.plan.rounds)} "
                f"rounds, {self.plan.materializations} source materializations, "
                f"{len(SOURCES)} sources, into {self.lake or 'a DuckDB file'}; "
                f"emulator {self.emu.url}; work dir {self.paths.root}"
            )
            first = credits.Period.containing(CREDIT_PER, self.credit_timezone, time.time())
            self.scheduled.start()
            for rnd in self.plan.rounds:
                self.results.append(self._run_round(rnd))
            self.scheduled.finish()
            last = credits.Period.containing(CREDIT_PER, self.credit_timezone, time.time())
            self.credit_periods = (first, last)
            if analyst is not None:
                self.analyst_queries = analyst.stop()
            self.worker.close()
            sensor_worker.close()
            self.daemon.close()
            figures, violations, text = verify(self, seconds=time.monotonic() - started)
        return SoakReport(
            self.plan, self.results, figures, violations, text, time.monotonic() - started
        )

    def warehouse_exists(self) -> bool:
        if self.lake is not None:
            return Path(self.lake.location).exists()
        return self.paths.duckdb.exists()

    def open_warehouse(self, *, read_only: bool = True) -> "duckdb.DuckDBPyConnection":
        """The soak's warehouse, the lake attached and in use (`schema.table` names resolve)."""
        if self.lake is not None:
            return warehouse.connect(self.lake, read_only=read_only)
        return duckdb.connect(str(self.paths.duckdb), read_only=read_only)

    def _worker_env(self) -> dict[str, str]:
        return {
            **os.environ,
            "DAGSTER_HOME": str(self.paths.home),
            "EXTRALT_API_KEY": self.api_key,
            "EXTRALT_BASE_URL": self.emu.url,
            "SOAK_DUCKDB_PATH": str(self.paths.duckdb),
            **(
                {"SOAK_LAKE_CATALOG": self.lake.catalog, "SOAK_LAKE_DATA_PATH": self.lake.data_path}
                if self.lake
                else {}
            ),
            "SOAK_EXPORT_DIR": str(self.paths.exports),
            "SOAK_CREDIT_TIMEZONE": self.credit_timezone,
            "PYTHONPATH": os.pathsep.join(
                p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p
            ),
        }

    def _run_round(self, rnd: Round) -> RoundResult:
        result = RoundResult(rnd)
        self.scheduled.during = f"round {rnd.index}"
        self.emu.set_faults(**rnd.emulator_faults())
        armed = self.emu.faults.to_dict()
        tags = {"soak/round": str(rnd.index), "soak/attempt": "0"}
        controller = RoundController(self, rnd, tags)
        controller.start()
        try:
            result.attempts.append(
                self._execute(
                    0, {"tags": tags, "assets": rnd.asset_keys, "run_config": rnd.run_config()}
                )
            )
            controller.first_run_over()
            # The operator re-executes: the remote incident is over (no more failing or stalling
            # runs), but what is left of the network's bad luck still lands on the re-execution.
            left = self.emu.faults.to_dict()
            self.emu.set_faults(**{k: v for k, v in left.items() if k not in RUN_FAULT_FIELDS})
            while not result.attempts[-1].success and len(result.attempts) <= MAX_REEXECUTIONS:
                parent = result.attempts[-1].run_id
                if parent is None:
                    break
                last = result.attempts[-1]
                if last.failed_steps and set(last.failed_steps) <= set(last.refused):
                    # Only the credit cap failed: re-executing is refused again until next month.
                    break
                number = len(result.attempts)
                spec = {
                    "tags": {"soak/round": str(rnd.index), "soak/attempt": str(number)},
                    "parent_run_id": parent,
                    "run_config": rnd.run_config(),
                }
                result.attempts.append(self._execute(number, spec))
        finally:
            controller.finish()
        result.actions = controller.actions
        result.lock_window = controller.lock_window
        result.controller_errors = controller.errors
        result.hits = _hits(rnd, armed, self.emu.faults.to_dict(), controller.actions)
        self.emu.clear_faults()
        self.log(_round_line(result, len(self.plan.rounds)))
        return result

    def _execute(self, number: int, spec: dict[str, Any]) -> Attempt:
        t0, e0, w0 = time.monotonic(), self.emu.clock.now(), time.time()
        answer = self.worker.execute(spec, ATTEMPT_TIMEOUT_SECONDS)
        window, walls = (e0, self.emu.clock.now()), (w0, time.time())
        seconds = time.monotonic() - t0
        if "error" in answer:
            attempt = Attempt(number, None, "ERROR", False, seconds, window, answer["error"])
            attempt.wall_window = walls
            return attempt
        attempt = Attempt(
            number, answer["run_id"], answer["status"], answer["success"], seconds, window
        )
        attempt.wall_window = walls
        for e in self.instance.all_logs(answer["run_id"], of_type=dg.DagsterEventType.STEP_FAILURE):
            attempt.failed_steps.append(e.step_key or "")
            if refusal_of(e) is not None:
                attempt.refused.append(e.step_key or "")
        return attempt


def refusal_of(entry: dg.EventLogEntry) -> str | None:
    """'start' or 'restart' when this step failure is a credit cap's refusal, else None."""
    event = entry.dagster_event
    if event is None or event.event_type != dg.DagsterEventType.STEP_FAILURE:
        return None
    user = event.step_failure_data.user_failure_data
    value = user.metadata.get(REFUSED_KEY) if user is not None else None
    return str(value.value) if value is not None else None


def credit_timezone(now: float) -> str:
    """The candidate zone whose calendar period `now` is furthest from the edges of."""

    def margin(zone: str) -> float:
        period = credits.Period.containing(CREDIT_PER, zone, now)
        return min(now - period.start.timestamp(), period.end.timestamp() - now)

    return max(CREDIT_TIMEZONES, key=margin)


def _hits(
    rnd: Round, armed: dict[str, Any], left: dict[str, Any], actions: list[str]
) -> dict[str, int]:
    """How many times each of the round's faults landed."""
    hits = {}
    for fault in rnd.faults:
        counter = {"error": "error_count", "latency": "latency_count", "export": "export_count"}
        name = counter.get(fault.category)
        if name is not None:
            hits[fault.kind] = (armed[name] or 0) - (left[name] or 0)
        elif fault.kind in ("remote_failure", "stuck_past_timeout") or fault.category == "shape":
            hits[fault.kind] = -1  # counted by verify, from the victim's run (or its rows)
        else:
            verb = {
                "external_stop": "stopped",
                "terminated_mid_poll": "terminated",
                "step_killed": "killed step ",
                "duckdb_lock": "held",
                "load_killed": "killed loading step ",
            }[fault.kind]
            hits[fault.kind] = sum(1 for a in actions if verb in a)
    return hits


def _round_line(result: RoundResult, total: int) -> str:
    rnd = result.round
    outcome = " -> ".join(
        f"{a.status}({a.seconds:.1f}s"
        + "".join(f", {STEP_SOURCE_NAME.get(k, k)} refused by its credit cap" for k in a.refused)
        + ")"
        for a in result.attempts
    )
    faults = ", ".join(f.kind + (f"[{f.victim}]" if f.victim else "") for f in rnd.faults)
    return f"  round {rnd.index + 1}/{total} {','.join(rnd.sources)} | {faults or '-'} | {outcome}"


@contextlib.contextmanager
def _workdir(path: str | os.PathLike[str] | None) -> Iterator[Path]:
    if path is not None:
        root = Path(path)
        root.mkdir(parents=True, exist_ok=False)
        yield root
        return
    with tempfile.TemporaryDirectory(prefix="extralt-soak-") as tmp:
        yield Path(tmp)


def run_soak(
    size: str = "small",
    seed: int = DEFAULT_SEED,
    *,
    rounds: int | None = None,
    workdir: str | os.PathLike[str] | None = None,
    log: Callable[[str], None] = _say,
    lake: bool = False,
) -> SoakReport:
    """Run a soak and return its report; `workdir` (new) keeps its files for a post-mortem;
    `lake` loads into a DuckLake (SQLite catalog) with an analyst attached throughout."""
    plan = make_plan(size, seed, rounds)
    with _workdir(workdir) as root:
        return Soak(plan, Paths.under(root), log, lake=lake).run()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m soak.run_soak", description=__doc__)
    parser.add_argument("--size", choices=["small", "large"], default="small")
    parser.add_argument("--seed", type=int, default=int(os.environ.get("SOAK_SEED", DEFAULT_SEED)))
    parser.add_argument("--rounds", type=int, default=None, help="override the size's rounds")
    parser.add_argument("--workdir", default=None, help="keep the soak's files here (new dir)")
    parser.add_argument(
        "--lake", action="store_true", help="into a DuckLake (SQLite catalog), an analyst attached"
    )
    args = parser.parse_args(argv)
    report = run_soak(
        args.size, args.seed, rounds=args.rounds, workdir=args.workdir, lake=args.lake
    )
    print(report.text)
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())


__all__ = ["SoakReport", "main", "run_soak"]
