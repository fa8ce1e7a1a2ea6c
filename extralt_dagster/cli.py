"""The `extralt-dagster` command: the emulator, the demo, the dev UI, and a warehouse's summary
or one read-only query of it (a DuckDB file, or a DuckLake: `--catalog` and `--data-path`)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from .warehouse import DEFAULT_SCHEMA, Lake, WarehouseError

#: The PostgreSQL catalog's password for `--catalog postgres:...` (never an argument: argv is
#: visible to every process on the machine).
PASSWORD_ENV = "EXTRALT_DUCKLAKE_PASSWORD"


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "emulator":
        from .emulator.__main__ import main as emulator_main

        return emulator_main(argv[1:])

    parser = argparse.ArgumentParser(
        prog="extralt-dagster", description="Extralt for Dagster: tools around the integration."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("emulator", help="serve the local Extralt emulator (see `emulator --help`)")
    demo = sub.add_parser(
        "demo", help="materialize every demo source against the emulator, then summarize"
    )
    dev = sub.add_parser("dev", help="the emulator plus `dagster dev` with the UI")
    for p in (demo, dev):
        p.add_argument("--project", type=Path, default=Path.cwd(), help="project directory")
        p.add_argument("--speed", type=float, default=10.0, help="emulator clock speed")
        p.add_argument(
            "--ducklake",
            action="store_true",
            help="load into a local DuckLake (data/lake/: SQLite catalog, Parquet files) "
            "instead of a DuckDB file",
        )
    dev.add_argument("--port", type=int, default=8765, help="emulator port")
    init = sub.add_parser(
        "init", help="create DAGSTER_HOME with the dagster.yaml this integration relies on"
    )
    init.add_argument("home", nargs="?", help="the folder (default: $DAGSTER_HOME)")
    summary = sub.add_parser("summary", help="summarize an Extralt warehouse (read-only)")
    query = sub.add_parser("query", help="run one SQL query on a warehouse (read-only)")
    for p in (summary, query):
        p.add_argument("database", nargs="?", help="path of the DuckDB file (or --catalog)")
    query.add_argument("sql", help="the query; tables are <schema>.<table> (a lake is in USE)")
    for p in (summary, query):
        p.add_argument(
            "--catalog",
            help="a DuckLake instead of a file: 'sqlite:<path>' or 'postgres:<libpq string>' "
            f"(the password from ${PASSWORD_ENV})",
        )
        p.add_argument("--data-path", help="the DuckLake's data path (with --catalog)")
    summary.add_argument("--schema", default=DEFAULT_SCHEMA)
    summary.add_argument(
        "--sources",
        type=Path,
        help="the sources YAML whose credit_limit periods and caps to show beside each "
        "source's credits (default: $EXTRALT_SOURCES if set; else calendar months, no caps)",
    )
    args = parser.parse_args(argv)

    if args.command == "demo":
        from .demo import run_demo

        return run_demo(args.project.resolve(), speed=args.speed, ducklake=args.ducklake)
    if args.command == "dev":
        from .demo import run_dev

        return run_dev(
            args.project.resolve(), port=args.port, speed=args.speed, ducklake=args.ducklake
        )
    if args.command == "init":
        from .instance import InstanceHomeError, init_home

        try:
            home = init_home(args.home)
        except InstanceHomeError as exc:
            print(f"extralt-dagster init: {exc}", file=sys.stderr)
            return 2
        print(f"Dagster instance ready in {home} (dagster.yaml: pools and run monitoring).")
        return 0
    if args.command in ("summary", "query"):
        try:
            where = _warehouse(parser, args)
        except WarehouseError as exc:
            print(f"extralt-dagster {args.command}: {exc}", file=sys.stderr)
            return 2
        if args.command == "query":
            from .summary import print_query

            return print_query(where, args.sql)
        from .sources import SourcesFileError, read_sources
        from .summary import print_summary

        path = args.sources or os.environ.get("EXTRALT_SOURCES")
        try:
            sources = read_sources(path) if path else None
        except SourcesFileError as exc:
            print(f"extralt-dagster summary: {exc}", file=sys.stderr)
            return 2
        return print_summary(where, schema=args.schema, sources=sources)
    parser.error(f"unknown command {args.command!r}")
    return 2


def _warehouse(parser: argparse.ArgumentParser, args: argparse.Namespace) -> str | Lake:
    """The DuckDB file, or the lake `--catalog` and `--data-path` name: exactly one."""
    if args.catalog is None:
        if args.database is None:
            parser.error("name the warehouse: a DuckDB file, or --catalog and --data-path")
        if args.data_path is not None:
            parser.error("--data-path goes with --catalog (a DuckLake), not with a DuckDB file")
        return args.database
    if args.database is not None:
        parser.error(f"either a DuckDB file ({args.database!r}) or --catalog, not both")
    if args.data_path is None:
        parser.error("--catalog needs --data-path: the lake's data folder or URL")
    password = os.environ.get(PASSWORD_ENV) if args.catalog.startswith("postgres:") else None
    return Lake(catalog=args.catalog, data_path=args.data_path, password=password or None)


if __name__ == "__main__":
    raise SystemExit(main())
