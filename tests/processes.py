"""Servers the tests start as whole process trees: each in its own process group, ended as one.

`dagster-webserver` and `dagster dev` fork code servers, a daemon, run workers and step
processes. Started with `start_new_session=True` they all share the leader's process group, so
`end_group` can end every one of them, pass or fail, and no test leaves a process behind.
"""

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any

import httpx


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (the OS picks it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_group(
    cmd: Sequence[str],
    *,
    env: dict[str, str],
    cwd: str | os.PathLike[str] | None = None,
    output: IO[Any] | int | None = subprocess.DEVNULL,
) -> subprocess.Popen:
    """Start `cmd` as the leader of a new session (and so of a new process group)."""
    return subprocess.Popen(
        list(cmd),
        env=env,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        stdout=output,
        stderr=subprocess.STDOUT if output not in (None, subprocess.DEVNULL) else output,
        start_new_session=True,
    )


def group_alive(pgid: int) -> bool:
    """True while any process (zombies included) is left in the process group."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, sig)


def end_group(proc: subprocess.Popen, *, grace: float = 30.0) -> None:
    """SIGTERM the whole group, wait up to `grace` s for all of it, then SIGKILL what is left.

    Waits for every member, not just the leader: a leader that exits first must not leave its
    children running.
    """
    pgid = proc.pid  # a session leader's pgid is its pid
    _signal_group(pgid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=grace)
    while _live_members(pgid) and time.monotonic() < deadline:
        time.sleep(0.1)
    if proc.poll() is None or _live_members(pgid):
        _signal_group(pgid, signal.SIGKILL)
        proc.wait(timeout=10)
        kill_deadline = time.monotonic() + 10
        while _live_members(pgid) and time.monotonic() < kill_deadline:
            time.sleep(0.1)


def _live_members(pgid: int) -> list[int]:
    """Members of the group that are not zombies (Linux: from /proc; elsewhere: kill -0)."""
    proc_dir = Path("/proc")
    if not proc_dir.is_dir():
        return [pgid] if group_alive(pgid) else []
    members = []
    for entry in proc_dir.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # pid (comm) state ppid pgrp ...; comm may contain spaces and parentheses.
        fields = stat[stat.rfind(")") + 2 :].split()
        if len(fields) > 2 and fields[0] != "Z" and int(fields[2]) == pgid:
            members.append(int(entry.name))
    return members


def find_processes(*, env: str | None = None, arg: str | None = None) -> list[int]:
    """Pids of live (non-zombie) processes whose environment has the entry `env` ("NAME=value")
    or whose command line contains `arg`. Linux only (reads /proc); elsewhere [].

    What escaped a process group (a daemonized grandchild, a browser helper) still carries its
    parent's DAGSTER_HOME or profile folder: this finds it.
    """
    proc_dir = Path("/proc")
    if not proc_dir.is_dir():
        return []
    found = []
    for entry in proc_dir.iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            state = (entry / "stat").read_text()
            if state[state.rfind(")") + 2 :].split()[0] == "Z":
                continue
            hit = (
                env is not None and env.encode() in (entry / "environ").read_bytes().split(b"\0")
            ) or (arg is not None and arg.encode() in (entry / "cmdline").read_bytes())
        except OSError:
            continue
        if hit:
            found.append(int(entry.name))
    return found


def kill_leftovers(find: Callable[[], list[int]], what: str, grace: float = 10.0) -> None:
    """Give stragglers `grace` s to exit, then SIGKILL each (by pid) and fail, naming them."""
    deadline = time.monotonic() + grace
    while (pids := find()) and time.monotonic() < deadline:
        time.sleep(0.1)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    assert not pids, f"{what} left processes behind: {pids}"


def http_ok(url: str, proc: subprocess.Popen, what: str) -> bool:
    """True once `url` answers 200; raises if the server process already exited."""
    if proc.poll() is not None:
        raise AssertionError(f"{what} exited with code {proc.returncode} before it was ready")
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False
