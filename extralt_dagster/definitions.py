"""The default code location: sources from `EXTRALT_SOURCES` (the shipped demo by default).

Environment:
- `EXTRALT_SOURCES`: path of a sources YAML; default: the shipped `demo_sources.yaml`.
- `EXTRALT_API_KEY`: your Extralt key. Without it (and without `EXTRALT_BASE_URL`) the location
  points at the local emulator, and says so in the log; a key never goes to the emulator
  unless `EXTRALT_BASE_URL` says so.
- `EXTRALT_BASE_URL`: default https://api.extralt.com (or the emulator, see above).
- `EXTRALT_DUCKDB_PATH`: default `data/warehouse.duckdb` under the working directory (read,
  and its folder created, by `load_extralt_definitions`).
- `EXTRALT_DUCKLAKE_CATALOG` (`sqlite:<path>` or `postgres:<libpq string>`) with
  `EXTRALT_DUCKLAKE_DATA_PATH` (and `EXTRALT_DUCKLAKE_PASSWORD` for PostgreSQL): load into that
  DuckLake instead of the DuckDB file.
"""

import logging
import os
from pathlib import Path

# The rule (no key and no URL: the local emulator) lives in sources.py, shared with the Component.
from .sources import EMULATOR_URL as EMULATOR_URL
from .sources import Connection as Connection
from .sources import resolve_connection

DEMO_SOURCES = Path(__file__).with_name("demo_sources.yaml")

logger = logging.getLogger("extralt_dagster.definitions")


def build_definitions():
    from .sources import load_extralt_definitions

    conn = resolve_connection()
    sources = Path(os.environ.get("EXTRALT_SOURCES") or DEMO_SOURCES)
    if conn.emulated:
        logger.warning(
            "EXTRALT_API_KEY is not set: this code location talks to the local Extralt emulator "
            "at %s with its demo key (start it with `extralt-dagster emulator`, or `make dev`). "
            "Set EXTRALT_API_KEY to use your Extralt account.",
            conn.base_url,
        )
    # A real key stays an EnvVar (None here), so the UI shows its name, never its value.
    return load_extralt_definitions(
        sources,
        api_key=conn.api_key if conn.emulated else None,
        base_url=conn.base_url,
    )


defs = build_definitions()
