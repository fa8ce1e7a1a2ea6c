"""`make dev` exactly as a new user meets it: its own defaults, "Materialize all", a second shell.

`make dev` runs `.venv/bin/extralt-dagster dev` from the project root. This runs that same
command from a fresh folder holding the project's `workspace.yaml` and `dagster.yaml`, with no
`EXTRALT_*` or `DAGSTER_*` variable set: the emulator on its default port 8765, `dagster dev` on
its default 3000, the default DuckDB file under `data/`, the default schema `extralt`, and the
instance in `.dagster_home`. Nothing here is given a test-friendly name.
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
from extralt_dagster.emulator import DEMO_API_KEY

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
query AllRuns {
  runsOrError { __typename ... on Runs { results { runId status } } }
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

    runs = dev.graphql(ALL_RUNS_QUERY)["runsOrError"]["results"]
    (run_id,) = [r["runId"] for r in runs if r["runId"].startswith(short_id)]
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

    # Every asset of the group is green: its newest materialization is this run's.
    selector = {
        "groupName": GROUP,
        "repositoryName": "__repository__",
        "repositoryLocationName": "extralt",
    }
    nodes = dev.graphql(GROUP_ASSETS_QUERY, group=selector)["assetNodes"]
    assert {"/".join(n["assetKey"]["path"]) for n in nodes} == {
        f"extralt/{source}/{kind}" for source in BUDGETS for kind in ("run", "captures")
    }
    assert all(n["assetMaterializations"][0]["runId"] == run_id for n in nodes), nodes

    # The emulator of `make dev` ran one Extralt run per source, none left crawling.
    state = dev.emulator_state()
    assert sorted((r["robot_id"], r["status"]) for r in state["runs"]) == sorted(
        (s["robot_id"], "completed") for s in DEMO_SOURCES["sources"]
    )

    # The default warehouse file, named in the README, queried the way the README queries it.
    warehouse = dev.warehouse()
    assert f"data/{warehouse.name}" in README, f"the README never names data/{warehouse.name}"
    with duckdb.connect(str(warehouse), read_only=True) as conn:
        for source, budget in BUDGETS.items():
            captures = conn.execute(f"SELECT count(*) FROM {SCHEMA}.{source}_captures").fetchone()
            products = conn.execute(f"SELECT count(*) FROM {SCHEMA}.{source}_products").fetchone()
            assert (captures, products) == ((budget,), (budget,)), source
        logged = conn.execute(f"SELECT source, rows_loaded FROM {SCHEMA}.runs").fetchall()
    assert sorted(logged) == sorted(BUDGETS.items())


def test_a_second_shell_uses_the_same_instance(make_dev: MakeDev):
    """The README's command for a second shell: its run shows in the UI's instance."""
    dev = make_dev
    command = _second_shell_command()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("EXTRALT_", "DAGSTER_"))}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    before = {r["runId"] for r in dev.graphql(ALL_RUNS_QUERY)["runsOrError"]["results"]}
    done = subprocess.run(
        ["bash", "-c", command],
        cwd=dev.project,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    runs = dev.graphql(ALL_RUNS_QUERY)["runsOrError"]["results"]
    new = [r for r in runs if r["runId"] not in before]
    assert [r["status"] for r in new] == ["SUCCESS"], new


def _second_shell_command() -> str:
    """The README's documented CLI materialization for a shell beside `make dev`."""
    match = re.search(r"```bash\n(# In a second shell[^\n]*\n(?:[^`][^\n]*\n)+)```", README)
    assert match, "the README documents no command for a second shell beside make dev"
    return match.group(1)
