"""`make demo`, `make demo-lake` and `make dev`: the whole pipeline on this machine, against the
local emulator, into a DuckDB file or a local DuckLake."""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO, TextIO

import dagster as dg

from .api.models import TERMINAL_STATUSES
from .emulator import DEMO_API_KEY, Emulator
from .instance import INSTANCE_YAML
from .naming import EXTERNAL_RUNS_SENSOR, metadata_key
from .sources import DUCKDB_PATH_ENV, DUCKLAKE_CATALOG_ENV, DUCKLAKE_DATA_PATH_ENV
from .warehouse import DEFAULT_DUCKDB_PATH, DEFAULT_SCHEMA, Lake, ensure_folder

DEMO_SPEED = 10.0  # a 300-capture demo run takes ~2 s instead of ~17 s
#: `make dev`'s Extralt schedule (emulated seconds): the robot the demo sources file observes
#: (`observe_external_runs`) gets a run every 5 real minutes, the first 30 s after start.
DEMO_SCHEDULED_ROBOT = "rbt_books"
DEMO_SCHEDULE_EVERY_SECONDS = 300 * DEMO_SPEED
DEMO_SCHEDULE_FIRST_IN_SECONDS = 30 * DEMO_SPEED
DEMO_SCHEDULE_BUDGET = 150
DEMO_COMMAND = ("asset", "materialize", "-m", "extralt_dagster.definitions", "--select", "*")

#: How often the demo reads the instance for new materializations and failures.
PROGRESS_POLL_SECONDS = 0.5
#: `demo --ducklake`: the lake's SQLite catalog and its data files, under the project.
DEMO_LAKE_CATALOG = Path("data", "lake", "catalog.sqlite")
DEMO_LAKE_FILES = Path("data", "lake", "files")
SNAPSHOT_KEY = metadata_key("snapshot_id")


def _dagster_home(project: Path) -> Path:
    """`$DAGSTER_HOME`, else `.dagster_home` under the project: one instance for the UI and for
    the CLI. The project's own `.dagster_home` always gets the project's dagster.yaml (else the
    packaged one); any other home gets it only if it has none, so a user's settings stay."""
    own = (project / ".dagster_home").resolve()
    home = Path(os.environ.get("DAGSTER_HOME") or own).resolve()
    home.mkdir(parents=True, exist_ok=True)
    shipped = project / "dagster.yaml"
    if not shipped.exists():
        shipped = INSTANCE_YAML
    if home == own or not (home / "dagster.yaml").exists():
        shutil.copyfile(shipped, home / "dagster.yaml")
    return home


#: The variables that choose the warehouse: the demo sets its own, whatever the shell has.
_WAREHOUSE_ENV = (DUCKDB_PATH_ENV, DUCKLAKE_CATALOG_ENV, DUCKLAKE_DATA_PATH_ENV)


def _env(shared: dict[str, str]) -> dict[str, str]:
    """The subprocess's environment: this one, without the shell's choice of warehouse (a
    lake there must not take the file demo's loads), with `shared_env` on top."""
    env = {k: v for k, v in os.environ.items() if k not in _WAREHOUSE_ENV}
    env.update(shared)
    env.setdefault("DAGSTER_DISABLE_TELEMETRY", "yes")
    return env


def shared_env(emulator: Emulator, project: Path, warehouse: Path | Lake) -> dict[str, str]:
    """What a second shell needs to reach the same instance, emulator and warehouse (a DuckDB
    file, or a lake: `EXTRALT_DUCKLAKE_CATALOG` and `EXTRALT_DUCKLAKE_DATA_PATH`)."""
    if isinstance(warehouse, Lake):
        where = {
            DUCKLAKE_CATALOG_ENV: warehouse.catalog,
            DUCKLAKE_DATA_PATH_ENV: warehouse.data_path,
        }
    else:
        where = {DUCKDB_PATH_ENV: str(warehouse)}
    return {
        "DAGSTER_HOME": str(_dagster_home(project)),
        # The demo key and the emulator's URL, whatever the shell has: a real key never goes
        # to the emulator, and the demo never reaches the real API.
        "EXTRALT_API_KEY": DEMO_API_KEY,
        "EXTRALT_BASE_URL": emulator.url,
        **where,
    }


def _bin(name: str) -> str:
    candidate = Path(sys.executable).with_name(name)
    return str(candidate) if candidate.exists() else name


def _shown(path: Path) -> str:
    """A path as short as it can be and still work from the current directory."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


class Progress:
    """Prints each asset materialization and step failure of the Dagster runs started after it
    was made, read from the instance as they happen.

    Read from the instance, not from Dagster's console output: a step process's last lines
    reach the console through a `tail` of its captured logs, which can stop before they arrive.
    """

    def __init__(self, instance: dg.DagsterInstance, out: TextIO) -> None:
        self._instance = instance
        self._out = out
        self._types = {dg.DagsterEventType.ASSET_MATERIALIZATION, dg.DagsterEventType.STEP_FAILURE}
        self._known = set(instance.get_run_ids())
        self._printed: dict[str, int] = {}  # run id -> events already printed
        self._started = time.monotonic()
        #: On a lake: (source, snapshot id) of each load, in the order they materialized.
        self.snapshots: list[tuple[str, int]] = []

    def poll(self) -> None:
        for run_id in reversed(self._instance.get_run_ids(limit=20)):  # oldest first
            if run_id in self._known:
                continue
            entries = self._instance.all_logs(run_id, of_type=self._types)
            for entry in entries[self._printed.get(run_id, 0) :]:
                self._print(entry)
            self._printed[run_id] = len(entries)

    def _print(self, entry: dg.EventLogEntry) -> None:
        elapsed = f"{time.monotonic() - self._started:5.0f}s"
        materialization = entry.asset_materialization
        if materialization is not None:
            key = materialization.asset_key.to_user_string()
            snapshot = materialization.metadata.get(SNAPSHOT_KEY)
            shown = ""
            if isinstance(snapshot, dg.IntMetadataValue) and snapshot.value is not None:
                self.snapshots.append((materialization.asset_key.path[1], snapshot.value))
                shown = f" (lake snapshot {snapshot.value})"
            print(f"  {elapsed}  materialized {key}{shown}", file=self._out, flush=True)
            return
        print(f"  {elapsed}  FAILED {entry.step_key}", file=self._out, flush=True)
        failure = entry.dagster_event.step_failure_data if entry.dagster_event else None
        error = failure.error if failure else None
        while error is not None and error.cause is not None:  # the step's own error, unwrapped
            error = error.cause
        if error is not None:
            message = error.message.split(": ", 1)[-1].strip()
            print(f"            {error.cls_name}: {message[:400]}", file=self._out, flush=True)


def _copy(source: IO[str], log: TextIO) -> None:
    with source:
        for line in source:
            log.write(line)


def demo_lake(project: Path) -> Lake:
    """`demo --ducklake`'s lake: a SQLite catalog and a data folder under the project's data/."""
    return Lake(
        catalog=f"sqlite:{(project / DEMO_LAKE_CATALOG).resolve()}",
        data_path=f"{(project / DEMO_LAKE_FILES).resolve()}/",
    )


def warehouse_args(warehouse: str | Lake) -> list[str]:
    """The `extralt-dagster summary` / `query` arguments that name the warehouse."""
    if isinstance(warehouse, Lake):
        return ["--catalog", warehouse.catalog, "--data-path", warehouse.data_path]
    return [warehouse]


def run_demo(
    project: Path, *, port: int = 0, speed: float = DEMO_SPEED, ducklake: bool = False
) -> int:
    """Every demo source materialized by `dagster asset materialize`, then the summary; with
    ``ducklake``, into `demo_lake` (and the snapshot of each load, and a time-travel query)."""
    warehouse: Path | Lake
    if ducklake:
        warehouse = demo_lake(project)
        log_path = (project / DEMO_LAKE_CATALOG).resolve().with_name("demo.log")
    else:
        warehouse = (project / "data" / "demo.duckdb").resolve()
        log_path = warehouse.with_name("demo.log")
    ensure_folder(log_path)
    with Emulator(port=port, speed=speed) as emulator:
        print(f"Extralt emulator on {emulator.url} (demo key, clock x{speed:g})", flush=True)
        env = _env(shared_env(emulator, project, warehouse))
        print("$ " + shlex.join(["dagster", *DEMO_COMMAND]), flush=True)
        print(f"  (Dagster's console log: {_shown(log_path)})", flush=True)
        started = time.monotonic()
        # Opened before Dagster starts, so the two never race to create a fresh instance.
        with (
            dg.DagsterInstance.from_config(env["DAGSTER_HOME"]) as instance,
            log_path.open("w", encoding="utf-8", buffering=1) as log,
        ):
            progress = Progress(instance, sys.stdout)
            proc = subprocess.Popen(
                [_bin("dagster"), *DEMO_COMMAND],
                env=env,
                cwd=project,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                bufsize=1,
            )
            assert proc.stdout is not None
            copier = threading.Thread(target=_copy, args=(proc.stdout, log), daemon=True)
            copier.start()
            while proc.poll() is None:
                progress.poll()
                time.sleep(PROGRESS_POLL_SECONDS)
            copier.join()
            progress.poll()
            code = proc.returncode
        seconds = time.monotonic() - started
        creates = emulator.count_requests("POST", "/v0/extract/runs")
        stops = emulator.count_requests("POST", "/v0/extract/runs/*/stop")
        live = [r.id for r in emulator.runs.values() if r.status not in TERMINAL_STATUSES]
    if code != 0:
        print(
            f"\nDemo FAILED: dagster asset materialize exited with {code}. "
            f"Dagster's console log, tracebacks included: {_shown(log_path)}; the run and every "
            "event are in the instance, so `make dev`'s UI shows them too.",
            file=sys.stderr,
        )
        return code
    print(
        f"\nMaterialized every demo source in {seconds:.0f}s: {creates} Extralt runs created, "
        f"{stops} stopped, {len(live)} left running."
    )
    from .sources import read_sources
    from .summary import print_summary

    # The sources file too: each source's credits in its schedule's time zone, as the summary
    # command prints them with --sources.
    sources_file = Path(__file__).with_name("demo_sources.yaml")
    # A lake as it is configured: DuckLake refuses a data path other than the one its catalog
    # holds, character for character, so the commands name the same absolute path.
    shown = warehouse if isinstance(warehouse, Lake) else _shown(warehouse)
    status = print_summary(shown, sources=read_sources(sources_file)) or (1 if live else 0)
    if isinstance(shown, Lake):
        status = status or _print_time_travel(shown, progress.snapshots)
    args = shlex.join([*warehouse_args(shown), "--sources", _shown(sources_file)])
    print(f"\nPrint this summary again: extralt-dagster summary {args}")
    return status


def _print_time_travel(lake: Lake, snapshots: list[tuple[str, int]]) -> int:
    """The snapshot each load committed, and a query of the lake as it was after the first:
    a command that runs it. 1 when a load reported no snapshot."""
    if not snapshots:
        print("\nNo load reported a lake snapshot (extralt/snapshot_id).", file=sys.stderr)
        return 1
    print(f"\nLake snapshots of these loads (metadata {SNAPSHOT_KEY}):")
    for source, snapshot in snapshots:
        print(f"  {source:<10} snapshot {snapshot}")
    first_source, first = min(snapshots, key=lambda s: s[1])
    query = time_travel_query(lake, first)
    command = shlex.join(["extralt-dagster", "query", *warehouse_args(lake), query])
    print(f"\nThe run log as it was after the {first_source} load (time travel):")
    print(f"  {command}")
    return 0


def time_travel_query(lake: Lake, snapshot: int) -> str:
    """Each source's runs and captures in the run log as of ``snapshot``."""
    return (
        "SELECT source, count(*) AS runs, sum(rows_loaded) AS captures "
        f"FROM {lake.alias}.{DEFAULT_SCHEMA}.runs AT (VERSION => {int(snapshot)}) "
        "GROUP BY source ORDER BY source"
    )


def second_shell_lines(shared: dict[str, str], *, select: str = "extralt/shoes/run*") -> list[str]:
    """What `make dev` prints for a CLI run that the UI shows: same instance, same emulator."""
    exports = " ".join(f"{k}={shlex.quote(v)}" for k, v in shared.items())
    command = shlex.join(["dagster", *DEMO_COMMAND[:-1], select])
    return [
        "For the command line, in a second shell (same Dagster instance, emulator and warehouse,"
        " so the UI shows its runs):",
        f"  export {exports}",
        f"  {command}",
    ]


def schedule_demo_robot(emulator: Emulator) -> None:
    """An Extralt schedule for the robot the demo observes, as its dashboard would set it: the
    runs the sensor loads by itself."""
    emulator.set_schedule(
        DEMO_SCHEDULED_ROBOT,
        every_seconds=DEMO_SCHEDULE_EVERY_SECONDS,
        budget=DEMO_SCHEDULE_BUDGET,
        first_in=DEMO_SCHEDULE_FIRST_IN_SECONDS,
    )
    every = DEMO_SCHEDULE_EVERY_SECONDS / emulator.clock.speed / 60
    print(
        f"Extralt schedule (emulated): robot {DEMO_SCHEDULED_ROBOT} runs every {every:g} min "
        f"by itself; the sensor {EXTERNAL_RUNS_SENSOR} loads each run into DuckDB.",
        flush=True,
    )


def run_dev(
    project: Path, *, port: int = 8765, speed: float = DEMO_SPEED, ducklake: bool = False
) -> int:
    """Emulator in this process, `dagster dev` in its own process group; both end together.
    The warehouse is `data/warehouse.duckdb`, or with ``ducklake`` the demo's lake."""
    warehouse: Path | Lake
    if ducklake:
        warehouse = demo_lake(project)
    else:
        warehouse = Path(ensure_folder((project / DEFAULT_DUCKDB_PATH).resolve()))
    with Emulator(port=port, speed=speed) as emulator:
        print(f"Extralt emulator on {emulator.url} (demo key, clock x{speed:g})", flush=True)
        schedule_demo_robot(emulator)
        shared = shared_env(emulator, project, warehouse)
        env = _env(shared)
        print(f"Dagster instance: {env['DAGSTER_HOME']}", flush=True)
        for line in second_shell_lines(shared):
            print(line, flush=True)
        print("", flush=True)
        proc = subprocess.Popen(
            [_bin("dagster"), "dev", "-w", "workspace.yaml"],
            env=env,
            cwd=project,
            start_new_session=True,
        )
        # `dagster dev` has its own session, so a signal to this process (Ctrl-C, `kill`, a
        # closed terminal) reaches only us: we end its whole group, then the emulator.
        previous = {sig: signal.signal(sig, _raise_stopped) for sig in _STOP_SIGNALS}
        try:
            return proc.wait()
        except (KeyboardInterrupt, _Stopped):
            return 0
        finally:
            for sig in _STOP_SIGNALS:
                signal.signal(sig, signal.SIG_IGN)  # a second signal must not cut the clean-up
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait(timeout=10)
            for sig, handler in previous.items():
                signal.signal(sig, handler)


_STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP)


class _Stopped(Exception):
    """SIGTERM or SIGHUP arrived while `dagster dev` ran."""


def _raise_stopped(signum: int, frame: object) -> None:
    raise _Stopped(signum)
