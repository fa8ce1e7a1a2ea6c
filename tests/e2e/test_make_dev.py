"""`make dev` exactly as a new user meets it: its own defaults, "Materialize all", a second shell.

`make dev` runs `.venv/bin/extralt-dagster dev` from the project root. This runs that same
command from a fresh folder holding the project's `workspace.yaml` and `dagster.yaml`, with no
`EXTRALT_*` or `DAGSTER_*` variable set: the emulator on its default port 8765, `dagster dev` on
its default 3000, the default DuckDB file under `data/`, the default schema `extralt`, and the
instance in `.dagster_home`. Nothing here is given a test-friendly name.

`make dev` also schedules the robot of `books` in its emulator (a run every 5 minutes, the first
30 s after start) and `books` observes it, so the daemon's `extralt_external_runs_sensor` loads
that run by itself while the other tests run: each checks the runs it made, not every run.
"""

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import httpx
import pytest
import yaml
from playwright.sync_api import Page, expect

import extralt_dagster
from extralt_dagster.demo import DEMO_SCHEDULED_ROBOT
from extralt_dagster.emulator import DEMO_API_KEY
from extralt_dagster.naming import EXTERNAL_RUNS_SENSOR, OBSERVED_RUN_TAG

from ..support import wait_until
from .conftest import PROJECT, TERMINAL, serving_dagster

pytestmark = pytest.mark.filterwarnings(
    "ignore:Using variable_values and operation_name:DeprecationWarning"
)

UI = "http://127.0.0.1:3000"  # `dagster dev`'s default
EMULATOR = "http://127.0.0.1:8765"  # `extralt-dagster dev`'s default
README = (PROJECT / "README.md").read_text(encoding="utf-8")
DEMO_SOURCES = yaml.safe_load(
    Path(extralt_dagster.__file__).with_name("demo_sources.yaml").read_text(encoding="utf-8")
)
GROUP = DEMO_SOURCES["defaults"]["group"]
SCHEMA = DEMO_SOURCES["defaults"]["schema"]
BUDGETS = {s["name"]: s["budget"] for s in DEMO_SOURCES["sources"]}
#: The source whose robot `make dev`'s emulator runs by itself, and its sensor's tick interval.
(OBSERVED,) = [s for s in DEMO_SOURCES["sources"] if s.get("observe_external_runs")]
assert OBSERVED["robot_id"] == DEMO_SCHEDULED_ROBOT, "make dev schedules another robot"

RUN_QUERY = """
query Run($runId: ID!) {
  runOrError(runId: $runId) {
    __typename
    ... on Run { runId status stepStats { stepKey status } }
  }
}"""
GROUP_ASSETS_QUERY = """
query GroupAssets($group: AssetGroupSelector!) {
  assetNodes(group: $group) {
    assetKey { path }
    assetMaterializations(limit: 1) { runId }
  }
}"""
ALL_RUNS_QUERY = """
query AllRuns($filter: RunsFilter) {
  runsOrError(filter: $filter) {
    __typename
    ... on Runs { results { runId status startTime endTime tags { key value } } }
  }
}"""
RUN_ASSETS_QUERY = """
query RunAssets($runId: ID!) {
  runOrError(runId: $runId) {
    __typename
    ... on Run { assetMaterializations { assetKey { path } } }
  }
}"""
FRESHNESS_QUERY = """
query Freshness($key: AssetKeyInput!) {
  assetNodeOrError(assetKey: $key) {
    __typename
    ... on AssetNode {
      freshnessStatusInfo {
        freshnessStatus
        freshnessStatusMetadata { lastMaterializedTimestamp }
      }
      internalFreshnessPolicy {
        ... on TimeWindowFreshnessPolicy { failWindowSeconds warnWindowSeconds }
      }
    }
  }
}"""
#: The demo source `make dev` lets go stale (its `freshness:` window is minutes, not a day).
(LATE,) = [s for s in DEMO_SOURCES["sources"] if s.get("freshness", "auto") not in ("auto", "off")]
SENSOR_QUERY = """
query Sensor($selector: SensorSelector!) {
  sensorOrError(sensorSelector: $selector) {
    __typename
    ... on Sensor {
      name
      sensorState { status ticks(limit: 50) { status timestamp runIds error { message } } }
    }
    ... on PythonError { message }
  }
}"""


@dataclass
class MakeDev:
    project: Path
    home: Path
    log: Path

    def graphql(self, query: str, **variables: Any) -> dict[str, Any]:
        response = httpx.post(f"{UI}/graphql", json={"query": query, "variables": variables})
        response.raise_for_status()
        body = response.json()
        if body.get("errors"):
            raise AssertionError(f"GraphQL errors: {body['errors']}")
        return body["data"]

    def run(self, run_id: str) -> dict[str, Any]:
        data = self.graphql(RUN_QUERY, runId=run_id)["runOrError"]
        assert data["__typename"] == "Run", data
        return data

    def runs(self, tags: dict[str, str] | None = None) -> list[dict[str, Any]]:
        """Runs, newest first, as {runId, status, startTime, endTime, tags: {key: value}}."""
        filter_ = {"tags": [{"key": k, "value": v} for k, v in (tags or {}).items()]}
        data = self.graphql(ALL_RUNS_QUERY, filter=filter_)["runsOrError"]
        assert data["__typename"] == "Runs", data
        return [{**r, "tags": {t["key"]: t["value"] for t in r["tags"]}} for r in data["results"]]

    def sensor_state(self, name: str) -> dict[str, Any]:
        selector = {
            "repositoryLocationName": "extralt",
            "repositoryName": "__repository__",
            "sensorName": name,
        }
        data = self.graphql(SENSOR_QUERY, selector=selector)["sensorOrError"]
        assert data["__typename"] == "Sensor", data
        return data["sensorState"]

    def run_tags(self, run_id: str) -> dict[str, str]:
        (run,) = [r for r in self.runs() if r["runId"] == run_id]
        return run["tags"]

    def emulator_state(self) -> dict[str, Any]:
        auth = {"Authorization": f"Bearer {DEMO_API_KEY}"}  # make dev's emulator: the demo key
        return httpx.get(f"{EMULATOR}/_emulator/state", headers=auth, timeout=10).json()

    def warehouse(self) -> Path:
        """The one DuckDB file `make dev` writes, under `data/`."""
        files = sorted((self.project / "data").glob("*.duckdb"))
        assert len(files) == 1, f"expected one DuckDB file under data/, found {files}"
        return files[0]


def _ports_free() -> None:
    for url in (UI, EMULATOR):
        try:
            httpx.get(url, timeout=1)
        except httpx.HTTPError:
            continue
        pytest.fail(f"{url} already answers: `make dev` needs its default ports; stop that server")


@pytest.fixture(scope="module")
def make_dev(tmp_path_factory: pytest.TempPathFactory, artifacts: Path) -> Iterator[MakeDev]:
    _ports_free()
    project = tmp_path_factory.mktemp("project")
    for name in ("workspace.yaml", "dagster.yaml"):
        shutil.copyfile(PROJECT / name, project / name)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("EXTRALT_", "DAGSTER_"))}
    env["DAGSTER_DISABLE_TELEMETRY"] = "yes"
    log = artifacts / "make-dev.log"
    extralt_dagster_bin = Path(sys.executable).with_name("extralt-dagster")
    home = (project / ".dagster_home").resolve()
    dev = MakeDev(project=project, home=home, log=log)
    cmd = [str(extralt_dagster_bin), "dev"]
    with serving_dagster(cmd, env=env, cwd=project, log=log, url=UI, home=home):
        yield dev


def test_materialize_all_on_make_devs_defaults(make_dev: MakeDev, page: Page, artifacts: Path):
    dev = make_dev
    page.goto(f"{UI}/locations/extralt/asset-groups/{GROUP}")
    skip = page.get_by_role("button", name="Skip", exact=True)
    expect(page.get_by_text("Join the Dagster community")).to_be_visible()
    skip.click()
    expect(page.locator("foreignObject")).to_have_count(2 * len(BUDGETS))
    page.get_by_role("button", name="Materialize all").click()
    launched = page.get_by_text(re.compile(r"^Launched run [0-9a-f]{8}$")).first
    expect(launched).to_be_visible()
    short_id = launched.inner_text().rsplit(" ", 1)[1]

    (run_id,) = [r["runId"] for r in dev.runs() if r["runId"].startswith(short_id)]
    run = wait_until(
        lambda: (r := dev.run(run_id))["status"] in TERMINAL and r,
        timeout=300,
        what=f"the Materialize all run {run_id}",
        interval=0.5,
    )
    page.goto(f"{UI}/locations/extralt/asset-groups/{GROUP}")
    expect(page.locator("foreignObject")).to_have_count(2 * len(BUDGETS))
    page.screenshot(path=str(artifacts / "make-dev-materialize-all.png"), full_page=True)
    assert run["status"] == "SUCCESS", f"{run}; see {dev.log}"
    assert {s["status"] for s in run["stepStats"]} == {"SUCCESS"}, run["stepStats"]

    # The run materialized every asset of the group. (The newest materialization of `books`'
    # assets may be the sensor's, of the run `make dev`'s Extralt schedule made meanwhile.)
    selector = {
        "groupName": GROUP,
        "repositoryName": "__repository__",
        "repositoryLocationName": "extralt",
    }
    nodes = dev.graphql(GROUP_ASSETS_QUERY, group=selector)["assetNodes"]
    expected = {f"extralt/{source}/{kind}" for source in BUDGETS for kind in ("run", "captures")}
    assert {"/".join(n["assetKey"]["path"]) for n in nodes} == expected
    assert all(n["assetMaterializations"] for n in nodes), nodes
    materialized = dev.graphql(RUN_ASSETS_QUERY, runId=run_id)["runOrError"]
    assert {"/".join(m["assetKey"]["path"]) for m in materialized["assetMaterializations"]} == (
        expected
    )

    # The emulator of `make dev` ran, through its API, one Extralt run per source, none left
    # crawling (its own schedule adds runs of its own, origin `schedule`).
    state = dev.emulator_state()
    assert sorted((r["robot_id"], r["status"]) for r in state["runs"] if r["origin"] == "api") == (
        sorted((s["robot_id"], "completed") for s in DEMO_SOURCES["sources"])
    )
    extralt_ids = {source: dev.run_tags(run_id)[f"extralt/{source}.run_id"] for source in BUDGETS}

    # The default warehouse file, named in the README, queried the way the README queries it.
    warehouse = dev.warehouse()
    assert f"data/{warehouse.name}" in README, f"the README never names data/{warehouse.name}"
    with duckdb.connect(str(warehouse), read_only=True) as conn:
        for source, budget in BUDGETS.items():
            captures = conn.execute(
                f"SELECT count(*) FROM {SCHEMA}.{source}_captures WHERE run_id = ?",
                [extralt_ids[source]],
            ).fetchone()
            products = conn.execute(f"SELECT count(*) FROM {SCHEMA}.{source}_products").fetchone()
            assert captures == (budget,), source
            if source == OBSERVED["name"]:  # the sensor may have loaded a scheduled run too
                assert products and products[0] >= budget, source
            else:
                assert products == (budget,), source
        logged = conn.execute(
            f"SELECT source, run_id, origin, rows_loaded FROM {SCHEMA}.runs "
            "WHERE dagster_run_id = ?",
            [run_id],
        ).fetchall()
    assert sorted(logged) == sorted(
        (source, extralt_ids[source], "dagster", budget) for source, budget in BUDGETS.items()
    )


def test_the_daemon_loads_the_run_make_devs_extralt_schedule_made(
    make_dev: MakeDev, page: Page, artifacts: Path
):
    """`make dev`'s emulator runs `books`' robot by itself ~30 s after start, as an Extralt
    schedule would; the daemon ticks `extralt_external_runs_sensor` (on from the start) every
    30 s, and its tick loads that run into the default warehouse, once, spending no credits."""
    dev, source = make_dev, OBSERVED["name"]
    robot = OBSERVED["robot_id"]
    interval = OBSERVED["observe_interval_seconds"]

    def scheduled_runs() -> list[dict[str, Any]]:
        runs = dev.emulator_state()["runs"]
        return sorted(
            (r for r in runs if r["origin"] == "schedule" and r["robot_id"] == robot),
            key=lambda r: r["created_at"],
        )

    # make dev's first scheduled run is created ~30 s after it started, long before this test.
    first = wait_until(
        lambda: (runs := scheduled_runs()) and runs[0]["status"] == "completed" and runs[0],
        timeout=120,
        what=f"make dev's emulator to complete a scheduled run of {robot}",
        interval=1,
    )
    extralt_id = first["id"]
    counts = dev.emulator_state()["run_counts"]

    # The daemon's tick requests one load of it: run key and tag = the Extralt run id.
    def load_run() -> dict[str, Any] | None:
        runs = dev.runs(tags={OBSERVED_RUN_TAG: extralt_id})
        ended = [r for r in runs if r["status"] in TERMINAL]
        return ended[0] if ended else None

    load = wait_until(
        load_run,
        timeout=3 * interval + 120,
        what=f"a run of {EXTERNAL_RUNS_SENSOR} to load {extralt_id} and end (log: {dev.log})",
        interval=1,
    )
    assert load["status"] == "SUCCESS", f"{load}; see {dev.log}"
    tags = load["tags"]
    assert tags["dagster/run_key"] == extralt_id
    assert tags["dagster/sensor_name"] == EXTERNAL_RUNS_SENSOR
    assert tags["extralt/source"] == source

    # One tick that started after the load ended requests nothing more: loaded exactly once.
    def tick_after_load() -> list[dict[str, Any]] | None:
        ticks = dev.sensor_state(EXTERNAL_RUNS_SENSOR)["ticks"]
        later = [t for t in ticks if t["timestamp"] > load["endTime"] and t["status"] != "STARTED"]
        return ticks if later else None

    ticks = wait_until(
        tick_after_load,
        timeout=interval + 60,
        what=f"a tick of {EXTERNAL_RUNS_SENSOR} after the load ended",
        interval=1,
    )
    assert dev.sensor_state(EXTERNAL_RUNS_SENSOR)["status"] == "RUNNING"
    assert [t for t in ticks if t["status"] == "FAILURE"] == [], ticks
    requesting = [t for t in ticks if t["runIds"]]
    assert [(t["status"], t["runIds"]) for t in requesting] == [("SUCCESS", [load["runId"]])]
    assert [r["runId"] for r in dev.runs(tags={OBSERVED_RUN_TAG: extralt_id})] == [load["runId"]]

    # The sensor created, stopped and restarted nothing: the API's counts did not move.
    state = dev.emulator_state()
    assert state["run_counts"]["created"]["api"] == len(BUDGETS)  # the Materialize all run's
    for action in ("created", "stopped", "restarted"):
        assert state["run_counts"][action]["api"] == counts[action]["api"], state["run_counts"]
    assert state["requests"]["by_route"].get("GET /v0/extract/runs", 0) >= 1

    # The warehouse holds it once, as Extralt's run, with all its captures (the load has ended:
    # read-only, briefly).
    with duckdb.connect(str(dev.warehouse()), read_only=True) as conn:
        logged = conn.execute(
            f"SELECT source, status, origin, dagster_run_id, rows_loaded FROM {SCHEMA}.runs "
            "WHERE run_id = ?",
            [extralt_id],
        ).fetchall()
        captures = conn.execute(
            f"SELECT count(*), count(DISTINCT id) FROM {SCHEMA}.{source}_captures WHERE run_id = ?",
            [extralt_id],
        ).fetchone()
    rows = first["extracted"]
    assert rows > 0
    assert logged == [(source, "completed", "extralt", load["runId"], rows)]
    assert captures == (rows, rows)

    # The sensor's page in the UI, with its ticks.
    _skip_community_dialog(page, dev)
    page.goto(f"{UI}/locations/extralt/sensors/{EXTERNAL_RUNS_SENSOR}")
    expect(page.get_by_text(EXTERNAL_RUNS_SENSOR).first).to_be_visible()
    expect(page.get_by_text(load["runId"][:8]).first).to_be_visible()
    page.screenshot(path=str(artifacts / "sensor-ticks.png"), full_page=True)


def test_a_source_past_its_freshness_window_shows_as_stale(
    make_dev: MakeDev, page: Page, artifacts: Path
):
    """`make dev`'s `outdoor` goes stale minutes after its load (the demo's `freshness:`): the
    daemon's freshness evaluation marks its captures asset failed, and the asset page says so.
    The other sources' windows follow their crons, a day or a week: they stay fresh."""
    dev = make_dev
    late = LATE["name"]

    def freshness(source: str) -> dict[str, Any]:
        key = {"path": ["extralt", source, "captures"]}
        node = dev.graphql(FRESHNESS_QUERY, key=key)["assetNodeOrError"]
        assert node["__typename"] == "AssetNode", node
        return node

    policy = freshness(late)["internalFreshnessPolicy"]
    assert policy == {"failWindowSeconds": 120, "warnWindowSeconds": None}, policy
    if not freshness(late)["freshnessStatusInfo"]["freshnessStatusMetadata"]:
        # Run alone: nothing loaded it yet. Load it, as the UI's Materialize would.
        done = subprocess.run(
            [
                str(Path(sys.executable).with_name("dagster")),
                "asset",
                "materialize",
                "-w",
                "workspace.yaml",
                "--select",
                f"extralt/{late}/run*",
            ],
            cwd=dev.project,
            env={**_clean_env(), "DAGSTER_HOME": str(dev.home)},
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    # The daemon evaluates freshness every 30 s: failed within the window plus two of those.
    info = wait_until(
        lambda: (
            (i := freshness(late)["freshnessStatusInfo"])["freshnessStatus"] == "DEGRADED" and i
        ),
        timeout=policy["failWindowSeconds"] + 120,
        what=f"extralt/{late}/captures to turn stale (log: {dev.log})",
        interval=2,
    )
    loaded = info["freshnessStatusMetadata"]["lastMaterializedTimestamp"]
    assert loaded is not None
    for source in BUDGETS:
        if source != late:  # a day or a week: still fresh (or never loaded, when run alone)
            status = freshness(source)["freshnessStatusInfo"]["freshnessStatus"]
            assert status in ("HEALTHY", "UNKNOWN"), (source, status)

    _skip_community_dialog(page, dev)
    page.goto(f"{UI}/assets/extralt/{late}/captures")
    panel = page.get_by_text("Freshness policy", exact=True)
    expect(panel).to_be_visible()
    expect(page.get_by_text("Failed", exact=True).first).to_be_visible()
    expect(page.get_by_text(re.compile(r"Fails if more than 2 minutes"))).to_be_visible()
    page.screenshot(path=str(artifacts / "stale-source.png"), full_page=True)


def _clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("EXTRALT_", "DAGSTER_"))}


def _skip_community_dialog(page: Page, dev: MakeDev) -> None:
    """A fresh instance's first visit shows "Join the Dagster community" (when this test runs
    alone): Skip it."""
    if (dev.home / ".nux" / "nux.yaml").exists():
        return
    page.goto(UI)
    skip = page.get_by_role("button", name="Skip", exact=True)
    expect(page.get_by_text("Join the Dagster community")).to_be_visible()
    skip.click()
    expect(skip).to_be_hidden()


def test_a_second_shell_uses_the_same_instance(make_dev: MakeDev):
    """The README's command for a second shell: its run shows in the UI's instance."""
    dev = make_dev
    command = _second_shell_command()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("EXTRALT_", "DAGSTER_"))}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    before = {r["runId"] for r in dev.runs()}
    done = subprocess.run(
        ["bash", "-c", command],
        cwd=dev.project,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    # Not the sensor's loads of make dev's scheduled Extralt runs, if one came meanwhile.
    new = [r for r in dev.runs() if r["runId"] not in before and OBSERVED_RUN_TAG not in r["tags"]]
    assert [r["status"] for r in new] == ["SUCCESS"], new


def _second_shell_command() -> str:
    """The README's documented CLI materialization for a shell beside `make dev`."""
    match = re.search(r"```bash\n(# In a second shell[^\n]*\n(?:[^`][^\n]*\n)+)```", README)
    assert match, "the README documents no command for a second shell beside make dev"
    return match.group(1)
