"""`ExtraltComponent` in a `defs.yaml`: loaded with Dagster's component testing sandbox, and in a
real project that `dg scaffold defs`, `dg check defs` and `dg launch` drive."""

import importlib
import json
import logging
import os
import subprocess
import sys
import textwrap
from contextlib import contextmanager
from importlib.metadata import entry_points
from pathlib import Path

import dagster as dg
import duckdb
import pytest
import yaml
from dagster.components.testing import create_defs_folder_sandbox

from extralt_dagster.api.errors import ExtraltAuthError
from extralt_dagster.component import ExtraltComponent
from extralt_dagster.emulator import DEMO_API_KEY
from extralt_dagster.naming import captures_asset_key
from extralt_dagster.sources import (
    DEFAULT_DUCKDB_PATH,
    EMULATOR_API_KEY,
    EMULATOR_URL,
    SourcesFileError,
    load_extralt_definitions,
)
from extralt_dagster.spec import CreditLimit

VALID = Path(__file__).parent / "fixtures" / "sources_valid.yaml"
TYPE = "extralt_dagster.component.ExtraltComponent"
CREATE = ("POST", "/v0/extract/runs")


@pytest.fixture(autouse=True)
def _no_stray_files(tmp_path, monkeypatch):
    """Loading creates the DuckDB file's folder; keep that out of the working tree. No test
    inherits the shell's Extralt settings."""
    monkeypatch.chdir(tmp_path)
    for name in ("EXTRALT_API_KEY", "EXTRALT_BASE_URL", "EXTRALT_DUCKDB_PATH"):
        monkeypatch.delenv(name, raising=False)


@contextmanager
def load(attributes):
    """(component, defs) from a defs.yaml with these attributes, in a throwaway project."""
    with create_defs_folder_sandbox() as sandbox:
        path = sandbox.scaffold_component(
            ExtraltComponent,
            defs_path="extralt",
            defs_yaml_contents={"type": TYPE, "attributes": attributes},
        )
        with sandbox.load_component_and_build_defs(defs_path=path) as (component, defs):
            yield component, defs


def load_error(attributes, expected: type[Exception] = SourcesFileError) -> str:
    """The message of the `expected` error a bad defs.yaml produces (Dagster wraps it)."""
    with pytest.raises(Exception) as info, load(attributes):
        pass
    exc: BaseException | None = info.value
    while exc is not None and not isinstance(exc, expected):
        exc = exc.__cause__ or exc.__context__
    assert exc is not None, f"no {expected.__name__} in the chain of {info.value!r}"
    return str(exc)


def summary(defs):
    specs = {
        s.key: (s.group_name, tuple(s.owners), s.tags, s.metadata.get("extralt/budget"))
        for s in defs.resolve_all_asset_specs()
    }
    schedules = {
        s.name: (s.cron_schedule, s.execution_timezone, s.default_status, s.job_name)
        for s in defs.schedules
    }
    jobs = {j.name: j.asset_layer.selected_asset_keys for j in defs.resolve_all_job_defs()}
    extralt, warehouse = defs.resources["extralt"], defs.resources["duckdb"]
    return specs, schedules, jobs, (extralt.api_key, extralt.base_url, warehouse.database)


def test_defs_yaml_builds_what_the_sources_file_builds(tmp_path, monkeypatch):
    monkeypatch.setenv("MY_EXTRALT_KEY", "key-from-env")
    monkeypatch.setenv("MY_EXTRALT_URL", "https://eu.extralt.example")
    monkeypatch.setenv("MY_DUCKDB", str(tmp_path / "w.duckdb"))
    attributes = {
        "api_key": "{{ env.MY_EXTRALT_KEY }}",
        "base_url": "{{ env.MY_EXTRALT_URL }}",
        "duckdb_path": "{{ env.MY_DUCKDB }}",
        **yaml.safe_load(VALID.read_text()),
    }
    with load(attributes) as (component, defs):
        assert isinstance(component, ExtraltComponent)
        assert [s.name for s in component.sources] == ["shoes", "books", "outdoor"]
        assert "key-from-env" not in repr(component)
        expected = load_extralt_definitions(
            VALID,
            api_key="key-from-env",
            base_url="https://eu.extralt.example",
            duckdb_path=str(tmp_path / "w.duckdb"),
        )
        assert summary(defs) == summary(expected)
        # and it is the documented content, not two identical mistakes
        assert defs.resources["extralt"].api_key == "key-from-env"
        assert defs.resolve_schedule_def("extralt_shoes_schedule").execution_timezone == (
            "Europe/Paris"
        )


def test_a_key_in_the_environment_stays_an_env_var_read_by_the_run(
    emulator, instance, tmp_path, monkeypatch
):
    monkeypatch.setenv("EXTRALT_BASE_URL", emulator.url)
    monkeypatch.setenv("EXTRALT_DUCKDB_PATH", str(tmp_path / "w.duckdb"))
    monkeypatch.setenv("EXTRALT_API_KEY", "not-the-key-yet")
    with load({"sources": [{"name": "books", "robot_id": "rbt_books", "budget": 5}]}) as (_, defs):
        api_key = defs.resources["extralt"].api_key
        assert isinstance(api_key, dg.EnvVar) and api_key.env_var_name == "EXTRALT_API_KEY"
        assert defs.resources["extralt"].base_url == emulator.url
        monkeypatch.setenv("EXTRALT_API_KEY", emulator.api_key)  # read by the run, not the load
        result = defs.resolve_job_def("extralt_books_job").execute_in_process(instance=instance)
        assert result.success
        assert result.asset_materializations_for_node("extralt__books__captures")
    assert emulator.count_requests(*CREATE) == 1
    with duckdb.connect(str(tmp_path / "w.duckdb"), read_only=True) as con:
        [(rows,)] = con.execute("select count(*) from extralt.books_captures").fetchall()
    assert rows == 5


def test_the_component_accepts_defaults(tmp_path, monkeypatch):
    monkeypatch.delenv("EXTRALT_BASE_URL", raising=False)
    monkeypatch.setenv("EXTRALT_DUCKDB_PATH", str(tmp_path / "w.duckdb"))
    attributes = {
        "defaults": {"schema": "raw", "group": "scraping", "timezone": "Asia/Tokyo"},
        "sources": [{"name": "shoes", "robot_id": "rbt_shoes", "cron": "0 3 * * *"}],
    }
    with load(attributes) as (_, defs):
        spec = next(
            s for s in defs.resolve_all_asset_specs() if s.key == captures_asset_key("shoes")
        )
        assert spec.group_name == "scraping"
        assert "raw.shoes_captures" in spec.description
        assert defs.resolve_schedule_def("extralt_shoes_schedule").execution_timezone == (
            "Asia/Tokyo"
        )


SHOES = {"name": "shoes", "robot_id": "rbt_shoes"}


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        (
            {**SHOES, "budgte": 5},
            "source 'shoes' (sources[0]), field budgte: unknown field. Did you mean 'budget'?",
        ),
        (
            {**SHOES, "budget": "100"},
            "source 'shoes' (sources[0]), field budget: Input should be a valid integer, "
            "got '100'.",
        ),
        ({**SHOES, "budget": -5}, "source 'shoes' (sources[0]), field budget: budget must be"),
        (
            {"name": "shoes", "robot_idd": "rbt_shoes"},
            (
                "source 'shoes' (sources[0]), field robot_id: required but missing. Add it.",
                "source 'shoes' (sources[0]), field robot_idd: unknown field. "
                "Did you mean 'robot_id'?",
            ),
        ),
        (
            {"name": "shoes"},
            "source 'shoes' (sources[0]), field robot_id: required but missing. Add it.",
        ),
        (
            {**SHOES, "cron": "61 25 * * *"},
            "source 'shoes' (sources[0]), field cron: cron '61 25 * * *' is not a valid cron "
            "expression: minute 61 is out of range (0-59); hour 25 is out of range (0-23).",
        ),
        (
            {**SHOES, "cron": "daily"},
            "field cron: cron must be a 5-field cron expression such as '0 3 * * *'",
        ),
        (
            {**SHOES, "lock_timeout_seconds": -1},
            "field lock_timeout_seconds: lock_timeout_seconds must be a number of seconds, "
            "0 or more",
        ),
        ({**SHOES, "schema": "Raw-EU"}, "source 'shoes' (sources[0]), field schema: schema"),
    ],
)
def test_bad_attributes_name_the_file_line_source_and_field(source, expected):
    expected = (expected,) if isinstance(expected, str) else expected
    message = load_error({"sources": [source]})
    header, *problems, footer = message.splitlines()
    assert header.startswith("/"), header  # the defs.yaml's full path
    assert header.endswith(
        f"defs.yaml: {len(expected)} problem(s) in the ExtraltComponent attributes:"
    )
    assert len(problems) == len(expected), message
    for problem, fragment in zip(problems, expected, strict=True):
        assert problem.startswith("  - line "), problem
        assert fragment in problem, f"{fragment!r} not in:\n{message}"
    assert footer == "Fix these in the file and reload. No Extralt API call was made."


def test_bad_defaults_are_reported_like_the_sources_file():
    message = load_error(
        {"defaults": {"tz": "UTC", "lock_timeout_seconds": "5"}, "sources": [SHOES]}
    )
    assert "2 problem(s) in the ExtraltComponent attributes" in message
    assert "defaults, field tz: unknown field." in message
    assert "defaults, field lock_timeout_seconds: Input should be a valid number" in message


def test_templates_render_inside_sources_but_quoted_numbers_stay_mistakes(monkeypatch):
    monkeypatch.setenv("SHOES_BUDGET", "40")
    monkeypatch.setenv("SHOES_ROBOT", "rbt_shoes")
    source = {
        "name": "shoes",
        "robot_id": "{{ env.SHOES_ROBOT }}",
        "budget": "{{ env.SHOES_BUDGET }}",
    }
    with load({"sources": [source]}) as (component, defs):
        assert (component.sources[0].robot_id, component.sources[0].budget) == ("rbt_shoes", 40)
        spec = next(s for s in defs.resolve_all_asset_specs() if s.key.path[-1] == "run")
        assert spec.metadata["extralt/budget"] == 40


def test_duplicate_source_names_are_rejected():
    message = load_error({"sources": [SHOES, {"name": "shoes", "robot_id": "rbt_outdoor"}]})
    assert (
        "source 'shoes' (sources[1]), field name: sources[1] reuses the name 'shoes' of "
        "sources[0]" in message
    )


def test_schema_and_lock_timeout_per_source_and_in_defaults(tmp_path, monkeypatch):
    monkeypatch.setenv("EXTRALT_DUCKDB_PATH", str(tmp_path / "w.duckdb"))
    attributes = {
        "defaults": {"schema": "staging", "lock_timeout_seconds": 5},
        "sources": [
            {**SHOES, "schema": "raw", "lock_timeout_seconds": 0},
            {"name": "books", "robot_id": "rbt_books"},
        ],
    }
    with load(attributes) as (component, defs):
        shoes, books = component.sources
        assert (shoes.schema_, shoes.lock_timeout_seconds) == ("raw", 0)
        assert (books.schema_, books.lock_timeout_seconds) == (None, None)
        assert component.defaults.lock_timeout_seconds == 5
        descriptions = {s.key: s.description for s in defs.resolve_all_asset_specs()}
        assert "raw.shoes_captures" in descriptions[captures_asset_key("shoes")]
        assert "staging.books_captures" in descriptions[captures_asset_key("books")]


# --- The connection, decided at load time ----------------------------------------------------


def test_no_key_and_no_url_means_the_local_emulator_with_a_warning(caplog):
    assert EMULATOR_API_KEY == DEMO_API_KEY  # sources.py's copy of the emulator's demo key
    with (
        caplog.at_level(logging.WARNING, logger="extralt_dagster.component"),
        load({"sources": [SHOES]}) as (_, defs),
    ):
        extralt = defs.resources["extralt"]
        assert (extralt.base_url, extralt.api_key) == (EMULATOR_URL, DEMO_API_KEY)
    [warning] = [r.getMessage() for r in caplog.records if r.name == "extralt_dagster.component"]
    assert "defs.yaml: no Extralt API key (EXTRALT_API_KEY or api_key)" in warning
    assert f"local Extralt emulator at {EMULATOR_URL} with its demo key" in warning
    assert "Set EXTRALT_API_KEY to use your Extralt account." in warning


def test_a_loopback_url_without_a_key_runs_against_the_emulator(
    emulator, instance, tmp_path, monkeypatch
):
    monkeypatch.setenv("EXTRALT_DUCKDB_PATH", str(tmp_path / "w.duckdb"))
    attributes = {"base_url": emulator.url, "sources": [{**SHOES, "budget": 4}]}
    with load(attributes) as (_, defs):
        assert defs.resources["extralt"].api_key == DEMO_API_KEY
        result = defs.resolve_job_def("extralt_shoes_job").execute_in_process(instance=instance)
    assert result.success
    assert emulator.count_requests(*CREATE) == 1


@pytest.mark.parametrize(
    ("attributes", "env", "named"),
    [
        ({"base_url": "https://eu.extralt.example"}, {}, "base_url"),
        ({}, {"EXTRALT_BASE_URL": "https://eu.extralt.example"}, "EXTRALT_BASE_URL"),
    ],
)
def test_a_remote_url_without_a_key_fails_the_load_in_one_sentence(
    attributes, env, named, monkeypatch
):
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    message = load_error({**attributes, "sources": [SHOES]}, expected=ExtraltAuthError)
    assert message.endswith(
        f"defs.yaml: {named} is 'https://eu.extralt.example' but EXTRALT_API_KEY is not set: "
        f"set EXTRALT_API_KEY to your Extralt API key, or unset {named} to use the local "
        "emulator."
    ), message


def test_registered_for_dg_as_extralt_dagster_component():
    """What `dg list components` reads: the entry point, then the module's attribute.

    Needs `ExtraltComponent` exported from `extralt_dagster` and the package (re)installed.
    """
    [entry] = [
        ep
        for ep in entry_points(group="dagster_dg_cli.registry_modules")
        if ep.value == "extralt_dagster"
    ]
    module = importlib.import_module(entry.value)
    assert module.ExtraltComponent is ExtraltComponent


def test_scaffolding_writes_a_defs_yaml_that_loads(tmp_path, monkeypatch):
    monkeypatch.delenv("EXTRALT_BASE_URL", raising=False)
    monkeypatch.setenv("EXTRALT_DUCKDB_PATH", str(tmp_path / "w.duckdb"))
    with create_defs_folder_sandbox() as sandbox:
        path = sandbox.scaffold_component(ExtraltComponent, defs_path="extralt")
        written = yaml.safe_load((path / "defs.yaml").read_text())
        assert written["type"] == TYPE
        assert "api_key" not in written["attributes"]  # the secret stays out of the file
        with sandbox.load_component_and_build_defs(defs_path=path) as (_, defs):
            schedule = defs.resolve_schedule_def("extralt_shoes_schedule")
            assert schedule.default_status == dg.DefaultScheduleStatus.STOPPED


# --- A real dg project: what a user scaffolds, checks and launches -------------------------

DG = str(Path(sys.executable).with_name("dg"))
#: The four mistakes of issue 12, one per source, each on a line of its own.
MISTAKES = """\
type: extralt_dagster.ExtraltComponent

attributes:
  sources:
    - name: shoes
      robot_id: rbt_shoes
      budgte: 100
    - name: books
      robot_id: rbt_books
      budget: "100"
    - name: outdoor
      robot_idd: rbt_outdoor
    - name: toys
      robot_id: rbt_toys
      cron: "61 25 * * *"
"""


def write_dg_project(root: Path) -> Path:
    """The smallest project `dg` accepts, by hand: `create-dagster` needs uv and the network.

    Flat layout, so `dg launch`'s code server imports the package from the project folder; it
    uses the installed extralt_dagster of this venv.
    """
    root.mkdir()
    (root / "pyproject.toml").write_text(
        textwrap.dedent(
            """\
            [project]
            name = "shop_data"
            version = "0.1.0"
            requires-python = ">=3.11"

            [tool.dg]
            directory_type = "project"

            [tool.dg.project]
            root_module = "shop_data"
            """
        )
    )
    package = root / "shop_data"
    (package / "defs").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "defs" / "__init__.py").write_text("")
    (package / "definitions.py").write_text(
        textwrap.dedent(
            """\
            from pathlib import Path

            import dagster as dg


            @dg.definitions
            def defs():
                return dg.load_from_defs_folder(path_within_project=Path(__file__).parent)
            """
        )
    )
    return root


def dg_cli(project: Path, *args: str, env: dict[str, str]) -> tuple[int, str]:
    proc = subprocess.run(
        [DG, *args], cwd=project, env=env, capture_output=True, text=True, timeout=180
    )
    return proc.returncode, proc.stdout + proc.stderr


def test_a_scaffolded_project_checks_launches_and_names_each_mistake(emulator, tmp_path):
    project = write_dg_project(tmp_path / "shop_data")
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    venv_bin = str(Path(sys.executable).parent)
    env = {k: v for k, v in os.environ.items() if not k.startswith("EXTRALT_")}
    env.update(
        DAGSTER_HOME=str(home),
        VIRTUAL_ENV=str(Path(sys.executable).parents[1]),
        PATH=f"{venv_bin}{os.pathsep}{env.get('PATH', '')}",
    )

    code, out = dg_cli(
        project, "scaffold", "defs", "extralt_dagster.ExtraltComponent", "shoes_src", env=env
    )
    assert code == 0, out
    defs_yaml = project / "shop_data" / "defs" / "shoes_src" / "defs.yaml"
    scaffolded = defs_yaml.read_text()
    assert yaml.safe_load(scaffolded)["type"] == "extralt_dagster.ExtraltComponent"

    code, out = dg_cli(project, "check", "defs", env=env)
    assert code == 0, out
    assert "All component YAML validated successfully." in out
    assert "All definitions loaded successfully." in out
    assert f"{defs_yaml}: no Extralt API key (EXTRALT_API_KEY or api_key)" in out
    assert f"local Extralt emulator at {EMULATOR_URL}" in out

    defs_yaml.write_text(MISTAKES)
    code, out = dg_cli(project, "check", "defs", env=env)
    assert code != 0, out
    assert "is not valid under any of the given schemas" not in out
    expected = [
        f"{defs_yaml}: 5 problem(s) in the ExtraltComponent attributes:",
        "  - line 7: source 'shoes' (sources[0]), field budgte: unknown field. "
        "Did you mean 'budget'?",
        "  - line 10: source 'books' (sources[1]), field budget: Input should be a valid "
        "integer, got '100'.",
        "  - line 11: source 'outdoor' (sources[2]), field robot_id: required but missing. Add it.",
        "  - line 12: source 'outdoor' (sources[2]), field robot_idd: unknown field. "
        "Did you mean 'robot_id'?",
        "  - line 15: source 'toys' (sources[3]), field cron: cron '61 25 * * *' is not a "
        "valid cron expression: minute 61 is out of range (0-59); hour 25 is out of range "
        "(0-23).",
        "Fix these in the file and reload. No Extralt API call was made.",
    ]
    for line in expected:
        assert line in out, f"{line!r} not in:\n{out}"

    # `dg launch` with no key at all: the scaffolded source runs against the local emulator.
    # In one process (the run's steps would each start a Python), to keep the test short.
    defs_yaml.write_text(scaffolded)
    in_process = json.dumps({"execution": {"config": {"in_process": {}}}})
    launch_env = {**env, "EXTRALT_BASE_URL": emulator.url}
    code, out = dg_cli(
        project,
        "launch",
        "--job",
        "extralt_shoes_job",
        "--config-json",
        in_process,
        env=launch_env,
    )
    assert code == 0, out[-4000:]
    assert emulator.count_requests(*CREATE) == 1
    [run] = emulator.runs.values()
    assert (run.budget, run.status) == (100, "completed")
    with duckdb.connect(str(project / DEFAULT_DUCKDB_PATH), read_only=True) as con:
        [(rows,)] = con.execute("select count(*) from extralt.shoes_captures").fetchall()
    assert rows == 100


def test_a_location_credit_limit_is_shared_and_checked_like_the_sources_file():
    cap = {"credits": 900, "per": "week"}
    shoes = {**SHOES, "budget": 300}
    books = {"name": "books", "robot_id": "rbt_books", "budget": 100}
    with load({"location_credit_limit": cap, "sources": [shoes, books]}) as (component, defs):
        assert component.location_credit_limit == CreditLimit(credits=900, per="week")
        assert len([a for a in defs.assets if a.key.path[-1] == "run"]) == 2
    message = load_error(
        {"location_credit_limit": cap, "sources": [shoes, {"name": "books", "robot_id": "b"}]}
    )
    assert "location_credit_limit (900 credits per week) needs a budget on every source" in message
    assert "source 'books' (sources[1]) has none" in message
    message = load_error({"location_credit_limit": {"credits": "900"}, "sources": [shoes]})
    assert "field location_credit_limit" in message, message
