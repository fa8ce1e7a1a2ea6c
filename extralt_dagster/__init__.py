"""extralt-dagster: Extralt runs as Dagster assets, loaded into DuckDB (a file or a DuckLake)."""

from . import api
from .api import *  # noqa: F403 - the plain API's public names, listed once in api.__all__
from .assets.captures import ExtraltCapturesConfig
from .assets.run import ExtraltRunConfig, build_extralt_assets
from .component import ExtraltComponent
from .lake import DuckLakeResource
from .maintenance import (
    ExtraltMaintenanceConfig,
    build_extralt_maintenance_job,
    build_extralt_maintenance_schedule,
)
from .resource import ExtraltResource
from .schedules import build_extralt_job, build_extralt_schedule
from .sensors import build_extralt_sensor
from .sources import (
    CreditLimit,
    ExtraltSources,
    SourceDefaults,
    SourcesFileError,
    SourceSpec,
    load_extralt_definitions,
)

__all__ = [
    *api.__all__,
    "CreditLimit",
    "DuckLakeResource",
    "ExtraltCapturesConfig",
    "ExtraltComponent",
    "ExtraltMaintenanceConfig",
    "ExtraltResource",
    "ExtraltRunConfig",
    "ExtraltSources",
    "SourceDefaults",
    "SourceSpec",
    "SourcesFileError",
    "build_extralt_assets",
    "build_extralt_job",
    "build_extralt_maintenance_job",
    "build_extralt_maintenance_schedule",
    "build_extralt_schedule",
    "build_extralt_sensor",
    "load_extralt_definitions",
]
