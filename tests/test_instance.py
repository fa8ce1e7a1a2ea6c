"""`extralt-dagster init`: the instance settings a user's DAGSTER_HOME gets."""

from pathlib import Path

import pytest

from extralt_dagster.cli import main
from extralt_dagster.instance import INSTANCE_YAML

PROJECT = Path(__file__).resolve().parents[1]


def test_the_shipped_instance_settings_are_the_projects():
    assert INSTANCE_YAML.read_bytes() == (PROJECT / "dagster.yaml").read_bytes()


def test_init_writes_dagster_yaml_into_dagster_home(tmp_path, monkeypatch, capsys):
    home = tmp_path / "nested" / ".dagster_home"
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    assert main(["init"]) == 0
    assert (home / "dagster.yaml").read_bytes() == INSTANCE_YAML.read_bytes()
    assert str(home) in capsys.readouterr().out
    assert main(["init"]) == 0  # the same file again: nothing to refuse


def test_init_never_overwrites_a_users_own_settings(tmp_path, capsys):
    own = tmp_path / "dagster.yaml"
    own.write_text("telemetry:\n  enabled: true\n", encoding="utf-8")
    assert main(["init", str(tmp_path)]) == 2
    assert own.read_text(encoding="utf-8") == "telemetry:\n  enabled: true\n"
    err = capsys.readouterr().err
    assert f"{own} exists and differs from the shipped settings" in err
    assert "run_monitoring" in err


def test_init_without_dagster_home_says_what_to_export(monkeypatch, capsys):
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    assert main(["init"]) == 2
    assert "export DAGSTER_HOME=$PWD/.dagster_home" in capsys.readouterr().err


@pytest.mark.parametrize("value", ["", "   "])
def test_init_with_a_blank_dagster_home_is_refused(monkeypatch, capsys, value):
    monkeypatch.setenv("DAGSTER_HOME", value)
    assert main(["init"]) == 2
    assert "DAGSTER_HOME is not set" in capsys.readouterr().err
