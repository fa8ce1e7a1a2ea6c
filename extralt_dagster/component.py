"""`ExtraltComponent`: the YAML sources list as a Dagster component in a `defs.yaml`.

    type: extralt_dagster.ExtraltComponent
    attributes:
      base_url: "{{ env.EXTRALT_BASE_URL }}"
      duckdb_path: "{{ env.EXTRALT_DUCKDB_PATH }}"
      defaults: {schema: extralt}
      sources:
        - name: shoes
          robot_id: rbt_shoes
          cron: "0 3 * * *"

`defaults` and `sources` are checked by the sources file's own validation (`validate_sources`),
so a mistake reads the same in both: the defs.yaml path, the line, the source and the field, all
problems at once. Their YAML schema is deliberately loose (any value passes `dg check yaml`):
Dagster's JSON-schema errors for a list of models say only "is not valid under any of the given
schemas".

The connection is decided at load time, like the default code location's: a key (the `api_key`
attribute or EXTRALT_API_KEY) talks to `base_url` (else EXTRALT_BASE_URL, else the public API),
and an EXTRALT_API_KEY stays a `dg.EnvVar`, which the UI shows by name only. No key and no URL:
the local emulator with its demo key, and a warning. A remote URL without a key fails the load.

No `from __future__ import annotations` here: Dagster derives the YAML schema from the fields.
"""

import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import dagster as dg
from dagster.components.resolved.errors import ResolutionException
from pydantic import BaseModel, Field, WithJsonSchema

from .api.errors import ExtraltAuthError
from .sources import (
    API_KEY_ENV,
    SourcesFileError,
    build_sources_definitions,
    resolve_connection,
    validate_sources,
)
from .spec import CreditLimit, ExtraltSources, MaintenanceSpec, SourceDefaults, SourceSpec

logger = logging.getLogger("extralt_dagster.component")
_DEFS_FILES = ("defs.yaml", "defs.yml", "component.yaml")
_WARNED: set[tuple[str, str]] = set()
#: The attributes last checked, and the result: `defaults` and `sources` resolve from one check.
_LAST_CHECKED: list[tuple[BaseModel, ExtraltSources]] = []


class ExtraltComponentError(SourcesFileError, ResolutionException):
    """Bad `defaults` or `sources` in a defs.yaml.

    A `ResolutionException`, so Dagster shows the message as it is instead of wrapping it in the
    resolver's traceback.
    """


def _checked_as_a_whole(
    resolve: Callable[[dg.ResolutionContext, BaseModel], Any],
    model: type[BaseModel],
    *,
    many: bool,
) -> dg.Resolver:
    """Resolve a field from all the attributes (`validate_sources` checks them together),
    with a YAML schema that documents every field for editors but rejects nothing."""
    fields = {
        (info.alias or name): {"description": info.description or ""}
        for name, info in model.model_fields.items()
    }
    schema: dict[str, Any] = {"description": model.__doc__ or "", "properties": fields}
    if many:
        schema = {"description": "A list of sources.", "items": schema}
    return dg.Resolver.from_model(resolve, model_field_type=Annotated[Any, WithJsonSchema(schema)])


def _validated(context: dg.ResolutionContext, attributes: BaseModel) -> ExtraltSources:
    """`defaults` and `sources`, templates rendered, checked as the sources file is: once per
    component, though both fields' resolvers ask (the last result is kept for the second)."""
    if _LAST_CHECKED and _LAST_CHECKED[0][0] is attributes:
        return _LAST_CHECKED[0][1]
    checked = _check(context, attributes)
    _LAST_CHECKED[:] = [(attributes, checked)]
    return checked


def _check(context: dg.ResolutionContext, attributes: BaseModel) -> ExtraltSources:
    data = {
        key: _render_templates(context.at_path(key), getattr(attributes, key))
        for key in ("defaults", "sources", "maintenance", "location_credit_limit")
        if key in attributes.model_fields_set
    }
    tree = context.source_position_tree
    prefix = list(context.path)

    def line_of(loc: tuple[Any, ...]) -> int | None:
        if tree is None:
            return None
        position, _ = tree.lookup_closest_and_path([*prefix, *loc], trace=None)
        return position.start.line

    where = tree.position.filename if tree is not None else "defs.yaml"
    try:
        return validate_sources(
            data, where, line_of=line_of, what="the ExtraltComponent attributes"
        )
    except SourcesFileError as exc:
        raise ExtraltComponentError(str(exc)) from None


def _render_templates(context: dg.ResolutionContext, value: Any) -> Any:
    """Render `{{ ... }}` strings only: Dagster's own rendering would also turn a quoted
    `budget: "100"` into 100, a mistake the sources file reports (its fields are strict)."""
    if isinstance(value, dict):
        return {k: _render_templates(context.at_path(k), v) for k, v in value.items()}
    if isinstance(value, list):
        return [_render_templates(context.at_path(i), v) for i, v in enumerate(value)]
    if isinstance(value, str) and ("{{" in value or "{%" in value):
        return context.resolve_value(value)
    return value


def _resolve_defaults(context: dg.ResolutionContext, attributes: BaseModel) -> SourceDefaults:
    return _validated(context, attributes).defaults or SourceDefaults()


def _resolve_maintenance(
    context: dg.ResolutionContext, attributes: BaseModel
) -> MaintenanceSpec | None:
    return _validated(context, attributes).maintenance


def _resolve_location_credit_limit(
    context: dg.ResolutionContext, attributes: BaseModel
) -> CreditLimit | None:
    return _validated(context, attributes).location_credit_limit


def _resolve_sources(context: dg.ResolutionContext, attributes: BaseModel) -> list[SourceSpec]:
    return _validated(context, attributes).sources


class ExtraltScaffolder(dg.Scaffolder):
    """`dg scaffold defs extralt_dagster.ExtraltComponent <path>`: a defs.yaml that loads as is."""

    def scaffold(self, request: dg.ScaffoldRequest) -> None:
        example = {"name": "shoes", "robot_id": "rbt_shoes", "budget": 100, "cron": "0 3 * * *"}
        dg.scaffold_component(request, {"sources": [example]})


@dg.scaffold_with(ExtraltScaffolder)
class ExtraltComponent(dg.Component, dg.Resolvable, ExtraltSources):
    """Extralt sources: per source, a run asset, a captures asset (DuckDB), a job and an
    optional schedule; plus an `extralt_job` for all sources and the two resources, and on a
    DuckLake the `extralt_lake_maintenance` job and its schedule (`maintenance`)."""

    defaults: Annotated[
        SourceDefaults | None, _checked_as_a_whole(_resolve_defaults, SourceDefaults, many=False)
    ] = Field(default=None, description="Settings applied to every source.")
    sources: Annotated[
        list[SourceSpec], _checked_as_a_whole(_resolve_sources, SourceSpec, many=True)
    ] = Field(min_length=1, description="The sources, one per robot run.")
    maintenance: Annotated[
        MaintenanceSpec | None,
        _checked_as_a_whole(_resolve_maintenance, MaintenanceSpec, many=False),
    ] = Field(
        default=None,
        description="Lake maintenance's schedule and ages (a DuckLake warehouse only).",
    )
    location_credit_limit: Annotated[
        CreditLimit | None,
        _checked_as_a_whole(_resolve_location_credit_limit, CreditLimit, many=False),
    ] = Field(
        default=None,
        description="The most credits all these sources together may spend in a calendar "
        "period, e.g. {credits: 60000, per: month}; every source needs a budget.",
    )
    api_key: str | None = Field(
        default=None,
        repr=False,
        description="Extralt API key, e.g. '{{ env.MY_EXTRALT_KEY }}'; never write it literally. "
        "A set value is plain resource config, which the Dagster UI displays: prefer leaving it "
        "unset, so the run reads EXTRALT_API_KEY itself (dg.EnvVar).",
    )
    base_url: str | None = Field(
        default=None,
        description="API base URL. Unset: EXTRALT_BASE_URL, else https://api.extralt.com; "
        "with no key at all, the local emulator.",
    )
    duckdb_path: str | None = Field(
        default=None,
        description="DuckDB file to load captures into. Unset: EXTRALT_DUCKDB_PATH, "
        "else data/warehouse.duckdb.",
    )

    def build_defs(self, context: dg.ComponentLoadContext) -> dg.Definitions:
        """The same Definitions `load_extralt_definitions` builds from a sources file."""
        where = _defs_file(context.path)
        try:
            conn = resolve_connection(
                os.environ, api_key=self.api_key or None, base_url=self.base_url or None
            )
        except ExtraltAuthError as exc:
            raise ExtraltAuthError(f"{where}: {exc}") from None
        if conn.emulated and (where, conn.base_url) not in _WARNED:
            _WARNED.add((where, conn.base_url))  # once per process: a load may build twice
            logger.warning(
                "%s: no Extralt API key (EXTRALT_API_KEY or api_key): these sources talk to the "
                "local Extralt emulator at %s with its demo key (start it with "
                "`extralt-dagster emulator`). Set EXTRALT_API_KEY to use your Extralt account.",
                where,
                conn.base_url,
            )
        if self.api_key or conn.emulated:
            api_key: str | dg.EnvVar = conn.api_key
        else:
            # From the environment: a dg.EnvVar, read by the run worker, never in the config.
            api_key = dg.EnvVar(API_KEY_ENV)
        return build_sources_definitions(
            self,
            where=where,
            duckdb_path=self.duckdb_path or None,
            api_key=api_key,
            base_url=conn.base_url,
        )


def _defs_file(folder: Path) -> str:
    return next(
        (str(folder / name) for name in _DEFS_FILES if (folder / name).is_file()), str(folder)
    )


__all__ = ["ExtraltComponent", "ExtraltComponentError"]
