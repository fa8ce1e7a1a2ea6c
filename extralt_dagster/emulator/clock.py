"""The emulator's clock: real time, sped up, plus manual jumps, so tests never sleep."""

import threading
import time


class EmulatorClock:
    """Emulated epoch seconds = start + monotonic elapsed x speed + manual offset.

    Changing `speed` re-bases the clock, so emulated time never jumps or runs backwards.
    `speed=0` freezes it: then only `advance()` moves time, which makes tests exact.
    """

    def __init__(self, speed: float = 1.0, *, start: float | None = None) -> None:
        if speed < 0:
            raise ValueError("speed must be >= 0")
        self._lock = threading.Lock()
        self._start = time.time() if start is None else float(start)
        self._mono0 = time.monotonic()
        self._elapsed = 0.0  # emulated seconds accrued before the last speed change
        self._speed = float(speed)
        self._offset = 0.0

    def now(self) -> float:
        with self._lock:
            return self._now()

    def _now(self) -> float:
        run = (time.monotonic() - self._mono0) * self._speed
        return self._start + self._elapsed + run + self._offset

    def advance(self, seconds: float) -> float:
        """Jump forward by `seconds` of emulated time; returns the new now."""
        if seconds < 0:
            raise ValueError("the clock only moves forward")
        with self._lock:
            self._offset += seconds
            return self._now()

    @property
    def speed(self) -> float:
        return self._speed

    @speed.setter
    def speed(self, value: float) -> None:
        if value < 0:
            raise ValueError("speed must be >= 0")
        with self._lock:
            mono = time.monotonic()
            self._elapsed += (mono - self._mono0) * self._speed
            self._mono0 = mono
            self._speed = float(value)

    def __repr__(self) -> str:
        return f"EmulatorClock(speed={self._speed}, now={self.now():.3f})"
