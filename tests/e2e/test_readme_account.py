"""The README's "With a real Extralt account" block, run verbatim in an empty folder.

Its commands run as written, in bash, from a folder that holds nothing but the README's own
sources file ("Sources in YAML"). Two lines differ, as they must without an account: `pip
install` is skipped (the package is installed in this venv), and the key is the emulator's,
which `EXTRALT_BASE_URL` points at. `dagster dev` serves on its default port 3000.
"""

import os
import re
import sys
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest
import yaml
from dagster_graphql import DagsterGraphQLClient

from extralt_dagster.emulator import Emulator
from extralt_dagster.naming import job_name

from ..support import wait_until
from .conftest import PROJECT, TERMINAL, serving_dagster

pytestmark = pytest.mark.filterwarnings(
    "ignore:Using variable_values and operation_name:DeprecationWarning"
)

README = (PROJECT / "README.md").read_text(encoding="utf-8")
UI_PORT = 3000


def _section(title: str) -> str:
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## )", README, re.M | re.S)
    assert match, f"the README has no section {title!r}"
    return match.group(1)


def _block(text: str, language: str) -> str:
    blocks = re.findall(rf"```{language}\n(.*?)```", text, re.S)
    assert blocks, f"no {language} block"
    return blocks[0]


def _account_script(emulator: Emulator) -> str:
    lines = []
    for line in _block(_section("With a real Extralt account"), "bash").splitlines():
        if line.startswith("pip install"):
            continue  # installed in this venv already
        if line.startswith("export EXTRALT_API_KEY="):
            line = f"export EXTRALT_API_KEY={emulator.api_key} EXTRALT_BASE_URL={emulator.url}"
        lines.append(line)
    assert lines[-1].startswith("dagster dev"), lines
    return "set -euo pipefail\n" + "\n".join(lines[:-1]) + "\nexec " + lines[-1] + "\n"


@pytest.fixture(scope="module")
def account_folder(tmp_path_factory: pytest.TempPathFactory, artifacts: Path) -> Iterator[Path]:
    folder = tmp_path_factory.mktemp("my_extralt")
    sources = yaml.safe_load(_block(_section("Sources in YAML"), "yaml"))
    (folder / "sources.yaml").write_text(yaml.safe_dump(sources), encoding="utf-8")
    with Emulator(host="127.0.0.1", port=0, speed=50.0) as emulator:
        script = _account_script(emulator)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("EXTRALT_", "DAGSTER_"))}
        env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
        env["DAGSTER_DISABLE_TELEMETRY"] = "yes"
        log = artifacts / "readme-account.log"
        home = folder / ".dagster_home"
        url = f"http://127.0.0.1:{UI_PORT}"
        with serving_dagster(
            ["bash", "-c", script], env=env, cwd=folder, log=log, url=url, home=home
        ):
            yield folder, emulator, sources


def test_the_real_account_steps_load_a_source(account_folder):
    folder, emulator, sources = account_folder
    home = folder / ".dagster_home"
    assert (home / "dagster.yaml").read_bytes() == (PROJECT / "dagster.yaml").read_bytes()
    source = sources["sources"][0]
    client = DagsterGraphQLClient("127.0.0.1", port_number=UI_PORT)
    run_id = client.submit_job_execution(job_name(source["name"]))
    status = wait_until(
        lambda: (s := client.get_run_status(run_id)).value in TERMINAL and s,
        timeout=240,
        what=f"the {source['name']} job",
        interval=0.5,
    )
    assert status.value == "SUCCESS"
    assert (home / "storage").is_dir(), "the run was not kept in $DAGSTER_HOME"
    (extralt_run,) = [r for r in emulator.runs.values() if r.robot_id == source["robot_id"]]
    assert (extralt_run.status, extralt_run.extracted) == ("completed", source["budget"])

    (warehouse,) = sorted((folder / "data").glob("*.duckdb"))
    assert f"data/{warehouse.name}" in _section("With a real Extralt account")
    schema = sources.get("defaults", {}).get("schema", "extralt")
    with duckdb.connect(str(warehouse), read_only=True) as conn:
        rows = conn.execute(f"SELECT count(*) FROM {schema}.{source['name']}_captures").fetchone()
    assert rows == (source["budget"],)
