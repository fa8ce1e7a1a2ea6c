"""`extralt-dagster init`: one Dagster instance for the UI and every CLI command.

Without `DAGSTER_HOME`, each `dagster asset materialize` runs in a throwaway instance that the
UI never shows, and the captures asset then finds no recorded Extralt run. The instance settings
the integration relies on (the `extralt` and `duckdb` pools at 1, run monitoring, which frees a
pool slot a terminated run kept) ship as `dagster.yaml` in this package.
"""

import filecmp
import os
import shutil
from pathlib import Path

INSTANCE_YAML = Path(__file__).with_name("dagster.yaml")


class InstanceHomeError(Exception):
    """DAGSTER_HOME is missing or holds a dagster.yaml of its own."""


def init_home(home: str | os.PathLike[str] | None = None) -> Path:
    """Create `home` (default: `$DAGSTER_HOME`) with the shipped `dagster.yaml` in it.

    An existing, different `dagster.yaml` is the user's own and is never overwritten.
    """
    raw = os.fspath(home) if home is not None else os.environ.get("DAGSTER_HOME", "")
    if not raw.strip():
        raise InstanceHomeError(
            "DAGSTER_HOME is not set. Run `export DAGSTER_HOME=$PWD/.dagster_home` first (in "
            "every shell you use with Dagster), or pass the folder: `extralt-dagster init DIR`."
        )
    folder = Path(raw).expanduser().resolve()
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / "dagster.yaml"
    if target.exists() and not filecmp.cmp(target, INSTANCE_YAML, shallow=False):
        raise InstanceHomeError(
            f"{target} exists and differs from the shipped settings; left as it is. Compare it "
            f"with {INSTANCE_YAML}: keep its `concurrency` pools and `run_monitoring`."
        )
    shutil.copyfile(INSTANCE_YAML, target)
    return folder
