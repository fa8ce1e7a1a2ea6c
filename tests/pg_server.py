"""A real PostgreSQL server for a test session: the DuckLake catalog of the PostgreSQL tests.

`PostgresServer` runs Debian's `postgresql` binaries (`apt-get install postgresql`; `.ci/run`
installs it): `initdb` into a new temporary folder, the server on 127.0.0.1 and a free port, no
Unix socket, password (SCRAM) authentication with a random password. Stopping it (fast
shutdown) deletes the folder. The binaries are found through `EXTRALT_PG_BINDIR`, then
`pg_config --bindir`, the folder `initdb` on PATH links to, then the newest
/usr/lib/postgresql/*/bin.

`initdb` and `postgres` refuse to run as root: as root the server runs as the `postgres` user
(the Debian package creates it; `EXTRALT_PG_USER` names another), which then owns the folder.

The password never appears in a connection string this module builds: `dsn()` has none, and
`env()` is the one place it is handed over (as PGPASSWORD, for the tools and libpq).

Use the `postgres_server` fixture (session-scoped: one server per pytest-xdist worker) by
importing it into a test module: `from tests.pg_server import postgres_server  # noqa: F401`.
"""

import contextlib
import glob
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.processes import free_port

SUPERUSER = "postgres"


def find_bindir() -> Path:
    """The folder with `initdb`, `postgres` and `pg_isready`, or an error saying how to get it."""
    candidates: list[str] = []
    if env := os.environ.get("EXTRALT_PG_BINDIR"):
        candidates.append(env)
    if pg_config := shutil.which("pg_config"):
        with contextlib.suppress(OSError, subprocess.CalledProcessError):
            out = subprocess.run([pg_config, "--bindir"], capture_output=True, check=True)
            candidates.append(out.stdout.decode().strip())
    if initdb := shutil.which("initdb"):
        candidates.append(str(Path(initdb).resolve().parent))
    candidates += sorted(
        glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(Path(p).parent.name), reverse=True
    )
    for folder in candidates:
        if all((Path(folder) / tool).is_file() for tool in ("initdb", "postgres", "pg_isready")):
            return Path(folder)
    raise RuntimeError(
        "PostgreSQL server binaries not found (initdb, postgres, pg_isready): the PostgreSQL "
        "tests need them. Install Debian's `postgresql` (`apt-get install postgresql`, as "
        f".ci/run does) or set EXTRALT_PG_BINDIR to their folder. Looked in: {candidates}"
    )


class PostgresServer:
    """One PostgreSQL server in a temporary folder; `start()`, then `stop()` (deletes it)."""

    def __init__(self, *, bindir: Path | None = None, start_timeout: float = 60.0) -> None:
        self.bindir = bindir or find_bindir()
        self.start_timeout = start_timeout
        self.host = "127.0.0.1"
        self.port = 0
        self.user = SUPERUSER
        self.password = secrets.token_urlsafe(18)
        self._run_as: pwd.struct_passwd | None = None
        if os.geteuid() == 0:
            name = os.environ.get("EXTRALT_PG_USER", "postgres")
            try:
                self._run_as = pwd.getpwnam(name)
            except KeyError:
                raise RuntimeError(
                    f"running as root, and PostgreSQL refuses to: the server would run as the "
                    f"user {name!r}, which does not exist. Install Debian's `postgresql` "
                    f"(it creates `postgres`) or set EXTRALT_PG_USER to a non-root user."
                ) from None
        self.root: Path | None = None
        self._proc: subprocess.Popen | None = None

    # --- the connection ----------------------------------------------------------------

    def dsn(self, dbname: str = "postgres") -> str:
        """A libpq connection string without the password (see `env()`)."""
        return f"host={self.host} port={self.port} user={self.user} dbname={dbname}"

    def env(self) -> dict[str, str]:
        """The environment entries that let libpq (DuckDB's postgres extension, psql) log in."""
        return {"PGPASSWORD": self.password}

    def create_database(self, name: str) -> str:
        """Create database `name` (a fresh DuckLake catalog); returns its `dsn()`."""
        self._tool("createdb", "-h", self.host, "-p", str(self.port), "-U", self.user, name)
        return self.dsn(name)

    def drop_database(self, name: str) -> None:
        self._tool("dropdb", "-h", self.host, "-p", str(self.port), "-U", self.user, name)

    def psql(self, sql: str, dbname: str = "postgres") -> str:
        """Run `sql` with psql (-At: unaligned, tuples only) and return its output."""
        return self._tool(
            "psql", "-X", "-v", "ON_ERROR_STOP=1", "-At", "-c", sql, self.dsn(dbname)
        ).stdout.decode()

    # --- the server ----------------------------------------------------------------------

    def start(self) -> "PostgresServer":
        # As root the server's user must reach the folder: /tmp, not a private TMPDIR.
        self.root = Path(
            tempfile.mkdtemp(prefix="extralt-pg-", dir="/tmp" if self._run_as else None)
        )
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self) -> None:
        assert self.root is not None
        if self._run_as is not None:
            os.chown(self.root, self._run_as.pw_uid, self._run_as.pw_gid)
        pwfile = self.root / "pwfile"
        pwfile.write_text(self.password + "\n")
        if self._run_as is not None:
            os.chown(pwfile, self._run_as.pw_uid, self._run_as.pw_gid)
        pwfile.chmod(0o600)
        data = self.root / "data"
        self._tool(
            "initdb",
            "-D",
            str(data),
            "-U",
            self.user,
            "--pwfile",
            str(pwfile),
            "--auth=scram-sha-256",
            "-E",
            "UTF8",
            "--locale=C",
            "--no-sync",
            use_password=False,
        )
        pwfile.unlink()
        log_path = self.root / "postgres.log"
        # A port that was free a moment ago can be taken before the server binds it: try again.
        for _ in range(5):
            self.port = free_port()
            with open(log_path, "ab") as log:
                self._proc = subprocess.Popen(
                    [
                        str(self.bindir / "postgres"),
                        "-D",
                        str(data),
                        "-h",
                        self.host,
                        "-p",
                        str(self.port),
                        "-k",
                        "",  # no Unix socket: TCP on 127.0.0.1 only
                        # A test catalog: durability is not needed, speed is.
                        "-c",
                        "fsync=off",
                        "-c",
                        "synchronous_commit=off",
                        "-c",
                        "full_page_writes=off",
                    ],
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                    **self._as_user(),
                )
            if self._wait_ready(log_path):
                return
            self._proc.wait(timeout=10)
            self._proc = None
            if "could not bind" not in log_path.read_text(errors="replace"):
                break
        raise RuntimeError(
            f"PostgreSQL did not start; its log ({log_path}):\n"
            + log_path.read_text(errors="replace")[-4000:]
        )

    def _wait_ready(self, log_path: Path) -> bool:
        assert self._proc is not None
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                return False
            ready = subprocess.run(
                [str(self.bindir / "pg_isready"), "-q", "-h", self.host, "-p", str(self.port)],
                stdin=subprocess.DEVNULL,
                capture_output=True,
            )
            if ready.returncode == 0:
                return True
            time.sleep(0.05)
        raise RuntimeError(
            f"PostgreSQL was not ready after {self.start_timeout:.0f} s; its log ({log_path}):\n"
            + log_path.read_text(errors="replace")[-4000:]
        )

    def stop(self) -> None:
        """Fast shutdown (SIGINT: clients are disconnected), SIGKILL after 30 s; delete the folder."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
        if proc is not None:
            # The postmaster's children (checkpointer, walwriter, backends) share its group.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
        if self.root is not None:
            shutil.rmtree(self.root, ignore_errors=True)
            self.root = None

    def __enter__(self) -> "PostgresServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- helpers -------------------------------------------------------------------------

    def _as_user(self) -> dict:
        if self._run_as is None:
            return {}
        return {
            "user": self._run_as.pw_uid,
            "group": self._run_as.pw_gid,
            "extra_groups": [],
            "env": {
                "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                "HOME": self._run_as.pw_dir,
                "USER": self._run_as.pw_name,
                "LC_ALL": "C",
            },
            "cwd": str(self.root),
        }

    def _tool(
        self, name: str, *args: str, use_password: bool = True
    ) -> subprocess.CompletedProcess:
        kwargs = self._as_user()
        env = kwargs.pop("env", None) or {**os.environ, "LC_ALL": "C"}
        if use_password:
            env = {**env, **self.env()}
        else:
            env = {k: v for k, v in env.items() if k != "PGPASSWORD"}
        done = subprocess.run(
            [str(self.bindir / name), *args],
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            **kwargs,
        )
        if done.returncode != 0:
            out = (done.stdout + done.stderr).decode(errors="replace").replace(self.password, "***")
            raise RuntimeError(
                f"{name} {args[0] if args else ''} failed ({done.returncode}):\n{out}"
            )
        return done


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A running PostgreSQL server for the whole session (per xdist worker); stopped and
    deleted at the end. Each test makes its own catalog: `postgres_server.create_database(name)`."""
    with PostgresServer() as server:
        yield server
