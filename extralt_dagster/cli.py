"""The `extralt-dagster` command: the emulator, the demo, the dev UI and a warehouse summary."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .warehouse import DEFAULT_SCHEMA


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
    dev.add_argument("--port", type=int, default=8765, help="emulator port")
    init = sub.add_parser(
        "init", help="create DAGSTER_HOME with the dagster.yaml this integration relies on"
    )
    init.add_argument("home", nargs="?", help="the folder (default: $DAGSTER_HOME)")
    summary = sub.add_parser("summary", help="summarize an Extralt DuckDB warehouse")
    summary.add_argument("database", help="path of the DuckDB file")
    summary.add_argument("--schema", default=DEFAULT_SCHEMA)
    args = parser.parse_args(argv)

    if args.command == "demo":
        from .demo import run_demo

        return run_demo(args.project.resolve(), speed=args.speed)
    if args.command == "dev":
        from .demo import run_dev

        return run_dev(args.project.resolve(), port=args.port, speed=args.speed)
    if args.command == "init":
        from .instance import InstanceHomeError, init_home

        try:
            home = init_home(args.home)
        except InstanceHomeError as exc:
            print(f"extralt-dagster init: {exc}", file=sys.stderr)
            return 2
        print(f"Dagster instance ready in {home} (dagster.yaml: pools and run monitoring).")
        return 0
    if args.command == "summary":
        from .summary import print_summary

        return print_summary(args.database, schema=args.schema)
    parser.error(f"unknown command {args.command!r}")
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
