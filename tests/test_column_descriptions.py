"""`dagster/column_schema` explains every column: the API docs' capture columns, the loader's
own, and "not in the API docs" for the rest (the UI's Columns table shows these)."""

from extralt_dagster import build_extralt_assets
from extralt_dagster.naming import captures_asset_key
from extralt_dagster.warehouse import DOCUMENTED_TYPES, META_COLUMNS
from extralt_dagster.warehouse.sql import UNDOCUMENTED_COLUMN

from .support import failure_messages, materialization_metadata, resources


def test_every_column_of_the_captures_schema_has_its_description(emulator, instance, tmp_path):
    import dagster as dg

    emulator.set_faults(export_extra_columns=True)  # rating, review_count: not in the docs
    source = build_extralt_assets(
        "shoes", "rbt_shoes", budget=10, export_dir=str(tmp_path / "exports")
    )
    result = dg.materialize(source, instance=instance, resources=resources(emulator, tmp_path))
    assert result.success, failure_messages(result)
    md = materialization_metadata(result, captures_asset_key("shoes"))
    described = {c.name: c.description for c in md["dagster/column_schema"].columns}
    assert set(DOCUMENTED_TYPES) | set(META_COLUMNS) <= set(described)
    undocumented = {n for n, d in described.items() if d == UNDOCUMENTED_COLUMN}
    assert undocumented == {"rating", "review_count"}
    for name in (*DOCUMENTED_TYPES, *META_COLUMNS):
        assert described[name] and described[name] != UNDOCUMENTED_COLUMN, name
    assert described["extracted_at"].startswith("When the page was extracted: epoch seconds")
    assert described["run_id"].startswith("Added by the loader")
