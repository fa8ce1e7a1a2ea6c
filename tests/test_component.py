"""`ExtraltComponent` in a `defs.yaml`, loaded with Dagster's component testing sandbox."""

import importlib
from contextlib import contextmanager
from importlib.metadata import entry_points
from pathlib import Path

import dagster as dg
import duckdb
import pytest
import yaml
from dagster.components.testing import create_defs_folder_sandbox

from extralt_dagster.assets import captures_asset_key
from extralt_dagster.component import ExtraltComponent
from extralt_dagster.sources import load_extralt_definitions

VALID = Path(__file__).parent / "fixtures" / "sources_valid.yaml"
TYPE = "extralt_dagster.component.ExtraltComponent"
CREATE = ("POST", "/v0/extract/runs")


@pytest.fixture(autouse=True)
def _no_stray_files(tmp_path, monkeypatch):
    """Loading creates the DuckDB file's folder; keep that out of the working tree."""
    monkeypatch.chdir(tmp_path)


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


def load_error(attributes) -> str:
    """The whole chain of messages a bad defs.yaml produces."""
    with pytest.raises(Exception) as info, load(attributes):
        pass
    messages, exc = [], info.value
    while exc is not None:
        messages.append(str(exc))
        exc = exc.__cause__ or exc.__context__
    return "\n".join(messages)


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


def test_unset_settings_come_from_the_environment_at_run_time(
    emulator, instance, tmp_path, monkeypatch
):
    monkeypatch.setenv("EXTRALT_BASE_URL", emulator.url)
    monkeypatch.setenv("EXTRALT_DUCKDB_PATH", str(tmp_path / "w.duckdb"))
    with load({"sources": [{"name": "books", "robot_id": "rbt_books", "budget": 5}]}) as (_, defs):
        assert isinstance(defs.resources["extralt"].api_key, dg.EnvVar)  # never the secret
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


@pytest.mark.parametrize(
    ("source", "fragments"),
    [
        ({"name": "shoes", "robot_id": "rbt_shoes", "budget": -5}, ["budget", "positive"]),
        ({"name": "shoes", "robot_id": "rbt_shoes", "bugdet": 5}, ["bugdet", "Extra inputs"]),
        ({"name": "shoes", "robot_id": "rbt_shoes", "cron": "daily"}, ["cron", "5-field"]),
        ({"name": "shoes"}, ["robot_id", "required"]),
    ],
)
def test_bad_attributes_name_the_field_and_the_file(source, fragments):
    message = load_error({"sources": [source]})
    assert "defs.yaml" in message
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in:\n{message}"


def test_duplicate_source_names_are_rejected():
    message = load_error(
        {
            "sources": [
                {"name": "shoes", "robot_id": "rbt_shoes"},
                {"name": "shoes", "robot_id": "rbt_outdoor"},
            ]
        }
    )
    assert "sources[1] reuses the name 'shoes' of sources[0]" in message


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
