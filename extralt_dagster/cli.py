"""The `extralt-dagster` command."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(
        prog="extralt-dagster", description="Extralt for Dagster: tools around the integration."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("emulator", help="serve the local Extralt emulator", add_help=False)
    if argv and argv[0] == "emulator":
        from .emulator.__main__ import main as emulator_main

        return emulator_main(argv[1:])
    parser.parse_args(argv)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
