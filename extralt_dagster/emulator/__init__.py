"""A local, stateful Extralt API emulator: the default backend with no account, and the real
server tests talk to over HTTP.

    with Emulator(speed=50) as emu:
        client = ExtraltClient(emu.api_key, emu.url)

It never imports the rest of the package: it fakes the service, not our client.
"""

from .clock import EmulatorClock
from .datagen import BROAD, CAPTURE_COLUMNS, EXTRA_COLUMNS, FASHION, Catalogue, write_captures
from .exports import EmulatorAbort
from .faults import Faults
from .gate import RecordedRequest
from .runs import DEMO_ROBOTS, ORIGINS, STATUSES, Robot, RunView, Schedule
from .server import DEMO_API_KEY, Emulator

__all__ = [
    "BROAD",
    "CAPTURE_COLUMNS",
    "DEMO_API_KEY",
    "DEMO_ROBOTS",
    "EXTRA_COLUMNS",
    "FASHION",
    "ORIGINS",
    "STATUSES",
    "Catalogue",
    "Emulator",
    "EmulatorAbort",
    "EmulatorClock",
    "Faults",
    "RecordedRequest",
    "Robot",
    "RunView",
    "Schedule",
    "write_captures",
]
