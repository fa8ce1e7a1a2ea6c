"""The Dagster glue of one source: its `run` and `captures` assets."""

from .captures import ExtraltCapturesConfig, build_captures_asset
from .run import ExtraltRunConfig, build_extralt_assets

__all__ = [
    "ExtraltCapturesConfig",
    "ExtraltRunConfig",
    "build_captures_asset",
    "build_extralt_assets",
]
