"""`dagster dev` as users meet it: the UI in a browser, the daemon's schedule, GraphQL.

One `dagster dev` (webserver + daemon, code location from workspace.yaml) serves the whole
module, against one emulator. Each test uses its own source, so the runs and rows it checks are
its own: the browser materializes `shoes`, the schedule runs `ticker` (every minute, running
from the start, so its first tick comes while the browser test runs), GraphQL materializes
`books`, and the terminated run is `outdoor`'s.
"""

import re
from pathlib import Path
from typing import Any
from urllib.parse import quote

import dagster as dg
import pytest
from dagster import DagsterRunStatus
from playwright.sync_api import Page, expect

from extralt_dagster.naming import SOURCE_TAG, job_name, schedule_name
from extralt_dagster.sources import load_extralt_definitions

from ..support import wait_until
from .conftest import IN_FLIGHT, SCHEDULED_SOURCE, TERMINAL, DagsterDev

pytestmark = pytest.mark.filterwarnings(
    # dagster_graphql's client calls gql the deprecated way; not ours to fix.
    "ignore:Using variable_values and operation_name:DeprecationWarning"
)

#: How the UI labels each asset kind under a node of the asset graph.
KIND_LABELS = {"extralt": "extralt", "duckdb": "DuckDB"}


def _asset_specs(dev: DagsterDev, source: str) -> dict[str, dg.AssetSpec]:
    """What the code location declares for a source's assets: {"run": spec, "captures": spec}."""
    defs = load_extralt_definitions(
        dev.sources, duckdb_path=str(dev.duckdb_path), api_key="unused", base_url=dev.emulator.url
    )
    specs = {}
    for assets_def in defs.assets or []:
        for spec in getattr(assets_def, "specs", ()):
            path = spec.key.path
            if path[:2] == ["extralt", source]:
                specs[path[2]] = spec
    assert set(specs) == {"run", "captures"}, specs
    return specs


def _plain(markdown: str) -> str:
    """The text the UI shows for a Markdown description (inline code loses its backticks)."""
    return markdown.replace("`", "")


def _dismiss_community_dialog(page: Page, dev: DagsterDev) -> None:
    """The first visit to a fresh instance shows "Join the Dagster community": Skip it."""
    if dev.community_dialog_seen:
        return
    skip = page.get_by_role("button", name="Skip", exact=True)
    expect(page.get_by_text("Join the Dagster community")).to_be_visible()
    skip.click()
    expect(skip).to_be_hidden()
    wait_until(lambda: dev.community_dialog_seen, timeout=10, what="the dialog to be dismissed")


def test_the_ui_materializes_a_source_and_shows_what_landed(
    dagster_dev: DagsterDev, page: Page, artifacts: Path
):
    dev, source = dagster_dev, "shoes"
    specs = _asset_specs(dev, source)
    selection = quote(f'key:"extralt/{source}/*"', safe="")
    graph_url = f"{dev.url}/asset-groups~{selection}/"

    # The asset graph, filtered to one source: both assets, their kinds and descriptions.
    page.goto(graph_url)
    _dismiss_community_dialog(page, dev)
    for name, spec in specs.items():
        page.goto(graph_url)
        node = page.locator("foreignObject").filter(has=page.get_by_text(name, exact=True))
        expect(node).to_have_count(1)
        assert set(spec.kinds) <= set(KIND_LABELS), f"no UI label known for {spec.kinds}"
        for kind in spec.kinds:
            expect(node.get_by_text(KIND_LABELS[kind], exact=True)).to_be_visible()
        node.get_by_text(name, exact=True).click()
        expect(page.get_by_text(f"extralt / {source} / {name}", exact=True).first).to_be_visible()
        assert spec.description
        expect(page.get_by_text(_plain(spec.description)).first).to_be_visible()

    # "Materialize all" on that graph launches one run of both assets.
    page.goto(graph_url)
    expect(page.locator("foreignObject")).to_have_count(2)
    page.get_by_role("button", name="Materialize all").click()
    launched = page.get_by_text(re.compile(r"^Launched run [0-9a-f]{8}$")).first
    expect(launched).to_be_visible()
    short_id = launched.inner_text().rsplit(" ", 1)[1]
    page.goto(f"{dev.url}/runs")  # the Runs page lists it; open it from there
    page.get_by_text(short_id, exact=True).first.click()
    expect(page).to_have_url(re.compile(rf"/runs/{short_id}[0-9a-f-]{{28}}"))
    run_id = page.url.split("/runs/", 1)[1].split("?", 1)[0].strip("/")

    # The run page shows it succeed.
    status = page.get_by_text(re.compile(r"^(Success|Failure|Canceled)$")).first
    expect(status).to_be_visible(timeout=180_000)
    shot = artifacts / f"{source}-run-succeeded.png"
    page.screenshot(path=str(shot), full_page=True)
    assert status.inner_text() == "Success", f"the run ended {status.inner_text()}; see {shot}"
    run = dev.run(run_id)
    assert run["status"] == "SUCCESS"
    assert "dagster/schedule_name" not in run["tags"]
    extralt_id = run["tags"][f"extralt/{source}.run_id"]
    extralt_run = dev.emulator.run(extralt_id)
    assert extralt_run.status == "completed"
    rows = extralt_run.extracted
    assert rows == specs["run"].metadata["extralt/budget"]  # the demo source's budget

    # The captures asset shows this run's materialization metadata.
    page.goto(f"{dev.url}/assets/extralt/{source}/captures")
    expect(page.get_by_text("Row count", exact=True)).to_be_visible()
    page.screenshot(path=str(artifacts / f"{source}-captures-overview.png"), full_page=True)
    page.goto(f"{dev.url}/assets/extralt/{source}/captures?view=events")
    expect(page.get_by_text(f"Materialized in run {short_id}").first).to_be_visible()

    def metadata(key: str) -> Any:
        return page.get_by_role("row").filter(has=page.get_by_text(key, exact=True))

    expect(metadata("dagster/row_count")).to_contain_text(str(rows))
    expect(metadata("dagster/table_name")).to_contain_text(f"extralt.{source}_captures")
    expect(metadata("extralt/run_id")).to_contain_text(extralt_id)
    preview = metadata("extralt/preview")
    for column in ("title", "brand", "min_price", "currency", "available"):
        expect(preview.get_by_role("columnheader", name=column, exact=True)).to_be_visible()
    first_title = preview.locator("tbody tr").first.locator("td").first.inner_text().strip()
    assert first_title
    preview.scroll_into_view_if_needed()  # the metadata scrolls inside the page: show the preview
    page.screenshot(path=str(artifacts / f"{source}-captures-asset.png"))

    # And DuckDB holds exactly that: this run's rows, its run log entry, the preview's product.
    assert dev.query(
        "SELECT run_id, source, status, extracted, rows_loaded FROM extralt.runs "
        "WHERE dagster_run_id = ?",
        [run_id],
    ) == [(extralt_id, source, "completed", rows, rows)]
    assert dev.query(
        f"SELECT count(*), count(DISTINCT id) FROM extralt.{source}_captures WHERE run_id = ?",
        [extralt_id],
    ) == [(rows, rows)]
    assert dev.query(f"SELECT count(*) FROM extralt.{source}_products") == [(rows,)]
    found = dev.query(
        f"SELECT count(*) FROM extralt.{source}_captures WHERE run_id = ? AND title = ?",
        [extralt_id, first_title],
    )
    assert found[0][0] >= 1, f"preview title {first_title!r} is not in the table"


def test_the_daemon_runs_a_schedule_from_the_sources_file(dagster_dev: DagsterDev):
    dev, source = dagster_dev, SCHEDULED_SOURCE["name"]
    name = schedule_name(source)
    assert dev.schedule_state(name)["status"] == "RUNNING"  # schedule_running: true

    def first_finished_tick() -> dict[str, Any] | None:
        runs = dev.runs(tags={"dagster/schedule_name": name})
        finished = [r for r in runs if r["status"] in TERMINAL]
        return finished[-1] if finished else None  # newest first: the last is the first tick

    try:
        # The daemon ticks at the first minute boundary after it started: up to ~60 s, plus
        # the run itself. Nothing here calls the schedule.
        run = wait_until(
            first_finished_tick, timeout=240, what=f"a run of {name} to end", interval=1
        )
    finally:
        # Stop it, so the next minutes launch nothing into the other tests.
        assert dev.stop_schedule(name) == "STOPPED"
    # And let a tick that was already launched finish: the next tests get a quiet instance.
    wait_until(
        lambda: not dev.runs(tags={SOURCE_TAG: source}, statuses=IN_FLIGHT),
        timeout=180,
        what=f"the runs {name} launched to end",
        interval=1,
    )

    assert run["status"] == "SUCCESS", run
    tags = run["tags"]
    assert tags["dagster/schedule_name"] == name
    assert tags[SOURCE_TAG] == source
    extralt_id = tags[f"extralt/{source}.run_id"]
    extralt_run = dev.emulator.run(extralt_id)
    assert (extralt_run.status, extralt_run.robot_id) == ("completed", SCHEDULED_SOURCE["robot_id"])
    rows = SCHEDULED_SOURCE["budget"]
    assert extralt_run.extracted == rows
    assert dev.query(
        "SELECT run_id, source, status, rows_loaded FROM extralt.runs WHERE dagster_run_id = ?",
        [run["runId"]],
    ) == [(extralt_id, source, "completed", rows)]
    assert dev.query(
        f"SELECT count(*) FROM extralt.{source}_captures WHERE run_id = ?", [extralt_id]
    ) == [(rows,)]


def test_graphql_launches_a_materialization(dagster_dev: DagsterDev):
    dev, source = dagster_dev, "books"
    run_id = dev.client.submit_job_execution(job_name(source))
    run = dev.wait_for_run_end(run_id)
    assert run["status"] == "SUCCESS", run
    assert run["tags"][SOURCE_TAG] == source  # the job's tag
    extralt_id = run["tags"][f"extralt/{source}.run_id"]
    rows = dev.emulator.run(extralt_id).extracted
    assert rows == _asset_specs(dev, source)["run"].metadata["extralt/budget"]
    assert dev.query(
        f"SELECT count(*) FROM extralt.{source}_captures WHERE run_id = ?", [extralt_id]
    ) == [(rows,)]


def test_terminating_a_run_through_graphql_stops_the_extralt_run(dagster_dev: DagsterDev):
    dev, source = dagster_dev, "outdoor"
    emulator, client = dev.emulator, dev.client
    before = set(emulator.runs)
    # Only this source's robot stalls, whatever else runs meanwhile.
    emulator.set_faults(never_finish=True, run_fault_robots=("rbt_outdoor",))
    try:
        run_id = client.submit_job_execution(job_name(source))
        new_runs = wait_until(
            lambda: {
                r for r in set(emulator.runs) - before if emulator.run(r).robot_id == "rbt_outdoor"
            },
            timeout=180,
            what="the run asset to create its Extralt run",
            interval=0.1,
        )
    finally:
        emulator.clear_faults()
    (extralt_id,) = new_runs
    wait_until(
        lambda: emulator.count_requests("GET", f"/v0/extract/runs/{extralt_id}") >= 2,
        timeout=60,
        what="the asset to poll the stalled run",
        interval=0.1,
    )
    assert emulator.run(extralt_id).status == "running"

    client.terminate_run(run_id)
    wait_until(
        lambda: (
            client.get_run_status(run_id) in (DagsterRunStatus.CANCELED, DagsterRunStatus.FAILURE)
        ),
        timeout=90,
        what="the Dagster run to end",
        interval=0.5,
    )
    assert client.get_run_status(run_id) == DagsterRunStatus.CANCELED
    assert emulator.run(extralt_id).status == "stopped"
    assert emulator.count_requests("POST", f"/v0/extract/runs/{extralt_id}/stop") == 1
    assert dev.run(run_id)["tags"][f"extralt/{source}.run_id"] == extralt_id
    # Nothing was loaded for it: the captures step never started (asked of Dagster, whatever
    # the other tests left in the warehouse), and no row of the warehouse names the run.
    steps = dev.graphql(STEP_STATS, runId=run_id)["runOrError"]["stepStats"]
    started = {step["stepKey"]: step["status"] for step in steps}
    assert f"extralt__{source}__run" in started, started
    assert started.get(f"extralt__{source}__captures") is None, started
    runs_table = (
        "SELECT count(*) FROM duckdb_tables() WHERE schema_name = 'extralt' AND table_name = 'runs'"
    )
    has_run_log = dev.duckdb_path.exists() and dev.query(runs_table) == [(1,)]
    loaded = (
        dev.query("SELECT count(*) FROM extralt.runs WHERE run_id = ?", [extralt_id])
        if has_run_log
        else [(0,)]  # no warehouse file, or no run log in it: nothing was loaded by anyone
    )
    assert loaded == [(0,)]


STEP_STATS = """
query StepStats($runId: ID!) {
  runOrError(runId: $runId) {
    __typename
    ... on Run { stepStats { stepKey status } }
  }
}"""
