"""Every name the integration gives Dagster: asset keys, pools, run tags, metadata keys.

One module, so the assets, the schedules, the sensor-to-come and the soak spell them alike.
"""

import dagster as dg

KEY_PREFIX = "extralt"
METADATA_PREFIX = "extralt/"
DEFAULT_SCHEMA = "extralt"
RUN_POOL = "extralt"
WAREHOUSE_POOL = "duckdb"


def run_asset_key(name: str) -> dg.AssetKey:
    return dg.AssetKey([KEY_PREFIX, name, "run"])


def captures_asset_key(name: str) -> dg.AssetKey:
    return dg.AssetKey([KEY_PREFIX, name, "captures"])


def run_id_tag(name: str) -> str:
    """Run tag holding the Extralt run this source follows; survives re-execution."""
    return f"extralt/{name}.run_id"


def run_ids_tag(name: str) -> str:
    """Run tag listing every Extralt run this Dagster run has followed for the source, comma
    separated: a restart replaces `run_id_tag`, and the old run must stay known."""
    return f"extralt/{name}.run_ids"


def create_sent_tag(name: str) -> str:
    """Run tag set just before a create, so a retry can find a run whose create timed out."""
    return f"extralt/{name}.create_sent_at"
