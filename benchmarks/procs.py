"""Run one measurement in a child process: wall time, peak RSS, a JSON result, bounded.

Every contender runs in its own process so that its peak RSS is its own. The peak comes from
GNU ``/usr/bin/time -f %M``, which forks from a process of a few MB: ``os.wait4`` straight from
this (large) process would not do, because Linux carries the parent's high-water RSS into a
vforked child's ``ru_maxrss`` (every child would report at least the parent's size). Without
``/usr/bin/time`` it falls back to ``wait4``, and says so. ``ru_maxrss`` covers the command and
the descendants it waited for (the largest one), e.g. Dagster's step processes.

A watchdog kills the child's process group when its total RSS passes a cap or it runs past a
time limit, so a runaway alternative cannot take the machine down; that is recorded as a
failure, not a number.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
GNU_TIME = "/usr/bin/time" if os.access("/usr/bin/time", os.X_OK) else None


@dataclass
class ChildResult:
    name: str
    ok: bool
    wall_seconds: float
    peak_rss_mb: float
    data: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    #: User + system CPU of the whole process (and the descendants it waited for).
    cpu_seconds: float | None = None


def mem_available_mb() -> float:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 1024
    return 0.0


def _rss_mb(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def _group_rss_mb(pgid: int) -> float:
    """Total RSS of the processes in process group ``pgid``."""
    total = 0.0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if len(fields) > 2 and fields[2] == str(pgid):
            total += _rss_mb(int(entry.name))
    return total


def _time_usage(path: Path) -> tuple[float | None, float | None]:
    """Peak RSS (MB) and CPU seconds from the ``%M %U %S`` line GNU time wrote last."""
    try:
        peak, user, system = path.read_text().strip().splitlines()[-1].split()[:3]
        return int(peak) / 1024, float(user) + float(system)
    except (OSError, IndexError, ValueError):
        return None, None


def run_child(
    name: str,
    argv: list[str],
    *,
    log_path: Path,
    out_path: Path | None = None,
    env: dict[str, str] | None = None,
    timeout_seconds: float = 1800.0,
    rss_cap_mb: float = 16_000.0,
) -> ChildResult:
    """Run ``argv``; the child writes its JSON result to ``out_path`` (if given)."""
    if out_path is not None:
        out_path.unlink(missing_ok=True)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    child_env = {**os.environ, **(env or {})}
    child_env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(ROOT), child_env.get("PYTHONPATH", "")) if p
    )
    killed: list[str] = []
    done = threading.Event()
    peak_file = log_path.parent / f".peak-{name}.txt"
    peak_file.unlink(missing_ok=True)
    if GNU_TIME:
        argv = [GNU_TIME, "-f", "%M %U %S", "-o", str(peak_file), *argv]
    with open(log_path, "ab") as log:
        log.write(f"\n$ {' '.join(argv)}\n".encode())
        log.flush()
        started = time.perf_counter()
        proc = subprocess.Popen(
            argv,
            cwd=ROOT,
            env=child_env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: the watchdog kills only that
        )

        def watch() -> None:
            while not done.wait(0.25):
                rss = _group_rss_mb(proc.pid)
                reason = None
                if rss > rss_cap_mb:
                    reason = f"killed: RSS {rss:,.0f} MB passed the {rss_cap_mb:,.0f} MB cap"
                elif time.perf_counter() - started > timeout_seconds:
                    reason = f"killed: still running after {timeout_seconds:,.0f} s"
                if reason:
                    killed.append(reason)
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(proc.pid, signal.SIGKILL)
                    return

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - started
        done.set()
        watcher.join()
        proc.returncode = os.waitstatus_to_exitcode(status)
    peak_mb, cpu = _time_usage(peak_file) if GNU_TIME else (None, None)
    if peak_mb is None:
        peak_mb = usage.ru_maxrss / 1024  # KiB on Linux
    if cpu is None:
        cpu = usage.ru_utime + usage.ru_stime
    if killed:
        return ChildResult(name, False, wall, peak_mb, error=killed[0], cpu_seconds=cpu)
    if proc.returncode != 0:
        return ChildResult(
            name,
            False,
            wall,
            peak_mb,
            error=f"exit {proc.returncode}: {_tail(log_path)}",
            cpu_seconds=cpu,
        )
    data: dict[str, Any] = {}
    if out_path is not None:
        try:
            data = json.loads(out_path.read_text())
        except (OSError, ValueError) as exc:
            return ChildResult(name, False, wall, peak_mb, error=f"no result: {exc}")
    return ChildResult(name, True, wall, peak_mb, data=data, cpu_seconds=cpu)


def python_child(
    name: str, kind: str, params: dict[str, Any], *, workdir: Path, **kwargs: Any
) -> ChildResult:
    """``python -m benchmarks.contenders KIND`` with ``params``; see contenders.py."""
    out = workdir / f"result-{name}.json"
    params_path = workdir / f"params-{name}.json"
    params_path.write_text(json.dumps(params))
    argv = [sys.executable, "-m", "benchmarks.contenders", kind, str(params_path), str(out)]
    return run_child(name, argv, log_path=workdir / "children.log", out_path=out, **kwargs)


def _tail(path: Path, lines: int = 6) -> str:
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return " | ".join(line.strip() for line in text[-lines:])[-600:]
