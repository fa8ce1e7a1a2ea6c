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

The schema is `ExtraltSources`, the sources file's, so checks and docs are shared. The API key:
leave `api_key` unset and each run reads EXTRALT_API_KEY (a `dg.EnvVar`, which the UI shows by
name only); `api_key: "{{ env.OTHER_VAR }}"` works too, but makes the key plain config.

No `from __future__ import annotations` here: Dagster derives the YAML schema from the fields.
"""

import dagster as dg
from pydantic import Field

from .sources import API_KEY_ENV, ExtraltSources, build_sources_definitions


class ExtraltScaffolder(dg.Scaffolder):
    """`dg scaffold defs extralt_dagster.ExtraltComponent <path>`: a defs.yaml that loads as is."""

    def scaffold(self, request: dg.ScaffoldRequest) -> None:
        example = {"name": "shoes", "robot_id": "rbt_shoes", "budget": 100, "cron": "0 3 * * *"}
        dg.scaffold_component(request, {"sources": [example]})


@dg.scaffold_with(ExtraltScaffolder)
class ExtraltComponent(dg.Component, dg.Resolvable, ExtraltSources):
    """Extralt sources: per source, a run asset, a captures asset (DuckDB), a job and an
    optional schedule; plus an `extralt_job` for all sources and the two resources."""

    api_key: str | None = Field(
        default=None,
        repr=False,
        description="Extralt API key, e.g. '{{ env.MY_EXTRALT_KEY }}'; never write it literally. "
        "A set value is plain resource config, which the Dagster UI displays: prefer leaving it "
        "unset, so the run reads EXTRALT_API_KEY itself (dg.EnvVar).",
    )
    base_url: str | None = Field(
        default=None,
        description="API base URL. Unset: EXTRALT_BASE_URL, else https://api.extralt.com.",
    )
    duckdb_path: str | None = Field(
        default=None,
        description="DuckDB file to load captures into. Unset: EXTRALT_DUCKDB_PATH, "
        "else data/extralt.duckdb.",
    )

    def build_defs(self, context: dg.ComponentLoadContext) -> dg.Definitions:
        """The same Definitions `load_extralt_definitions` builds from a sources file."""
        return build_sources_definitions(
            self,
            where=str(context.path),
            duckdb_path=self.duckdb_path or None,
            # Unset: dg.EnvVar, read by the run worker, so the key never sits in the config.
            api_key=self.api_key or dg.EnvVar(API_KEY_ENV),
            base_url=self.base_url or None,
        )


__all__ = ["ExtraltComponent"]
