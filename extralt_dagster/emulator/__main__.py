"""`python -m extralt_dagster.emulator` (and `extralt-dagster emulator`): serve in the foreground."""

import argparse
import re
import signal
import sys
import threading
from dataclasses import dataclass

from .datagen import DEFAULT_CATALOGUE, Catalogue
from .gate import ADMIN_PREFIX
from .runs import DEMO_ROBOTS, Robot
from .server import DEMO_API_KEY, RUNS_ORDERS, Emulator

_CATALOGUE_SPEC = re.compile(r"^(?P<sizes>\d+)x(?P<colours>\d+)x(?P<offers>\d+(?:\.\d+)?)$")
_ROBOT_SPEC = re.compile(r"^(?P<id>[^=\s/]+)=(?P<host>[A-Za-z0-9.-]+)(?::(?P<size>\d+))?$")
_SCHEDULE_SPEC = re.compile(r"^(?P<id>[^=\s/]+)=(?P<every>\d+(?:\.\d+)?)(?::(?P<budget>\d+))?$")


@dataclass(frozen=True)
class ScheduleSpec:
    """`--schedule ID=SECONDS[:BUDGET]`: a robot's recurring runs, as its dashboard sets them."""

    robot_id: str
    every_seconds: float
    budget: int | None = None


def _robots_epilog() -> str:
    lines = ["robots (pass one as robot_id):"]
    lines += [
        f"  {r.id:<14} {r.host:<18} {r.name}, {r.catalogue_size:,} products" for r in DEMO_ROBOTS
    ]
    lines += [
        "",
        "add a robot with --robot ID=HOST[:CATALOGUE_SIZE] (repeatable), e.g.",
        "  --robot rbt_tea=tea.example:500",
        f"or at run time: POST {ADMIN_PREFIX}/robots with {{'id': ..., 'host': ...}};",
        f"GET {ADMIN_PREFIX}/robots lists them. In Python: Emulator().add_robot(id, host).",
        "",
        "schedule a robot with --schedule ID=SECONDS[:BUDGET] (repeatable): the emulator",
        "creates a run of it every SECONDS of its clock by itself, as Extralt's dashboard",
        "schedules do, e.g. --schedule rbt_shoes=3600:50 (hourly, 50 captures each);",
        f"or at run time: POST {ADMIN_PREFIX}/schedules with {{'robot_id': ..., "
        "'every_seconds': ...}.",
    ]
    return "\n".join(lines)


def parse_robot(spec: str) -> Robot:
    """`ID=HOST[:CATALOGUE_SIZE]`, e.g. `rbt_tea=tea.example:500`."""
    match = _ROBOT_SPEC.fullmatch(spec.strip())
    if match is None or (match["size"] is not None and int(match["size"]) < 1):
        raise argparse.ArgumentTypeError(
            f"--robot must be ID=HOST or ID=HOST:CATALOGUE_SIZE (a positive count), "
            f"such as rbt_tea=tea.example:500; got {spec!r}"
        )
    host = match["host"]
    size = int(match["size"]) if match["size"] else 1000
    return Robot(match["id"], host, f"{host} (US)", "US", "USD", size)


def parse_schedule(spec: str) -> ScheduleSpec:
    """`ID=SECONDS[:BUDGET]`, e.g. `rbt_shoes=3600` or `rbt_shoes=3600:50`."""
    match = _SCHEDULE_SPEC.fullmatch(spec.strip())
    every = float(match["every"]) if match else 0.0
    budget = int(match["budget"]) if match and match["budget"] else None
    if match is None or every <= 0 or budget == 0:
        raise argparse.ArgumentTypeError(
            f"--schedule must be ROBOT_ID=SECONDS or ROBOT_ID=SECONDS:BUDGET (both positive), "
            f"such as rbt_shoes=3600 or rbt_shoes=3600:50; got {spec!r}"
        )
    return ScheduleSpec(match["id"], every, budget)


def _positive_int(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        number = 0
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 1, got {value!r}")
    return number


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The emulator's options, for this entry point and any CLI that embeds it."""
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8765, help="port (default 8765; 0 = any free)")
    parser.add_argument("--speed", type=float, default=1.0, help="emulated seconds per real second")
    parser.add_argument(
        "--seed",
        type=int,
        default=None,
        help="repeat run ids from one start to the next (for benchmarks and replays). Without "
        "it, run ids are random: a restarted emulator never reuses an id",
    )
    parser.add_argument("--api-key", default=DEMO_API_KEY, help=f"key to accept ({DEMO_API_KEY})")
    parser.add_argument(
        "--concurrency-limit",
        type=int,
        default=1,
        help="concurrent runs before new ones wait in pending (default 1, the Start plan; "
        "0 = no limit)",
    )
    parser.add_argument("--credits", type=int, default=10_000_000, help="starting credit balance")
    parser.add_argument(
        "--capture-rate", type=float, default=20.0, help="captures per emulated second per run"
    )
    parser.add_argument(
        "--no-rate-limit", action="store_true", help="turn off the 120/min, burst 30 rate limit"
    )
    parser.add_argument(
        "--robot",
        type=parse_robot,
        action="append",
        default=[],
        metavar="ID=HOST[:SIZE]",
        help="add a robot besides the demo ones (repeatable), e.g. rbt_tea=tea.example:500",
    )
    parser.add_argument(
        "--catalogue",
        type=parse_catalogue,
        default=DEFAULT_CATALOGUE,
        metavar="SIZESxCOLOURSxOFFERS",
        help="the products' shape: up to SIZES by COLOURS variants, OFFERS per variant on "
        "average (default 3x2x1.25: 3.0 variants, 3.75 offers a capture; fashion: 9x9x1.2)",
    )
    parser.add_argument(
        "--schedule",
        type=parse_schedule,
        action="append",
        default=[],
        metavar="ID=SECONDS[:BUDGET]",
        help="create a run of robot ID every SECONDS of the emulator's clock, as an Extralt "
        "dashboard schedule does (repeatable), e.g. rbt_shoes=3600 or rbt_shoes=3600:50",
    )
    parser.add_argument(
        "--runs-page-size",
        type=_positive_int,
        default=100,
        metavar="N",
        help="the most runs one page of GET /v0/extract/runs holds before nextCursor (default 100)",
    )
    parser.add_argument(
        "--runs-order",
        choices=RUNS_ORDERS,
        default="newest",
        help="the order GET /v0/extract/runs lists runs in (default newest first)",
    )
    return parser


def parse_catalogue(spec: str) -> Catalogue:
    """`SIZESxCOLOURSxOFFERS`, e.g. `9x9x1.2`: up to 9 sizes by 9 colours, 1.2 offers a variant."""
    match = _CATALOGUE_SPEC.fullmatch(spec.strip())
    try:
        if match is None:
            raise ValueError("not SIZESxCOLOURSxOFFERS")
        return Catalogue(int(match["sizes"]), int(match["colours"]), float(match["offers"]))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(
            f"--catalogue must be SIZESxCOLOURSxOFFERS_PER_VARIANT, such as 9x9x1.2 (sizes and "
            f"colours at least 1, offers 1 to 8); got {spec!r}: {exc}"
        ) from None


def build_emulator(args: argparse.Namespace) -> Emulator:
    emu = Emulator(
        args.api_key,
        host=args.host,
        port=args.port,
        speed=args.speed,
        seed=args.seed,
        concurrency_limit=args.concurrency_limit or None,
        credits=args.credits,
        capture_rate=args.capture_rate,
        rate_limit=None if args.no_rate_limit else (120, 30),
        catalogue=args.catalogue,
        runs_page_size=args.runs_page_size,
        runs_order=args.runs_order,
    )
    for robot in args.robot:
        emu.state.add_robot(robot)
    for sched in args.schedule:
        if sched.robot_id not in emu.robots:
            raise ValueError(
                f"--schedule {sched.robot_id}: no such robot (robots: {', '.join(emu.robots)}; "
                "add one with --robot)"
            )
        emu.set_schedule(sched.robot_id, every_seconds=sched.every_seconds, budget=sched.budget)
    return emu


def main(argv: list[str] | None = None) -> int:
    parser = add_arguments(
        argparse.ArgumentParser(
            prog="extralt-dagster emulator",
            description="Serve the local Extralt API emulator until Ctrl-C.",
            epilog=_robots_epilog(),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
    )
    args = parser.parse_args(argv)
    stop = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        try:
            emu = build_emulator(args).start()
        except ValueError as exc:
            parser.error(str(exc))
        except OSError as exc:
            print(f"error: cannot serve on {args.host}:{args.port}: {exc}", file=sys.stderr)
            return 1
        print(f"Extralt emulator listening on {emu.url}", flush=True)
        print(f"  EXTRALT_BASE_URL={emu.url}", flush=True)
        print(f"  EXTRALT_API_KEY={emu.api_key}", flush=True)
        print(f"  robots: {', '.join(sorted(emu.robots))} (GET {ADMIN_PREFIX}/robots)", flush=True)
        print(f"  run pages: {emu.url}/runs/<run id>", flush=True)
        for robot_id, sched in emu.schedules.items():
            budget = "" if sched["budget"] is None else f", budget {sched['budget']:,}"
            print(f"  schedule: {robot_id} every {sched['every_seconds']:g} s{budget}", flush=True)
        print("Press Ctrl-C to stop.", flush=True)
        emu.serve_forever(stop)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    print("Extralt emulator stopped.", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
