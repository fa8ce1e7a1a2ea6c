"""The warehouse resource under the `duckdb` key: a DuckDB file (`dagster_duckdb.DuckDBResource`)
or a DuckLake (`DuckLakeResource`), and the one question the assets ask of either
(`warehouse_at`: what to open, with which settings, and how to name it).

No `from __future__ import annotations` here: Dagster must resolve the resource's fields.
"""

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import dagster as dg
import duckdb
from pydantic import Field

from . import warehouse

__all__ = ["DuckLakeResource", "WarehouseAt", "WarehouseResource", "warehouse_at"]


@dataclass(frozen=True)
class WarehouseAt:
    """Where a warehouse resource points: what `warehouse.connect` opens, the DuckDB settings
    of the resource, and how the warehouse is named in messages and metadata (no secret)."""

    database: "str | warehouse.Lake"
    config: Mapping[str, Any] = field(default_factory=dict)

    @property
    def is_lake(self) -> bool:
        return isinstance(self.database, warehouse.Lake)

    @property
    def name(self) -> str:
        """For messages: the file's path, or the lake's `ducklake:` URI."""
        return str(self.database)

    @property
    def uri(self) -> str:
        """`dagster/uri`: `duckdb://<absolute path>`, the `md:` path, or `ducklake:<catalog>`."""
        if isinstance(self.database, warehouse.Lake):
            return self.database.uri
        if self.database.startswith("md:"):
            return self.database
        return f"duckdb://{Path(self.database).resolve()}"


@runtime_checkable
class WarehouseResource(Protocol):
    """A resource that says where its warehouse is. `DuckLakeResource` is one; any other
    resource under the `duckdb` key is read as a `DuckDBResource` (`database`,
    `connection_config`)."""

    def warehouse_at(self) -> WarehouseAt: ...


def warehouse_at(resource: Any) -> WarehouseAt:
    """Where the `duckdb` resource points, whichever kind it is."""
    if isinstance(resource, WarehouseResource):
        return resource.warehouse_at()
    return WarehouseAt(resource.database, dict(resource.connection_config or {}))


class DuckLakeResource(dg.ConfigurableResource):
    """A DuckLake as the warehouse: put it under the `duckdb` resource key instead of a
    `DuckDBResource`, and every source loads into the lake.

    ```python
    resources={"duckdb": DuckLakeResource(
        catalog="postgres:dbname=lake host=db.internal user=etl",
        catalog_password=dg.EnvVar("EXTRALT_DUCKLAKE_PASSWORD"),
        data_path="s3://bucket/extralt/",
    )}
    ```

    With a SQLite catalog, one process writes at a time: keep the Dagster pool of the
    captures assets at 1 (readers never block it). With PostgreSQL, loads of different sources
    commit concurrently (``warehouse.target``'s docstring says why nothing they write is shared).
    """

    catalog: str = Field(
        description="The lake's catalog database: 'sqlite:<path>' (one machine) or "
        "'postgres:<libpq connection string>' without the password, e.g. "
        "'postgres:dbname=lake host=db.internal user=etl'."
    )
    data_path: str = Field(
        description="Where the lake's Parquet files go: a local folder, or an object-store URL "
        "such as 's3://bucket/prefix/' (configure DuckDB's credentials for it as a secret)."
    )
    catalog_password: str | None = Field(
        default=None,
        repr=False,
        description="The PostgreSQL catalog's password; pass dg.EnvVar('...'). Never logged.",
    )
    alias: str = Field(
        default=warehouse.DEFAULT_LAKE_ALIAS,
        description="The catalog name the lake is attached under: tables are "
        "<alias>.<schema>.<table>.",
    )
    connection_config: dict[str, Any] = Field(
        default={},
        description="DuckDB settings for the connection (memory_limit, threads, ...).",
    )

    def __repr_args__(self) -> Any:
        return [
            (k, "***" if k == "catalog_password" and v else v) for k, v in super().__repr_args__()
        ]

    def lake(self) -> "warehouse.Lake":
        """The lake, checked (a bad catalog or data path raises `warehouse.WarehouseError`)."""
        return warehouse.Lake(
            catalog=self.catalog,
            data_path=self.data_path,
            password=self.catalog_password or None,
            alias=self.alias,
        )

    def warehouse_at(self) -> WarehouseAt:
        return WarehouseAt(self.lake(), dict(self.connection_config))

    @contextmanager
    def get_connection(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A connection with the lake attached and in use, as `DuckDBResource` gives one."""
        conn = warehouse.connect(self.lake(), config=self.connection_config)
        try:
            yield conn
        finally:
            conn.close()
