"""The shipped demo: its sources file, the default code location's environment rules, `make demo`."""

import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from extralt_dagster import ExtraltAuthError, load_extralt_definitions
from extralt_dagster.definitions import DEMO_SOURCES, EMULATOR_URL, resolve_connection
from extralt_dagster.demo import second_shell_lines, shared_env
from extralt_dagster.emulator import DEMO_API_KEY

PROJECT = Path(__file__).resolve().parents[1]
CLI = Path(sys.executable).with_name("extralt-dagster")
SOURCES = ("books", "outdoor", "shoes")
BUDGETS = {"books": 150, "outdoor": 200, "shoes": 300}  # demo_sources.yaml


def _demo(tmp_path: Path, *argv: str, env: dict[str, str] | None = None):
    """The CLI run as `make` runs it, in a scratch project folder, no `EXTRALT_*` of ours."""
    shutil.copyfile(PROJECT / "dagster.yaml", tmp_path / "dagster.yaml")
    environ = {k: v for k, v in os.environ.items() if not k.startswith("EXTRALT_")}
    environ.pop("DAGSTER_HOME", None)
    proc = subprocess.run(
        [str(CLI), *argv],
        capture_output=True,
        text=True,
        timeout=240,
        env={**environ, **(env or {})},
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def _printed_command(tmp_path: Path, line: str):
    """An `extralt-dagster ...` line the demo printed, run as a shell would split it."""
    argv = shlex.split(line)
    assert argv[0] == "extralt-dagster", line
    proc = subprocess.run(
        [str(CLI), *argv[1:]], capture_output=True, text=True, timeout=60, cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def _assert_summary_rows(lines: list[str]) -> None:
    """The summary's row per source: runs, captures, products, variants, credits (2 a capture)."""
    rows = {line.split()[0]: line.split()[1:] for line in lines if re.match(r"[a-z]+ +\d", line)}
    for source, budget in BUDGETS.items():
        runs, loaded, products, _variants, credits = rows[source]
        assert (runs, loaded, products) == ("1", str(budget), str(budget)), rows[source]
        assert credits == f"{2 * budget:,}"


def test_shipped_demo_sources_load_and_materialize(emulator, instance, tmp_path):
    database = tmp_path / "demo.duckdb"
    defs = load_extralt_definitions(
        DEMO_SOURCES, duckdb_path=str(database), api_key=emulator.api_key, base_url=emulator.url
    )
    result = defs.resolve_job_def("extralt_job").execute_in_process(instance=instance)
    assert result.success
    assert emulator.count_requests("POST", "/v0/extract/runs") == 3
    with duckdb.connect(str(database), read_only=True) as con:
        counts = dict(
            con.execute("select source, rows_loaded from extralt.runs order by source").fetchall()
        )
    assert counts == {"books": 150, "outdoor": 200, "shoes": 300}
    assert {s.name for s in defs.schedules} == {
        "extralt_shoes_schedule",
        "extralt_outdoor_schedule",
        "extralt_books_schedule",
    }


def test_no_key_and_no_url_means_the_emulator_and_says_so():
    conn = resolve_connection({})
    assert (conn.base_url, conn.api_key, conn.emulated) == (EMULATOR_URL, DEMO_API_KEY, True)


def test_a_key_never_goes_to_the_emulator_by_default():
    conn = resolve_connection({"EXTRALT_API_KEY": "real-key"})
    assert conn.base_url == "https://api.extralt.com" and not conn.emulated


def test_a_remote_url_without_a_key_is_an_error_naming_the_variable():
    with pytest.raises(ExtraltAuthError, match="EXTRALT_API_KEY"):
        resolve_connection({"EXTRALT_BASE_URL": "https://api.extralt.com"})
    assert resolve_connection({"EXTRALT_BASE_URL": "http://127.0.0.1:9999"}).emulated


def test_make_demo_prints_progress_and_the_summary_and_logs_the_rest(tmp_path):
    """`extralt-dagster demo`, as `make demo` runs it, in a scratch project folder."""
    proc = _demo(tmp_path, "demo", "--speed", "50")
    out = proc.stdout
    lines = out.splitlines()
    assert "$ dagster asset materialize -m extralt_dagster.definitions --select '*'" in lines
    assert "  (Dagster's console log: data/demo.log)" in lines
    materialized = sorted(line.split()[-1] for line in lines if " materialized " in line)
    assert materialized == [f"extralt/{s}/{k}" for s in SOURCES for k in ("captures", "run")]
    assert "3 Extralt runs created, 0 stopped, 0 left running" in out
    _assert_summary_rows(lines)
    assert "Cheapest in-stock products (from extralt.<source>_products):" in lines
    # Dagster's own chatter went to the log, not to the terminal.
    for noise in ("DEBUG", "Warning", "STEP_START", "ASSET_MATERIALIZATION"):
        assert noise not in out and noise not in proc.stderr, noise
    assert any(line.startswith("Credits this period") for line in lines), out
    # Each source's month in its schedule's time zone (demo_sources.yaml): outdoor's is Berlin.
    assert any(re.match(r"\s*outdoor\s+month from \S+ \(Europe/Berlin\)", ln) for ln in lines), out
    assert len(lines) < 50, out  # a screenful: progress, the summary, its credits
    log = (tmp_path / "data" / "demo.log").read_text(encoding="utf-8")
    # (Dagster's console can miss a step's last lines: the progress comes from the instance.)
    assert " - ASSET_MATERIALIZATION - " in log and " - DEBUG - " in log
    assert "SupersessionWarning" in log and "RUN_SUCCESS" in log
    assert (tmp_path / "data" / "demo.duckdb").exists()
    assert (tmp_path / ".dagster_home" / "dagster.yaml").exists()

    # It ends with the command that prints the summary again; that command does.
    assert lines[-1] == (
        "Print this summary again: extralt-dagster summary data/demo.duckdb "
        f"--sources {DEMO_SOURCES}"
    )
    again = _printed_command(tmp_path, lines[-1].split(": ", 1)[1])
    summary = out[out.index("\nDuckDB warehouse: ") : out.index("\nPrint this summary again")]
    assert again.stdout.rstrip("\n") == summary.rstrip("\n")


def test_make_demo_lake_loads_the_demo_into_a_lake_and_prints_a_time_travel_query(tmp_path):
    """`extralt-dagster demo --ducklake`, as `make demo-lake` runs it: the same summary from a
    DuckLake under data/lake/, the snapshot of each load, and commands that work as printed."""
    makefile = (PROJECT / "Makefile").read_text(encoding="utf-8")
    assert "demo-lake: install\n\t$(BIN)/extralt-dagster demo --ducklake\n" in makefile
    # The shell's own warehouse choice is not the demo's: the lake goes under data/lake/.
    elsewhere = {"EXTRALT_DUCKDB_PATH": str(tmp_path / "elsewhere.duckdb")}
    proc = _demo(tmp_path, "demo", "--ducklake", "--speed", "50", env=elsewhere)
    out = proc.stdout
    lines = out.splitlines()
    assert "  (Dagster's console log: data/lake/demo.log)" in lines
    # Each captures materialization names the lake snapshot its load committed.
    loads = [
        re.search(r"materialized extralt/(\w+)/captures \(lake snapshot (\d+)\)$", line)
        for line in lines
    ]
    snapshots = {m[1]: int(m[2]) for m in loads if m}
    assert sorted(snapshots) == list(SOURCES), out
    assert "3 Extralt runs created, 0 stopped, 0 left running" in out
    lake_dir = (tmp_path / "data" / "lake").resolve()
    catalog, files = f"sqlite:{lake_dir / 'catalog.sqlite'}", f"{lake_dir / 'files'}/"
    assert f"DuckLake: ducklake:{catalog} (data in {files})" in lines
    _assert_summary_rows(lines)
    for source, snapshot in snapshots.items():
        assert f"  {source:<10} snapshot {snapshot}" in lines
    assert not (tmp_path / "elsewhere.duckdb").exists()
    assert not (tmp_path / "data" / "demo.duckdb").exists()
    assert list((lake_dir / "files").rglob("*.parquet")), "no data files in the lake's folder"

    # The time-travel command, run as printed: the run log after the first load holds that
    # load's source alone; now it holds all three.
    first = min(snapshots, key=snapshots.get)
    at = lines.index(f"The run log as it was after the {first} load (time travel):")
    command = shlex.split(lines[at + 1])
    assert command[:2] == ["extralt-dagster", "query"] and "--data-path" in command
    assert f"AT (VERSION => {snapshots[first]})" in command[-1]
    then = _printed_command(tmp_path, lines[at + 1])
    table = [line.split("│")[1:-1] for line in then.stdout.splitlines() if line.count("│") == 4]
    values = [[cell.strip() for cell in row] for row in table]
    assert values[-1] == [first, "1", str(BUDGETS[first])], then.stdout
    assert [row[0] for row in values[2:]] == [first], then.stdout  # header, types, one row
    now = _printed_command(
        tmp_path, lines[at + 1].replace(f" AT (VERSION => {snapshots[first]})", "")
    )
    assert all(s in now.stdout for s in SOURCES), now.stdout

    # It ends with the command that prints the summary again; that command does.
    assert lines[-1] == (
        f"Print this summary again: extralt-dagster summary --catalog {catalog} --data-path {files} "
        f"--sources {DEMO_SOURCES}"
    )
    again = _printed_command(tmp_path, lines[-1].split(": ", 1)[1])
    summary = out[out.index("\nDuckLake: ") : out.index("\nLake snapshots of these loads")]
    assert again.stdout.rstrip("\n") == summary.rstrip("\n")


def test_the_demo_sets_its_own_warehouse_whatever_the_shell_exports(
    emulator, tmp_path, monkeypatch
):
    """A lake (or file) the user's shell points at never receives the demo's loads."""
    import extralt_dagster.demo as demo

    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    monkeypatch.setenv("EXTRALT_DUCKLAKE_CATALOG", "sqlite:/srv/team/lake.sqlite")
    monkeypatch.setenv("EXTRALT_DUCKLAKE_DATA_PATH", "/srv/team/lake/")
    monkeypatch.setenv("EXTRALT_DUCKDB_PATH", "/srv/team/warehouse.duckdb")
    file_env = demo._env(demo.shared_env(emulator, tmp_path, tmp_path / "data" / "demo.duckdb"))
    assert file_env["EXTRALT_DUCKDB_PATH"] == str(tmp_path / "data" / "demo.duckdb")
    assert "EXTRALT_DUCKLAKE_CATALOG" not in file_env
    assert "EXTRALT_DUCKLAKE_DATA_PATH" not in file_env
    lake = demo.demo_lake(tmp_path)
    lake_env = demo._env(demo.shared_env(emulator, tmp_path, lake))
    assert "EXTRALT_DUCKDB_PATH" not in lake_env
    assert (
        lake_env["EXTRALT_DUCKLAKE_CATALOG"]
        == f"sqlite:{tmp_path.resolve()}/data/lake/catalog.sqlite"
    )
    assert lake_env["EXTRALT_DUCKLAKE_DATA_PATH"] == f"{tmp_path.resolve()}/data/lake/files/"


def test_make_devs_second_shell_lines_reach_the_uis_instance(emulator, tmp_path, monkeypatch):
    """What `make dev` prints for a second shell, run in bash: the CLI run lands in the instance
    `dagster dev` was given (the one the UI shows), against the same emulator and warehouse."""
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    shutil.copyfile(PROJECT / "dagster.yaml", tmp_path / "dagster.yaml")
    database = (tmp_path / "data" / "warehouse.duckdb").resolve()
    shared = shared_env(emulator, tmp_path, database)  # what `dagster dev` is given, too
    printed = second_shell_lines(shared, select="extralt/books/run*")
    assert printed[1].startswith("  export DAGSTER_HOME=")
    assert printed[2] == (
        "  dagster asset materialize -m extralt_dagster.definitions --select 'extralt/books/run*'"
    )
    home = Path(shared["DAGSTER_HOME"])
    assert home == (tmp_path / ".dagster_home").resolve()

    shell = {k: v for k, v in os.environ.items() if not k.startswith(("EXTRALT_", "DAGSTER_"))}
    shell["EXTRALT_API_KEY"] = "a-real-key-in-the-users-shell"  # overridden by the export
    shell["PATH"] = f"{CLI.parent}{os.pathsep}{shell.get('PATH', '')}"
    done = subprocess.run(
        ["bash", "-c", "\n".join(line.strip() for line in printed[1:])],
        cwd=tmp_path,
        env=shell,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "Using temporary directory" not in done.stderr
    assert emulator.count_requests("POST", "/v0/extract/runs") == 1
    monkeypatch.setenv("DAGSTER_HOME", str(home))  # as the UI's `dagster dev` has it
    with dg.DagsterInstance.get() as instance:
        records = instance.get_run_records()
        assert len(records) == 1 and records[0].dagster_run.status == dg.DagsterRunStatus.SUCCESS
        key = dg.AssetKey(["extralt", "books", "captures"])
        assert instance.get_latest_materialization_event(key) is not None
    with duckdb.connect(str(database), read_only=True) as con:
        assert con.execute("select count(*) from extralt.books_captures").fetchone() == (150,)


@pytest.mark.parametrize(
    ("ducklake", "warehouse_env"),
    [
        (False, {"EXTRALT_DUCKDB_PATH"}),
        (True, {"EXTRALT_DUCKLAKE_CATALOG", "EXTRALT_DUCKLAKE_DATA_PATH"}),
    ],
)
def test_make_dev_prints_the_instance_it_gives_dagster_dev(
    tmp_path, monkeypatch, capsys, ducklake, warehouse_env
):
    """`run_dev`'s printed export line holds exactly what its `dagster dev` process is given
    (`dev --ducklake`: the demo's lake instead of the DuckDB file)."""
    import extralt_dagster.demo as demo

    given: dict = {}

    class FinishedDagsterDev:
        def __init__(self, cmd, *, env, cwd, start_new_session):
            given.update(cmd=cmd, env=env, cwd=cwd)

        def wait(self, timeout=None):
            return 0

        def poll(self):
            return 0

    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    monkeypatch.setattr(demo.subprocess, "Popen", FinishedDagsterDev)
    assert demo.run_dev(tmp_path, port=0, ducklake=ducklake) == 0
    out = capsys.readouterr().out.splitlines()
    (export,) = [line.strip() for line in out if line.strip().startswith("export ")]
    printed = dict(pair.split("=", 1) for pair in shlex.split(export)[1:])
    assert set(printed) == {"DAGSTER_HOME", "EXTRALT_API_KEY", "EXTRALT_BASE_URL", *warehouse_env}
    assert {k: given["env"][k] for k in printed} == printed
    other = {"EXTRALT_DUCKDB_PATH", "EXTRALT_DUCKLAKE_CATALOG"} - warehouse_env
    assert not other & set(given["env"])
    assert printed["DAGSTER_HOME"] == str((tmp_path / ".dagster_home").resolve())
    assert f"Dagster instance: {printed['DAGSTER_HOME']}" in out
    assert given["cmd"][1:] == ["dev", "-w", "workspace.yaml"] and given["cwd"] == tmp_path


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
def test_make_dev_ends_dagster_devs_group_when_it_is_killed(tmp_path, monkeypatch, signum):
    """`dagster dev` runs in its own session: a `kill` of `make dev` must end it too."""
    import extralt_dagster.demo as demo

    ended: list[tuple[int, int]] = []

    class RunningDagsterDev:
        pid = 424242  # never signalled for real: os.killpg is recorded below

        def __init__(self, cmd, **kwargs):
            self.returncode = None

        def wait(self, timeout=None):
            if timeout is None:  # the long wait for `dagster dev`: the signal arrives now
                os.kill(os.getpid(), signum)
            self.returncode = -signal.SIGTERM
            return self.returncode

        def poll(self):
            return self.returncode

    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    monkeypatch.setattr(demo.subprocess, "Popen", RunningDagsterDev)
    monkeypatch.setattr(demo.os, "killpg", lambda pgid, sig: ended.append((pgid, sig)))
    before = signal.getsignal(signum)
    assert demo.run_dev(tmp_path, port=0) == 0
    assert ended == [(RunningDagsterDev.pid, signal.SIGTERM)]
    assert signal.getsignal(signum) == before  # handlers restored


def test_a_failing_demo_names_the_failed_steps_and_its_log(tmp_path, monkeypatch, capsys):
    """No credits on the emulator: every run step fails with a 402; the demo says which steps
    failed, where the whole log is, and exits non-zero."""
    import extralt_dagster.demo as demo
    from extralt_dagster.emulator import Emulator

    shutil.copyfile(PROJECT / "dagster.yaml", tmp_path / "dagster.yaml")
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    for name in [k for k in os.environ if k.startswith("EXTRALT_")]:
        monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(demo, "Emulator", lambda **kw: Emulator(credits=0, **kw))
    assert demo.run_demo(tmp_path, speed=50) != 0
    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    failed = [i for i, line in enumerate(lines) if " FAILED " in line]
    assert sorted(lines[i].split()[-1] for i in failed) == [f"extralt__{s}__run" for s in SOURCES]
    for i in failed:  # each with the error that failed it, the first line of its traceback
        assert (
            lines[i + 1]
            .strip()
            .startswith(
                "ExtraltInsufficientCreditsError: Extralt POST /v0/extract/runs returned 402"
            )
        ), lines[i + 1]
    assert " materialized " not in captured.out and "DuckDB warehouse" not in captured.out
    assert "Demo FAILED" in captured.err and "data/demo.log" in captured.err
    log = (tmp_path / "data" / "demo.log").read_text(encoding="utf-8")
    assert "returned 402" in log and " - STEP_FAILURE - " in log


def test_query_runs_one_read_only_query_and_names_the_warehouse_exactly_once(tmp_path, capsys):
    """`extralt-dagster query`: a file or a lake, never both, never a lake without its data
    path; a failing query exits 1 with DuckDB's message."""
    from extralt_dagster.cli import main

    database = tmp_path / "w.duckdb"
    with duckdb.connect(str(database)) as con:
        con.execute("CREATE TABLE t AS SELECT 42 AS answer")
    assert main(["query", str(database), "SELECT answer FROM t"]) == 0
    assert "42" in capsys.readouterr().out
    assert main(["query", str(database), "SELECT nope FROM t"]) == 1
    assert 'column "nope"' in capsys.readouterr().err
    with duckdb.connect(str(database), read_only=True) as con:  # nothing was written
        assert con.execute("SELECT * FROM t").fetchall() == [(42,)]
    for argv, said in (
        (["query", "SELECT 1"], "name the warehouse"),
        (["query", str(database), "SELECT 1", "--data-path", "x/"], "--data-path goes with"),
        (["query", "SELECT 1", "--catalog", "sqlite:c.sqlite"], "--catalog needs --data-path"),
        (["summary", str(database), "--catalog", "sqlite:c", "--data-path", "x/"], "not both"),
    ):
        with pytest.raises(SystemExit) as exited:
            main(argv)
        assert exited.value.code == 2 and said in capsys.readouterr().err, argv
    assert main(["summary", "--catalog", "mysql:x", "--data-path", "x/"]) == 2
    assert "catalog must be 'sqlite:" in capsys.readouterr().err
