"""Terminating a Dagster run stops the Extralt run: the real path, through the webserver.

The run is launched by a real `dagster-webserver` (run launcher, code server, run worker and
step process), and terminated the way the UI's Terminate button does it, through GraphQL.
"""

import os
import sys
from pathlib import Path

import pytest
from dagster import DagsterInstance, DagsterRunStatus
from dagster_graphql import DagsterGraphQLClient

from .processes import end_group, free_port, http_ok, start_group
from .support import event_log_text, wait_until

HERE = Path(__file__).parent


@pytest.fixture
def webserver(emulator, tmp_path):
    home = tmp_path / "dagster_home"
    home.mkdir()
    # No daemon here, so launch runs directly instead of queueing them.
    (home / "dagster.yaml").write_text(
        "telemetry:\n  enabled: false\n"
        "run_coordinator:\n  module: dagster.core.run_coordinator\n"
        "  class: DefaultRunCoordinator\n"
    )
    port = free_port()
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "EXTRALT_API_KEY": emulator.api_key,
        "EXTRALT_BASE_URL": emulator.url,
        "EXTRALT_DUCKDB_PATH": str(tmp_path / "w.duckdb"),
    }
    # Its own process group, so the teardown ends the webserver and everything it started.
    proc = start_group(
        [
            str(Path(sys.executable).parent / "dagster-webserver"),
            "-f",
            str(HERE / "termination_defs.py"),
            "-d",
            str(HERE.parent),
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
        ],
        env=env,
    )
    try:
        client = DagsterGraphQLClient("127.0.0.1", port_number=port)
        wait_until(
            lambda: http_ok(f"http://127.0.0.1:{port}/server_info", proc, "dagster-webserver"),
            timeout=120,
            what="dagster-webserver",
            interval=0.2,
        )
        yield client
    finally:
        end_group(proc)


def test_terminating_the_dagster_run_stops_the_extralt_run(emulator, webserver, tmp_path):
    emulator.set_faults(never_finish=True)
    run_id = webserver.submit_job_execution("extract_shoes")
    extralt_id = wait_until(lambda: next(iter(emulator.runs), None), timeout=120, what="create")
    wait_until(
        lambda: emulator.count_requests("GET", f"/v0/extract/runs/{extralt_id}") >= 2,
        what="the asset polling",
    )
    webserver.terminate_run(run_id)
    wait_until(
        lambda: (
            webserver.get_run_status(run_id)
            in (DagsterRunStatus.CANCELED, DagsterRunStatus.FAILURE)
        ),
        timeout=60,
        what="the Dagster run to end",
    )
    assert webserver.get_run_status(run_id) == DagsterRunStatus.CANCELED
    assert emulator.run(extralt_id).status == "stopped"
    assert emulator.count_requests("POST", "/v0/extract/runs/*/stop") == 1
    assert emulator.count_requests("POST", "/v0/extract/runs") == 1
    # The step said why it stopped the run (the webserver's instance: its DAGSTER_HOME).
    with DagsterInstance.from_config(str(tmp_path / "dagster_home")) as instance:
        text = event_log_text(instance)
    assert f"Dagster run terminated; stopping Extralt run {extralt_id}" in text
    assert f"Stopped Extralt run {extralt_id}" in text
