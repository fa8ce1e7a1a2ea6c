"""DuckLake under concurrent use, against real catalogs (issue 17).

- SQLite catalog: an analyst in another process keeps plain DuckDB attached to the lake and
  queries the products tables every 0.5 s while ten loads of two sources commit, one at a time
  (the `duckdb` pool at 1). No load fails, no query fails, and every query sees one whole
  snapshot: the snapshot a load committed, with the counts it had.
- PostgreSQL catalog: two sources load at the same time into one lake (the `duckdb` pool at 2,
  the multiprocess executor) while a reader queries. Both land, nothing lost or duplicated, and
  the reader sees whole snapshots. Whether the two transactions overlap is up to the scheduler
  there, so a third test holds two loads until both reach COMMIT: both commit (the first loads
  of two sources conflict on the shared `runs` view, and one is retried).
- The PostgreSQL server those tests use (tests/pg_server.py): it starts, needs its password,
  holds a DuckLake catalog, and leaves nothing behind.

The analyst and the reader are plain DuckDB, as a notebook would have it: `ATTACH
'ducklake:...'` with no option of this package, and `fetchone()`, which leaves the query's
transaction open until the next statement (in SQLite's default journal mode that alone would
make the loader's COMMIT fail: the lake's WAL mode is what lets it commit).
"""

import importlib.util
import itertools
import json
import multiprocessing
import os
import select
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import dagster as dg
import duckdb
import pytest

from extralt_dagster import DuckLakeResource, ExtraltResource, build_extralt_assets, warehouse
from extralt_dagster.emulator.datagen import write_captures
from extralt_dagster.naming import captures_asset_key
from tests.pg_server import PostgresServer, postgres_server  # noqa: F401

from .support import FAST_POLL, fast_extralt, materialization_metadata, wait_until

ROOT = Path(__file__).resolve().parent.parent
SOURCES = (("shoes", "rbt_shoes"), ("books", "rbt_books"))

# --- helpers --------------------------------------------------------------------------------


def _install(conn: duckdb.DuckDBPyConnection, name: str) -> None:
    """From the pip package (`extralt-dagster[ducklake]`) when present, else DuckDB's repository."""
    spec = importlib.util.find_spec(f"duckdb_extension_{name}")
    if spec is not None and spec.submodule_search_locations:
        folder = Path(next(iter(spec.submodule_search_locations)))
        found = sorted(folder.glob(f"extensions/v{duckdb.__version__}/{name}.duckdb_extension"))
        if found:
            conn.execute(f"INSTALL '{found[0]}'")
            return
    conn.execute(f"INSTALL {name}")


def _pg_lake(dsn: str, password: str | None, data_path: Path) -> duckdb.DuckDBPyConnection:
    conn = duckdb.connect()
    for name in ("ducklake", "postgres_scanner"):
        _install(conn, name)
        conn.execute(f"LOAD {name}")
    if password is not None:
        # libpq takes the password from DuckDB's default postgres secret: it is in no string.
        conn.execute(f"CREATE TEMPORARY SECRET (TYPE postgres, PASSWORD '{password}')")
    conn.execute(f"ATTACH 'ducklake:postgres:{dsn}' AS lake (DATA_PATH '{data_path}/')")
    return conn


def _attach_plain(conn: duckdb.DuckDBPyConnection, catalog: str, data_path: str) -> None:
    """A lake attached as an analyst would: DuckDB's own ATTACH, no option of this package
    (a PostgreSQL password comes from PGPASSWORD, as libpq reads it)."""
    scanner = "sqlite_scanner" if catalog.startswith("sqlite:") else "postgres_scanner"
    for name in ("ducklake", scanner):
        _install(conn, name)
        conn.execute(f"LOAD {name}")
    conn.execute(f"ATTACH 'ducklake:{catalog}' AS lake (DATA_PATH '{data_path}')")


#: One statement, so one transaction and one snapshot: the snapshot it read and what it counted.
COUNTS = ", ".join(
    f"(SELECT count(*) FROM lake.extralt.{name}_{kind}{{at}})"
    for name, _ in SOURCES
    for kind in ("products", "captures")
)
ANALYST_QUERY = f"SELECT (SELECT id FROM lake.current_snapshot()), {COUNTS.format(at='')}"


def analyst(catalog: str, data_path: str, interval: float = 0.5) -> None:
    """The analyst process: one connection kept attached, the products (and history) counted
    every `interval` s, one JSON line per query on stdout, until stdin closes."""
    conn = duckdb.connect()
    _attach_plain(conn, catalog, data_path)
    print(json.dumps({"attached": True}), flush=True)
    while True:
        started = time.time()
        clock = time.perf_counter()
        try:
            # fetchone(), as in a notebook: the transaction stays open until the next statement.
            snapshot, *counts = conn.execute(ANALYST_QUERY).fetchone()
            line = {"started": started, "seconds": time.perf_counter() - clock}
            line |= {"snapshot": snapshot, "counts": counts}
        except duckdb.Error as exc:
            line = {"started": started, "error": f"{type(exc).__name__}: {exc}"}
        print(json.dumps(line), flush=True)
        readable, _, _ = select.select([sys.stdin], [], [], interval)
        if readable and not sys.stdin.readline():
            return


class Analyst:
    """`analyst` in a child process; `.queries` are its results so far; `stop()` ends it."""

    def __init__(
        self, catalog: str, data_path: str, tmp_path: Path, env: dict[str, str] | None = None
    ):
        self._stderr = open(tmp_path / "analyst.stderr", "w+")  # noqa: SIM115
        code = (
            f"from tests.test_lake_concurrency import analyst; analyst({catalog!r}, {data_path!r})"
        )
        self.proc = subprocess.Popen(
            [sys.executable, "-c", code],
            cwd=ROOT,
            env={**os.environ, **(env or {})},
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
        )
        self.lines: list[dict[str, Any]] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        wait_until(lambda: self.lines or self._died(), timeout=60, what="the analyst attached")
        assert self.lines == [{"attached": True}], self._died() or self.lines

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(json.loads(line))

    def _died(self) -> str | None:
        if self.proc.poll() is None:
            return None
        self._stderr.seek(0)
        return f"the analyst exited ({self.proc.returncode}): {self._stderr.read()[-3000:]}"

    @property
    def queries(self) -> list[dict[str, Any]]:
        return [line for line in self.lines if "started" in line]

    def query_after(self, moment: float) -> None:
        """Wait for a query that started after `moment` (time.time())."""
        wait_until(
            lambda: any(q["started"] > moment for q in self.queries) or self._died(),
            timeout=60,
            what="the analyst's next query",
        )
        assert not self._died(), self._died()

    def stop(self) -> None:
        if self.proc.stdin and not self.proc.stdin.closed:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=60)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            self._reader.join(timeout=10)
            self._stderr.close()


def _check_whole_snapshots(lake: warehouse.Lake, queries: list[dict[str, Any]], loaded: set[int]):
    """Each query read a snapshot a load committed, and counted exactly what that snapshot
    holds: nothing of a load in progress, nothing half of one."""
    assert [q for q in queries if "error" in q] == []
    seen = {q["snapshot"] for q in queries}
    assert seen <= loaded, f"snapshots no load committed: {sorted(seen - loaded)}"
    with warehouse.connect(lake, read_only=True) as con:
        truth = {
            snapshot: list(
                con.execute(f"SELECT {COUNTS.format(at=f' AT (VERSION => {snapshot})')}").fetchone()
            )
            for snapshot in seen
        }
    wrong = [q for q in queries if q["counts"] != truth[q["snapshot"]]]
    assert wrong == [], f"{len(wrong)} queries saw counts of no snapshot: {wrong[:3]}"
    # History only grows: in the order the queries ran, no count ever goes down.
    in_order = [q["counts"] for q in sorted(queries, key=lambda q: q["started"])]
    assert all(
        a <= b for prev, cur in itertools.pairwise(in_order) for a, b in zip(prev, cur, strict=True)
    )
    return seen


def _latency_line(label: str, queries: list[dict[str, Any]]) -> str:
    ms = sorted(q["seconds"] * 1000 for q in queries)
    if not ms:
        return f"{label}: no queries"
    p95 = ms[min(len(ms) - 1, round(0.95 * (len(ms) - 1)))]
    return (
        f"{label}: {len(ms)} queries, median {statistics.median(ms):.1f} ms, "
        f"p95 {p95:.1f} ms, max {ms[-1]:.1f} ms"
    )


def _during(queries: list[dict[str, Any]], windows: list[tuple[float, float]]):
    return [
        q
        for q in queries
        if any(a <= q["started"] <= b or a <= q["started"] + q["seconds"] <= b for a, b in windows)
    ]


# --- SQLite catalog: one writer, readers never block it ---------------------------------------


def test_an_analyst_attached_to_a_sqlite_lake_never_blocks_ten_loads_and_sees_whole_snapshots(
    emulator, instance, tmp_path, capsys
):
    lake = warehouse.Lake(
        catalog=f"sqlite:{tmp_path / 'lake' / 'catalog.sqlite'}",
        data_path=f"{tmp_path / 'lake' / 'data'}/",
    )
    resources = {
        "extralt": fast_extralt(emulator),
        "duckdb": DuckLakeResource(catalog=lake.catalog, data_path=lake.data_path),
    }
    assets = {
        name: build_extralt_assets(name, robot, budget=40, export_dir=str(tmp_path / "exports"))
        for name, robot in SOURCES
    }

    def load(name: str) -> tuple[int, tuple[float, float]]:
        began = time.time()
        # In process: one step at a time, the `duckdb` pool at 1 as a SQLite catalog needs.
        result = dg.materialize(
            assets[name], instance=instance, resources=resources, raise_on_error=False
        )
        window = (began, time.time())
        assert result.success, [
            e.step_failure_data.error.message for e in result.all_events if e.is_step_failure
        ]
        return materialization_metadata(result, captures_asset_key(name))[
            "extralt/snapshot_id"
        ], window

    loaded = {load(name)[0] for name, _ in SOURCES}  # the tables exist before the analyst looks
    analyst_proc = Analyst(lake.catalog, lake.data_path, tmp_path)
    windows = []
    try:
        for i in range(10):
            snapshot, window = load(SOURCES[i % 2][0])
            loaded.add(snapshot)
            windows.append(window)
            # The next load starts only after a query that began after this one committed, so
            # the analyst reads every load's snapshot at least once.
            analyst_proc.query_after(window[1])
    finally:
        analyst_proc.stop()
    queries = analyst_proc.queries

    assert len(loaded) == 12  # 2 first loads + 10, one snapshot each
    seen = _check_whole_snapshots(lake, queries, loaded)
    assert len(seen) >= 10
    during = _during(queries, windows)
    assert during, "no query ran while a load did"
    with capsys.disabled():
        print(
            "\nSQLite catalog, analyst attached during 10 loads: "
            + _latency_line("all", queries)
            + "; "
            + _latency_line("while a load ran", during)
        )


# --- PostgreSQL catalog: two sources load at the same time ------------------------------------

#: The environment `two_sources_job` (rebuilt in each step process) reads.
ENV_CATALOG, ENV_DATA, ENV_EXPORTS, ENV_PASSWORD = (
    "EXTRALT_TEST_LAKE_CATALOG",
    "EXTRALT_TEST_LAKE_DATA_PATH",
    "EXTRALT_TEST_EXPORT_DIR",
    "EXTRALT_TEST_LAKE_PASSWORD",
)
BUDGET = 300
ROUNDS = 1


def two_sources_job() -> dg.JobDefinition:
    """For `dg.reconstructable`: both sources in one job on the multiprocess executor, into the
    lake named by the environment (the catalog's password from an EnvVar)."""
    assets = [
        a
        for name, robot in SOURCES
        for a in build_extralt_assets(
            name, robot, budget=BUDGET, export_dir=os.environ[ENV_EXPORTS]
        )
    ]
    defs = dg.Definitions(
        assets=assets,
        jobs=[
            dg.define_asset_job(
                "both_sources",
                executor_def=dg.multiprocess_executor.configured({"max_concurrent": 4}),
            )
        ],
        resources={
            "extralt": ExtraltResource(
                api_key=dg.EnvVar("EXTRALT_API_KEY"),
                base_url=os.environ["EXTRALT_BASE_URL"],
                **FAST_POLL,
            ),
            "duckdb": DuckLakeResource(
                catalog=os.environ[ENV_CATALOG],
                data_path=os.environ[ENV_DATA],
                catalog_password=dg.EnvVar(ENV_PASSWORD),
            ),
        },
    )
    return defs.resolve_job_def("both_sources")


def _step_windows(instance: dg.DagsterInstance, run_id: str) -> dict[str, tuple[float, float]]:
    """Each captures step's (start, end) in the run's event log."""
    starts, ends = {}, {}
    for entry in instance.all_logs(run_id):
        event = entry.dagster_event
        if event is None or not (entry.step_key or "").endswith("__captures"):
            continue
        if event.event_type == dg.DagsterEventType.STEP_START:
            starts[entry.step_key] = entry.timestamp
        elif event.event_type == dg.DagsterEventType.STEP_SUCCESS:
            ends[entry.step_key] = entry.timestamp
    return {key: (starts[key], ends[key]) for key in starts}


def _load_window(
    instance: dg.DagsterInstance, run_id: str, name: str, metadata: dict[str, Any]
) -> tuple[float, float]:
    """When a load ran: it committed just before its materialization event, and took
    `extralt/load_seconds`."""
    key = captures_asset_key(name)
    [end] = [
        entry.timestamp
        for entry in instance.all_logs(run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION)
        if entry.dagster_event.asset_key == key
    ]
    return end - metadata["extralt/load_seconds"], end


def test_two_sources_load_at_once_into_a_postgres_lake_and_nothing_is_lost_or_doubled(
    emulator,
    tmp_path,
    monkeypatch,
    capsys,
    postgres_server,  # noqa: F811
):
    dsn = postgres_server.create_database("two_sources")
    lake = warehouse.Lake(
        catalog=f"postgres:{dsn}",
        data_path=f"{tmp_path / 'lake'}/",
        password=postgres_server.password,
    )
    for name, value in {
        "EXTRALT_API_KEY": emulator.api_key,
        "EXTRALT_BASE_URL": emulator.url,
        ENV_CATALOG: lake.catalog,
        ENV_DATA: lake.data_path,
        ENV_EXPORTS: str(tmp_path / "exports"),
        ENV_PASSWORD: postgres_server.password,
    }.items():
        monkeypatch.setenv(name, value)
    job = dg.reconstructable(two_sources_job)
    home = tmp_path / "dagster_home"
    home.mkdir()
    # The `duckdb` pool at 2: both captures steps may run at once (and both run steps).
    pools = {"concurrency": {"pools": {"default_limit": 2}}}

    # Each source's first load, outside Dagster, so that the reader has tables from the start
    # (two first loads racing is the next test's round 1).
    loaded: set[int] = set()
    rows = {name: 0 for name, _ in SOURCES}
    with warehouse.connect(lake) as conn:
        for name, _ in SOURCES:
            first = warehouse.load_export(
                conn,
                write_captures(tmp_path / f"{name}_0.parquet", run_id=f"run_{name}_0", count=5),
                target=warehouse.Target(name),
                run=warehouse.RunRecord(run_id=f"run_{name}_0"),
            )
            loaded.add(first.snapshot_id)
            rows[name] += first.rows
    reader = Analyst(
        lake.catalog, lake.data_path, tmp_path, env={"PGPASSWORD": postgres_server.password}
    )
    # Each download takes 2 s: both captures steps are surely in progress at the same time,
    # whatever the step processes' start-up jitter (the pool, not luck, decides).
    emulator.set_faults(match="GET /v0/extract/captures/export*", latency_seconds=2.0)
    overlaps, load_overlaps = [], []
    try:
        with dg.instance_for_test(temp_dir=str(home), overrides=pools) as instance:
            for _ in range(ROUNDS):
                with dg.execute_job(job, instance=instance) as result:
                    assert result.success, [
                        e.step_failure_data.error.message
                        for e in result.all_events
                        if e.is_step_failure
                    ]
                    load_windows = []
                    for name, _ in SOURCES:
                        md = materialization_metadata(result, captures_asset_key(name))
                        loaded.add(md["extralt/snapshot_id"])
                        rows[name] += md["dagster/row_count"]
                        load_windows.append(_load_window(instance, result.run_id, name, md))
                    (c0, c1), (d0, d1) = load_windows
                    load_overlaps.append(min(c1, d1) - max(c0, d0))
                    (a0, a1), (b0, b1) = _step_windows(instance, result.run_id).values()
                    overlaps.append(min(a1, b1) - max(a0, b0))
        reader.query_after(time.time())
    finally:
        reader.stop()

    assert len(loaded) == 2 + 2 * ROUNDS  # one snapshot per load
    # The pool let both captures steps run at once, every round.
    assert all(seconds > 0 for seconds in overlaps), overlaps
    with warehouse.connect(lake, read_only=True) as con:
        for name, _ in SOURCES:
            total, distinct = con.execute(
                f"SELECT count(*), count(DISTINCT (run_id, id)) FROM extralt.{name}_captures"
            ).fetchone()
            assert total == distinct == rows[name] == 5 + ROUNDS * BUDGET
            [(runs,)] = con.execute(
                f"SELECT count(*) FROM extralt.runs WHERE source = '{name}'"
            ).fetchall()
            assert runs == 1 + ROUNDS
    _check_whole_snapshots(lake, reader.queries, loaded)
    with capsys.disabled():
        print(
            f"\nPostgreSQL catalog, 2 sources at once ({ROUNDS} job runs): captures steps overlapped "
            f"{', '.join(f'{s:.1f}' for s in overlaps)} s, their loads "
            f"{', '.join(f'{s:.2f}' for s in load_overlaps)} s; reader "
            + _latency_line("all", reader.queries)
        )


class _CommitTogether:
    """A connection whose first COMMIT waits until the other load also reached its COMMIT: both
    transactions are open at once, whatever the scheduler does."""

    def __init__(self, conn: duckdb.DuckDBPyConnection, barrier: Any) -> None:
        self._conn, self._barrier = conn, barrier
        self.commits = 0

    def execute(self, sql: str, *args: Any, **kwargs: Any) -> Any:
        if sql.strip().upper() == "COMMIT":
            self.commits += 1
            if self._barrier is not None:
                self._barrier.wait(timeout=120)
                self._barrier = None  # a retried attempt commits on its own
        return self._conn.execute(sql, *args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)


def _load_in_child(
    lake: warehouse.Lake, source: str, run_id: str, count: int, folder: str, barrier, results
) -> None:
    try:
        path = write_captures(
            Path(folder) / f"{run_id}.parquet", run_id=run_id, count=count, host=f"{source}.example"
        )
        with warehouse.connect(lake) as conn:
            together = _CommitTogether(conn, barrier)
            result = warehouse.load_export(
                together,
                path,
                target=warehouse.Target(source),
                run=warehouse.RunRecord(run_id=run_id),
            )
        results.put((source, result.rows, result.snapshot_id, together.commits, None))
    except BaseException as exc:
        results.put((source, None, None, None, f"{type(exc).__name__}: {exc}"))


def test_two_loads_whose_transactions_are_open_at_once_both_commit_to_a_postgres_lake(
    tmp_path,
    postgres_server,  # noqa: F811
):
    dsn = postgres_server.create_database("commit_together")
    lake = warehouse.Lake(
        catalog=f"postgres:{dsn}",
        data_path=f"{tmp_path / 'lake'}/",
        password=postgres_server.password,
    )
    ctx = multiprocessing.get_context("spawn")
    expected: dict[str, int] = {}
    snapshots, commits = [], []
    # Round 1: each source's first load, which also creates the shared `runs` view (the two
    # conflict there: one is retried). Round 2: loads of sources that exist, no conflict.
    for round_ in (1, 2):
        barrier, results = ctx.Barrier(2), ctx.Queue()
        jobs = [
            ctx.Process(
                target=_load_in_child,
                args=(
                    lake,
                    name,
                    f"run_{name}_{round_}",
                    200 + round_,
                    str(tmp_path),
                    barrier,
                    results,
                ),
            )
            for name, _ in SOURCES
        ]
        for job in jobs:
            job.start()
        done = [results.get(timeout=180) for _ in jobs]
        for job in jobs:
            job.join(timeout=60)
        assert [d[4] for d in done] == [None, None], done
        for source, rows, snapshot, _, _ in done:
            expected[source] = expected.get(source, 0) + rows
            snapshots.append(snapshot)
        commits.append(sorted(d[3] for d in done))
    # Round 1: both first loads create or replace the `runs` view; the second to commit
    # conflicts and its load runs again (two COMMITs). Round 2: one COMMIT each.
    assert commits == [[1, 2], [1, 1]]
    assert len(set(snapshots)) == 4
    with warehouse.connect(lake, read_only=True) as con:
        for name, _ in SOURCES:
            total, distinct, runs = con.execute(
                f"SELECT count(*), count(DISTINCT (run_id, id)), count(DISTINCT run_id) "
                f"FROM extralt.{name}_captures"
            ).fetchone()
            assert total == distinct == expected[name] == 201 + 202
            assert runs == 2
        assert con.execute(
            "SELECT source, count(*) FROM extralt.runs GROUP BY ALL ORDER BY 1"
        ).fetchall() == [
            ("books", 2),
            ("shoes", 2),
        ]


# --- the PostgreSQL server ------------------------------------------------------------------


def test_a_ducklake_with_a_postgres_catalog_round_trips(postgres_server, tmp_path):  # noqa: F811
    dsn = postgres_server.create_database("round_trip")
    assert "password" not in dsn and postgres_server.password not in dsn
    data = tmp_path / "data"
    nested = "STRUCT(title VARCHAR, offers STRUCT(price DOUBLE, sizes VARCHAR[])[])[]"
    with _pg_lake(dsn, postgres_server.password, data) as conn:
        conn.execute(f"CREATE TABLE lake.t (k INTEGER, v {nested})")
        # 3 rows are inlined into the catalog (nested values as VARCHAR there), 20 go to Parquet.
        for first, n in ((0, 3), (3, 20)):
            conn.execute(
                "INSERT INTO lake.t SELECT range, "
                "[{'title': 'p' || range, 'offers': [{'price': range * 1.5, 'sizes': ['S', 'M']}]}] "
                f"FROM range({first}, {first + n})"
            )
    with _pg_lake(dsn, postgres_server.password, data) as conn:
        rows = conn.execute(
            "SELECT count(*), sum(k), typeof(any_value(v)), "
            "max(v[1].offers[1].price), min(v[1].offers[1].sizes[2]) FROM lake.t"
        ).fetchone()
        assert rows == (23, sum(range(23)), nested, 22 * 1.5, "M")
        assert conn.execute("SELECT count(*) FROM lake.snapshots()").fetchone()[0] == 4
        assert len(list(data.rglob("*.parquet"))) == 1
    # The catalog is in PostgreSQL: its tables are there.
    tables = postgres_server.psql(
        "SELECT count(*) FROM information_schema.tables WHERE table_name = 'ducklake_snapshot'",
        "round_trip",
    )
    assert tables.strip() == "1"


def test_the_postgres_server_needs_its_password(postgres_server, tmp_path):  # noqa: F811
    dsn = postgres_server.create_database("needs_password")
    saved = os.environ.pop("PGPASSWORD", None)
    try:
        with pytest.raises(duckdb.Error, match="password"):
            _pg_lake(dsn, None, tmp_path)
        with pytest.raises(duckdb.Error, match="password authentication failed"):
            _pg_lake(dsn, "not-the-password", tmp_path)
    finally:
        if saved is not None:
            os.environ["PGPASSWORD"] = saved


def test_the_postgres_server_runs_unprivileged_and_leaves_nothing_behind():
    server = PostgresServer().start()
    root, pid = server.root, server._proc.pid
    assert root is not None and (root / "data" / "PG_VERSION").is_file()
    uid = os.stat(f"/proc/{pid}").st_uid
    assert uid != 0
    assert server.psql("SELECT current_setting('listen_addresses')").strip() == "127.0.0.1"
    server.stop()
    assert not root.exists()
    assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text()
