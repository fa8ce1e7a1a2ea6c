"""`make demo` and `make dev`: the whole pipeline on this machine, against the local emulator."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from .emulator import DEMO_API_KEY, Emulator

DEMO_SPEED = 10.0  # a 300-capture demo run takes ~2 s instead of ~17 s


def _dagster_home(project: Path) -> Path:
    """`.dagster_home` under the project, with the project's dagster.yaml in it."""
    home = Path(os.environ.get("DAGSTER_HOME") or project / ".dagster_home").resolve()
    home.mkdir(parents=True, exist_ok=True)
    shipped = project / "dagster.yaml"
    if shipped.exists():
        shutil.copyfile(shipped, home / "dagster.yaml")
    return home


def _env(emulator: Emulator, project: Path, duckdb_path: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        DAGSTER_HOME=str(_dagster_home(project)),
        # The demo key and the emulator's URL, whatever the shell has: a real key never goes
        # to the emulator, and the demo never reaches the real API.
        EXTRALT_API_KEY=DEMO_API_KEY,
        EXTRALT_BASE_URL=emulator.url,
        EXTRALT_DUCKDB_PATH=str(duckdb_path),
    )
    env.setdefault("DAGSTER_DISABLE_TELEMETRY", "yes")
    return env


def _bin(name: str) -> str:
    candidate = Path(sys.executable).with_name(name)
    return str(candidate) if candidate.exists() else name


def run_demo(project: Path, *, port: int = 0, speed: float = DEMO_SPEED) -> int:
    duckdb_path = (project / "data" / "demo.duckdb").resolve()
    duckdb_path.parent.mkdir(parents=True, exist_ok=True)
    with Emulator(port=port, speed=speed) as emulator:
        print(f"Extralt emulator on {emulator.url} (demo key, clock x{speed:g})", flush=True)
        env = _env(emulator, project, duckdb_path)
        started = time.monotonic()
        cmd = [
            _bin("dagster"),
            "asset",
            "materialize",
            "-m",
            "extralt_dagster.definitions",
            "--select",
            "*",
        ]
        print("$ " + " ".join(cmd[1:]), flush=True)
        code = subprocess.call(cmd, env=env, cwd=project)
        seconds = time.monotonic() - started
        creates = emulator.count_requests("POST", "/v0/extract/runs")
        stops = emulator.count_requests("POST", "/v0/extract/runs/*/stop")
        live = [r.id for r in emulator.runs.values() if r.status not in TERMINAL]
    if code != 0:
        print(f"\nDemo FAILED: dagster asset materialize exited with {code}.", file=sys.stderr)
        return code
    print(
        f"\nMaterialized every demo source in {seconds:.0f}s: {creates} Extralt runs created, "
        f"{stops} stopped, {len(live)} left running."
    )
    from .summary import print_summary

    return print_summary(duckdb_path) or (1 if live else 0)


TERMINAL = {"completed", "failed", "stopped"}


def run_dev(project: Path, *, port: int = 8765, speed: float = DEMO_SPEED) -> int:
    """Emulator in this process, `dagster dev` in its own process group; both end together."""
    duckdb_path = (project / "data" / "extralt.duckdb").resolve()
    duckdb_path.parent.mkdir(parents=True, exist_ok=True)
    with Emulator(port=port, speed=speed) as emulator:
        print(f"Extralt emulator on {emulator.url} (demo key, clock x{speed:g})", flush=True)
        env = _env(emulator, project, duckdb_path)
        proc = subprocess.Popen(
            [_bin("dagster"), "dev", "-w", "workspace.yaml"],
            env=env,
            cwd=project,
            start_new_session=True,
        )
        try:
            return proc.wait()
        except KeyboardInterrupt:
            return 0
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
