"""`make demo` and `make dev`: the whole pipeline on this machine, against the local emulator."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import TextIO

from .emulator import DEMO_API_KEY, Emulator
from .instance import INSTANCE_YAML

DEMO_SPEED = 10.0  # a 300-capture demo run takes ~2 s instead of ~17 s
TERMINAL = {"completed", "failed", "stopped"}
DEMO_COMMAND = ("asset", "materialize", "-m", "extralt_dagster.definitions", "--select", "*")

# Dagster's console log line: `<time> - dagster - <LEVEL> - <job> - <run id> - <pid> - <step>
# - <EVENT_TYPE> - <message>`; only the events the demo reports on are matched.
_EVENT = re.compile(
    r" - dagster - \w+ - \S+ - [0-9a-f-]{36} - \d+ - (?P<step>\S+) - "
    r"(?P<event>ASSET_MATERIALIZATION|STEP_FAILURE) - (?P<message>.*)$"
)
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
# A traceback's `module.ErrorClass: message` line; Dagster's own wrapper around the step's error
# is skipped for the error it wraps.
_ERROR_LINE = re.compile(
    r"^(?:[A-Za-z_][\w.]*\.)?(?P<name>\w*(?:Error|Exception|Failure)\w*): (?P<message>.+)$"
)
_WRAPPERS = frozenset({"DagsterExecutionStepExecutionError"})


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


def _env(shared: dict[str, str]) -> dict[str, str]:
    """The subprocess's environment: this one, with `shared_env` on top."""
    env = dict(os.environ)
    env.update(shared)
    env.setdefault("DAGSTER_DISABLE_TELEMETRY", "yes")
    return env


def shared_env(emulator: Emulator, project: Path, duckdb_path: Path) -> dict[str, str]:
    """What a second shell needs to reach the same instance, emulator and warehouse."""
    return {
        "DAGSTER_HOME": str(_dagster_home(project)),
        # The demo key and the emulator's URL, whatever the shell has: a real key never goes
        # to the emulator, and the demo never reaches the real API.
        "EXTRALT_API_KEY": DEMO_API_KEY,
        "EXTRALT_BASE_URL": emulator.url,
        "EXTRALT_DUCKDB_PATH": str(duckdb_path),
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


def _asset_key(message: str) -> str:
    """`Materialized value extralt books run.` -> `extralt/books/run`."""
    value = message.removeprefix("Materialized value ").rstrip(".")
    return "/".join(value.split())


def report_progress(lines: Iterable[str], log: TextIO, out: TextIO, started: float) -> None:
    """Copy Dagster's output to `log`; print one line per materialized asset, and for a failed
    step its name and the first error line of its traceback (the whole of it stays in the log)."""
    failing = False  # between a STEP_FAILURE and its error line
    for raw in lines:
        log.write(raw)
        line = _ANSI.sub("", raw.rstrip("\n"))
        match = _EVENT.search(line)
        if match is None:
            error = _ERROR_LINE.match(line) if failing else None
            if error is not None and error["name"] not in _WRAPPERS:
                print(
                    f"            {error['name']}: {error['message'][:400]}", file=out, flush=True
                )
                failing = False
            continue
        elapsed = f"{time.monotonic() - started:5.0f}s"
        if match["event"] == "ASSET_MATERIALIZATION":
            failing = False
            print(f"  {elapsed}  materialized {_asset_key(match['message'])}", file=out, flush=True)
        else:
            failing = True
            print(f"  {elapsed}  FAILED {match['step']}", file=out, flush=True)


def run_demo(project: Path, *, port: int = 0, speed: float = DEMO_SPEED) -> int:
    duckdb_path = (project / "data" / "demo.duckdb").resolve()
    duckdb_path.parent.mkdir(parents=True, exist_ok=True)
    log_path = duckdb_path.with_name("demo.log")
    with Emulator(port=port, speed=speed) as emulator:
        print(f"Extralt emulator on {emulator.url} (demo key, clock x{speed:g})", flush=True)
        env = _env(shared_env(emulator, project, duckdb_path))
        print("$ " + shlex.join(["dagster", *DEMO_COMMAND]), flush=True)
        print(f"  (Dagster's full log: {_shown(log_path)})", flush=True)
        started = time.monotonic()
        with log_path.open("w", encoding="utf-8", buffering=1) as log:
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
            with proc.stdout:
                report_progress(proc.stdout, log, sys.stdout, started)
            code = proc.wait()
        seconds = time.monotonic() - started
        creates = emulator.count_requests("POST", "/v0/extract/runs")
        stops = emulator.count_requests("POST", "/v0/extract/runs/*/stop")
        live = [r.id for r in emulator.runs.values() if r.status not in TERMINAL]
    if code != 0:
        print(
            f"\nDemo FAILED: dagster asset materialize exited with {code}. "
            f"The whole log, tracebacks included: {_shown(log_path)}",
            file=sys.stderr,
        )
        return code
    print(
        f"\nMaterialized every demo source in {seconds:.0f}s: {creates} Extralt runs created, "
        f"{stops} stopped, {len(live)} left running."
    )
    from .summary import print_summary

    shown = _shown(duckdb_path)
    status = print_summary(shown) or (1 if live else 0)
    print(f"\nPrint this summary again: extralt-dagster summary {shlex.quote(shown)}")
    return status


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


def run_dev(project: Path, *, port: int = 8765, speed: float = DEMO_SPEED) -> int:
    """Emulator in this process, `dagster dev` in its own process group; both end together."""
    duckdb_path = (project / "data" / "warehouse.duckdb").resolve()
    duckdb_path.parent.mkdir(parents=True, exist_ok=True)
    with Emulator(port=port, speed=speed) as emulator:
        print(f"Extralt emulator on {emulator.url} (demo key, clock x{speed:g})", flush=True)
        shared = shared_env(emulator, project, duckdb_path)
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
