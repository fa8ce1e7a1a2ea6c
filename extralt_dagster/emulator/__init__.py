"""A local, stateful Extralt API emulator: the default backend with no account, and the real
server tests talk to over HTTP.

    with Emulator(speed=50) as emu:
        client = ExtraltClient(emu.api_key, emu.url)

It never imports the rest of the package: it fakes the service, not our client.
"""

from .clock import EmulatorClock
from .datagen import CAPTURE_COLUMNS, EXTRA_COLUMNS, write_captures
from .faults import Faults
from .server import DEMO_API_KEY, Emulator, EmulatorAbort, RecordedRequest
from .state import DEMO_ROBOTS, STATUSES, Robot, RunView

__all__ = [
    "CAPTURE_COLUMNS",
    "DEMO_API_KEY",
    "DEMO_ROBOTS",
    "EXTRA_COLUMNS",
    "STATUSES",
    "Emulator",
    "EmulatorAbort",
    "EmulatorClock",
    "Faults",
    "RecordedRequest",
    "Robot",
    "RunView",
    "write_captures",
]
