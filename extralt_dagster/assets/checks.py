"""The captures asset's checks: their specs (what the UI lists) and their results from one load."""

import dagster as dg

from .. import warehouse
from .metadata import count_or_unknown, joined, widened_text

CHECK_HAS_CAPTURES = "has_captures"
CHECK_UNIQUE_IDS = "unique_capture_ids"
CHECK_PRICES = "price_sanity"
CHECK_DRIFT = "schema_drift"
CHECK_RUN_COUNT = "matches_run_count"
CHECK_EXTRACTED_AT = "valid_extracted_at"


def check_specs(key: dg.AssetKey, null_price_warn_ratio: float) -> list[dg.AssetCheckSpec]:
    return [
        dg.AssetCheckSpec(
            CHECK_HAS_CAPTURES,
            asset=key,
            blocking=True,
            description="The Extralt run produced at least one capture.",
        ),
        dg.AssetCheckSpec(
            CHECK_UNIQUE_IDS, asset=key, description="No capture id repeats within the run."
        ),
        dg.AssetCheckSpec(
            CHECK_PRICES,
            asset=key,
            description=f"At most {null_price_warn_ratio:.0%} of captures lack min_price or have "
            "min_price > max_price.",
        ),
        dg.AssetCheckSpec(
            CHECK_DRIFT,
            asset=key,
            description="The export's columns and nested fields match the previous load's.",
        ),
        dg.AssetCheckSpec(
            CHECK_RUN_COUNT,
            asset=key,
            description="The export holds every capture the Extralt run says it extracted "
            "(distinct capture ids against the run's `extracted`).",
        ),
        dg.AssetCheckSpec(
            CHECK_EXTRACTED_AT,
            asset=key,
            description="Every capture's extracted_at is an instant (not NaN, infinite or out "
            "of range); history keeps any other value, variants have NULL for it.",
        ),
    ]


def check_results(
    result: "warehouse.LoadResult", null_price_warn_ratio: float
) -> list[dg.AssetCheckResult]:
    return [
        dg.AssetCheckResult(
            check_name=CHECK_HAS_CAPTURES,
            passed=result.rows > 0,
            severity=dg.AssetCheckSeverity.ERROR,
            metadata={"rows": result.rows, "run_id": result.run_id},
            description=None if result.rows else f"Extralt run {result.run_id} has no captures.",
        ),
        dg.AssetCheckResult(
            check_name=CHECK_UNIQUE_IDS,
            passed=result.duplicate_ids == 0,
            severity=dg.AssetCheckSeverity.ERROR,
            metadata={"duplicate_ids": result.duplicate_ids},
        ),
        _prices_check(result, null_price_warn_ratio),
        dg.AssetCheckResult(
            check_name=CHECK_DRIFT,
            passed=not result.drifted,
            severity=dg.AssetCheckSeverity.WARN,
            metadata={
                "columns_added": joined(result.columns_added),
                "columns_missing": joined(result.columns_missing),
                "columns_widened": widened_text(result),
            },
        ),
        _run_count_check(result),
        _extracted_at_check(result),
    ]


def _prices_check(
    result: "warehouse.LoadResult", null_price_warn_ratio: float
) -> dg.AssetCheckResult:
    bad_prices = result.null_price_rows + result.inverted_price_rows
    ratio = bad_prices / result.rows if result.rows else 0.0
    return dg.AssetCheckResult(
        check_name=CHECK_PRICES,
        passed=ratio <= null_price_warn_ratio,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={
            "null_min_price": result.null_price_rows,
            "min_above_max": result.inverted_price_rows,
            "bad_ratio": round(ratio, 4),
            "threshold": null_price_warn_ratio,
        },
    )


def _extracted_at_check(result: "warehouse.LoadResult") -> dg.AssetCheckResult:
    unconverted = result.unconverted_extracted_at
    return dg.AssetCheckResult(
        check_name=CHECK_EXTRACTED_AT,
        passed=unconverted == 0,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={"unconverted": unconverted, "rows": result.rows},
        description=(
            f"{unconverted} of {result.rows} captures have an extracted_at that is no instant; "
            "their variants have NULL extracted_at."
            if unconverted
            else None
        ),
    )


def _run_count_check(result: "warehouse.LoadResult") -> dg.AssetCheckResult:
    """ERROR, not blocking: the captures that arrived are real and stay loaded, and products
    keep each missing product's previous capture; but rows are missing, which a reload (the
    captures asset alone, no credits) may recover if the API served the export short."""
    missing = result.missing_captures
    exported = result.distinct_captures
    if missing is None:
        description = (
            f"The run document of Extralt run {result.run_id} gives no `extracted` count: "
            f"{exported} captures loaded, with nothing to reconcile them against."
        )
    elif missing:
        description = (
            f"The export of Extralt run {result.run_id} holds {exported} distinct captures, "
            f"but the run extracted {result.extracted}: {missing} are missing. The rows that "
            "arrived are loaded. Materialize the captures asset alone to download the export "
            "again (no credits); if it stays short, the export is incomplete at Extralt."
        )
    elif result.extracted is not None and exported > result.extracted:
        description = (
            f"The export of Extralt run {result.run_id} holds {exported} distinct captures, "
            f"{exported - result.extracted} more than the {result.extracted} the run reports."
        )
    else:
        description = None
    return dg.AssetCheckResult(
        check_name=CHECK_RUN_COUNT,
        passed=not missing,
        severity=dg.AssetCheckSeverity.ERROR,
        description=description,
        metadata={
            "extracted": count_or_unknown(result.extracted),
            "rows_in_export": result.rows,
            "distinct_captures": exported,
            "missing": count_or_unknown(missing),
            "run_id": result.run_id,
        },
    )
