"""End to end, as users meet it: the emulator, `dagster dev` (webserver + daemon), headless Chromium.

`make e2e` runs this folder (`pytest tests/e2e`); `make test` and a bare `pytest` skip it (see
`collect_ignore` in tests/conftest.py). Needs Chromium at /usr/bin/chromium (Debian:
`apt-get install chromium`), or wherever `EXTRALT_E2E_CHROMIUM` points.

Screenshots, and `dagster dev`'s own log, go to `e2e-artifacts/` under the project (or
`EXTRALT_E2E_ARTIFACTS`); a failed browser test adds a screenshot of the page it failed on.
"""

import contextlib
import os
import shutil
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import httpx
import pytest
import yaml
from dagster_graphql import DagsterGraphQLClient

import extralt_dagster
from extralt_dagster.emulator import Emulator

from ..processes import end_group, find_processes, free_port, kill_leftovers, start_group
from ..support import wait_until

PROJECT = Path(__file__).resolve().parents[2]
ARTIFACTS = Path(os.environ.get("EXTRALT_E2E_ARTIFACTS") or PROJECT / "e2e-artifacts")
CHROMIUM = os.environ.get("EXTRALT_E2E_CHROMIUM") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
#: The emulator's clock: the demo's 300-capture run (17 emulated s) takes under a second.
EMULATOR_SPEED = 20.0
LOCATION = "extralt"  # workspace.yaml's location_name
REPOSITORY = "__repository__"  # the one repository of a Definitions-based location
#: The source the daemon test's schedule runs every minute (`schedule_running: true`).
SCHEDULED_SOURCE = {
    "name": "ticker",
    "robot_id": "rbt_books",
    "budget": 20,
    "cron": "* * * * *",
    "schedule_running": True,
    "group": "e2e_schedule",
}
TERMINAL = {"SUCCESS", "FAILURE", "CANCELED"}
IN_FLIGHT = ["QUEUED", "NOT_STARTED", "STARTING", "STARTED", "CANCELING"]


# --- Reports, so fixtures can tell a failed test from a passed one -------------------------


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):
    report = yield
    setattr(item, f"report_{report.when}", report)
    return report


def _failed(request: pytest.FixtureRequest) -> bool:
    return any(
        getattr(getattr(request.node, f"report_{when}", None), "failed", False)
        for when in ("setup", "call")
    )


@pytest.fixture(scope="session")
def artifacts() -> Path:
    """The artifacts folder; the previous session's screenshots and logs are removed first."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    for stale in [*ARTIFACTS.glob("*.png"), *ARTIFACTS.glob("dagster-dev*.log")]:
        stale.unlink()
    return ARTIFACTS


# --- The emulator and `dagster dev` --------------------------------------------------------


@dataclass
class DagsterDev:
    """A running `dagster dev` against the emulator, and how to ask it things."""

    url: str
    port: int
    home: Path
    sources: Path
    duckdb_path: Path
    emulator: Emulator
    log: Path

    @property
    def client(self) -> DagsterGraphQLClient:
        return DagsterGraphQLClient("127.0.0.1", port_number=self.port)

    @property
    def community_dialog_seen(self) -> bool:
        """Dagster records a dismissed "Join the Dagster community" dialog in DAGSTER_HOME."""
        return (self.home / ".nux" / "nux.yaml").exists()

    def graphql(self, query: str, **variables: Any) -> dict[str, Any]:
        response = httpx.post(
            f"{self.url}/graphql", json={"query": query, "variables": variables}, timeout=30
        )
        response.raise_for_status()
        body = response.json()
        if body.get("errors"):
            raise AssertionError(f"GraphQL errors: {body['errors']}")
        return body["data"]

    def runs(
        self, tags: dict[str, str] | None = None, statuses: list[str] | None = None
    ) -> list[dict[str, Any]]:
        """Runs, newest first, as {runId, status, tags: {key: value}}."""
        filter_: dict[str, Any] = {}
        if tags:
            filter_["tags"] = [{"key": k, "value": v} for k, v in tags.items()]
        if statuses:
            filter_["statuses"] = statuses
        data = self.graphql(RUNS_QUERY, filter=filter_)["runsOrError"]
        if data["__typename"] != "Runs":
            raise AssertionError(f"runsOrError: {data}")
        return [{**r, "tags": {t["key"]: t["value"] for t in r["tags"]}} for r in data["results"]]

    def run(self, run_id: str) -> dict[str, Any]:
        data = self.graphql(RUN_QUERY, runId=run_id)["runOrError"]
        if data["__typename"] != "Run":
            raise AssertionError(f"runOrError({run_id}): {data}")
        return {**data, "tags": {t["key"]: t["value"] for t in data["tags"]}}

    def wait_for_run_end(self, run_id: str, timeout: float = 180) -> dict[str, Any]:
        return wait_until(
            lambda: (run := self.run(run_id))["status"] in TERMINAL and run,
            timeout=timeout,
            what=f"Dagster run {run_id} to end",
            interval=0.5,
        )

    def schedule_state(self, name: str) -> dict[str, Any]:
        selector = {
            "repositoryLocationName": LOCATION,
            "repositoryName": REPOSITORY,
            "scheduleName": name,
        }
        data = self.graphql(SCHEDULE_QUERY, selector=selector)["scheduleOrError"]
        if data["__typename"] != "Schedule":
            raise AssertionError(f"scheduleOrError({name}): {data}")
        return data["scheduleState"]

    def stop_schedule(self, name: str) -> str:
        """Stop a schedule the way the UI's toggle does; returns its new status."""
        state = self.schedule_state(name)
        if state["status"] != "RUNNING":
            return state["status"]
        data = self.graphql(STOP_SCHEDULE, id=state["id"])["stopRunningSchedule"]
        if data["__typename"] != "ScheduleStateResult":
            raise AssertionError(f"stopRunningSchedule({name}): {data}")
        return data["scheduleState"]["status"]

    def query(self, sql: str, params: list[Any] | None = None) -> list[tuple[Any, ...]]:
        """Read the warehouse, waiting while a run's load holds the file's write lock."""

        def attempt() -> tuple[list[tuple[Any, ...]]] | None:
            try:
                with duckdb.connect(str(self.duckdb_path), read_only=True) as conn:
                    return (conn.execute(sql, params or []).fetchall(),)
            except duckdb.IOException as exc:
                if "lock" in str(exc).lower():
                    return None
                raise

        return wait_until(attempt, timeout=90, what="the DuckDB file's lock", interval=0.2)[0]


RUNS_QUERY = """
query Runs($filter: RunsFilter) {
  runsOrError(filter: $filter) {
    __typename
    ... on Runs { results { runId status tags { key value } } }
    ... on PythonError { message }
  }
}"""
RUN_QUERY = """
query Run($runId: ID!) {
  runOrError(runId: $runId) {
    __typename
    ... on Run { runId status tags { key value } }
    ... on PythonError { message }
  }
}"""
SCHEDULE_QUERY = """
query Schedule($selector: ScheduleSelector!) {
  scheduleOrError(scheduleSelector: $selector) {
    __typename
    ... on Schedule { name scheduleState { id status } }
    ... on PythonError { message }
  }
}"""
STOP_SCHEDULE = """
mutation Stop($id: String) {
  stopRunningSchedule(id: $id) {
    __typename
    ... on ScheduleStateResult { scheduleState { status } }
    ... on PythonError { message }
  }
}"""
WORKSPACE_QUERY = """
query Workspace {
  workspaceOrError {
    __typename
    ... on Workspace {
      locationEntries {
        name
        loadStatus
        locationOrLoadError { __typename ... on PythonError { message } }
      }
    }
  }
}"""


@pytest.fixture(scope="module")
def e2e_emulator() -> Iterator[Emulator]:
    """The Extralt emulator, in this process, on 127.0.0.1 and a free port."""
    emu = Emulator(host="127.0.0.1", port=0, speed=EMULATOR_SPEED).start()
    try:
        yield emu
    finally:
        emu.stop()


def write_sources(path: Path) -> Path:
    """The shipped demo sources, plus one source scheduled every minute, running from the start."""
    demo = Path(extralt_dagster.__file__).with_name("demo_sources.yaml")
    spec = yaml.safe_load(demo.read_text(encoding="utf-8"))
    spec["sources"].append(dict(SCHEDULED_SOURCE))
    path.write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def dagster_dev(
    e2e_emulator: Emulator, tmp_path_factory: pytest.TempPathFactory, artifacts: Path
) -> Iterator[DagsterDev]:
    """`dagster dev -w workspace.yaml` from the project root, in its own process group.

    A fresh DAGSTER_HOME (with the project's dagster.yaml) and DuckDB file; the emulator's URL
    and key. The whole group is ended at teardown, and nothing that carries this DAGSTER_HOME
    may be left running.
    """
    root = tmp_path_factory.mktemp("dagster_dev")
    home = root / "dagster_home"
    home.mkdir()
    shutil.copyfile(PROJECT / "dagster.yaml", home / "dagster.yaml")
    sources = write_sources(root / "sources.yaml")
    duckdb_path = root / "warehouse.duckdb"
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("EXTRALT_", "DAGSTER_"))}
    env.update(
        DAGSTER_HOME=str(home),
        DAGSTER_DISABLE_TELEMETRY="yes",
        EXTRALT_SOURCES=str(sources),
        EXTRALT_API_KEY=e2e_emulator.api_key,
        EXTRALT_BASE_URL=e2e_emulator.url,
        EXTRALT_DUCKDB_PATH=str(duckdb_path),
    )
    log = artifacts / "dagster-dev.log"
    dagster = Path(sys.executable).with_name("dagster")
    cmd = [str(dagster), "dev", "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(port)]
    dev = DagsterDev(
        url=f"http://127.0.0.1:{port}",
        port=port,
        home=home,
        sources=sources,
        duckdb_path=duckdb_path,
        emulator=e2e_emulator,
        log=log,
    )
    with serving_dagster(cmd, env=env, cwd=PROJECT, log=log, url=dev.url, home=home):
        yield dev


@contextlib.contextmanager
def serving_dagster(
    cmd: list[str], *, env: dict[str, str], cwd: Path, log: Path, url: str, home: Path
) -> Iterator[Any]:
    """Run `cmd` (a `dagster dev`) in its own process group until its code location loads.

    At exit the whole group is ended, and nothing that carries `home` as DAGSTER_HOME may be
    left running.
    """
    with log.open("ab") as out:
        proc = start_group(cmd, env=env, cwd=cwd, output=out)
    try:
        wait_until(
            lambda: location_loaded(url, proc, log),
            timeout=180,
            what=f"{cmd[0]} to load its code location (log: {log})",
            interval=0.5,
        )
        yield proc
    finally:
        end_group(proc)
        kill_leftovers(lambda: find_processes(env=f"DAGSTER_HOME={home}"), " ".join(cmd[:2]))


def location_loaded(url: str, proc: Any, log: Path) -> bool:
    """True once the webserver at `url` serves a loaded code location; raises on a load error."""
    if proc.poll() is not None:
        raise AssertionError(f"{proc.args} exited with {proc.returncode}; see {log}")
    try:
        response = httpx.post(f"{url}/graphql", json={"query": WORKSPACE_QUERY}, timeout=10)
        data = response.json()["data"]["workspaceOrError"]
    except (httpx.HTTPError, ValueError, KeyError, TypeError):
        return False  # not serving yet
    for entry in data.get("locationEntries", []):
        loaded = entry["locationOrLoadError"] or {}
        if loaded.get("__typename") == "PythonError":
            raise AssertionError(f"location {entry['name']!r} failed to load: {loaded['message']}")
        if entry["loadStatus"] == "LOADED" and loaded.get("__typename") == "RepositoryLocation":
            return True
    return False


# --- Headless Chromium ---------------------------------------------------------------------


@pytest.fixture
def page(request: pytest.FixtureRequest, tmp_path: Path, artifacts: Path) -> Iterator[Any]:
    """A page in headless Chromium (Debian's, through Playwright) with a fresh profile.

    A failed test leaves `FAILED-<test>.png` of the page in the artifacts folder.
    """
    from playwright.sync_api import expect, sync_playwright

    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(
            f"No Chromium at {CHROMIUM}. Install it (Debian/Ubuntu: `apt-get update && "
            "apt-get install -y chromium`) or set EXTRALT_E2E_CHROMIUM to its path."
        )
    profile = tmp_path / "chromium-profile"
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            user_data_dir=str(profile),
            executable_path=CHROMIUM,
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1600, "height": 1200},
        )
        context.set_default_timeout(30_000)
        expect.set_options(timeout=30_000)
        try:
            yield context.pages[0] if context.pages else context.new_page()
        finally:
            if _failed(request):
                with contextlib.suppress(Exception):
                    context.pages[-1].screenshot(
                        path=str(artifacts / f"FAILED-{request.node.name}.png"), full_page=True
                    )
            context.close()
    kill_leftovers(lambda: find_processes(arg=str(profile)), "Chromium")
