"""Export bodies: generated files cached on disk, streamed with the export faults applied."""

import contextlib
import hashlib
import json
import os
import threading
import uuid
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import BinaryIO

from .datagen import DEFAULT_CATALOGUE, Catalogue, ExportShape, write_captures
from .faults import Faults
from .runs import ExportSpec

CHUNK_SIZE = 1 << 20
MEDIA_TYPES = {"parquet": "application/vnd.apache.parquet", "jsonl": "application/x-ndjson"}


class EmulatorAbort(Exception):
    """Raised mid-body to drop the connection on purpose (the `export_cut_after_bytes` fault)."""


class ExportCache:
    """Generated export files on disk, keyed by everything that shapes their bytes.

    Only the newest file per (run, format, columns) is kept; an older one still being streamed
    stays readable through its open handle after the unlink. `use()` points it at a directory
    (each time the emulator starts); until then it has none.
    """

    def __init__(self, seed: int, catalogue: Catalogue = DEFAULT_CATALOGUE) -> None:
        self.seed = seed
        self.catalogue = catalogue
        self.dir: Path | None = None
        self._lock = threading.Lock()
        self._key_locks: dict[str, threading.Lock] = {}
        self._latest: dict[tuple[str, str, str], Path] = {}

    def use(self, directory: Path) -> None:
        """Write to `directory` from now on, forgetting the files written anywhere before."""
        with self._lock:
            self.dir = directory
            self._key_locks = {}
            self._latest = {}

    def open(self, spec: ExportSpec, fmt: str, shape: ExportShape) -> BinaryIO:
        """The export file of `spec` in `fmt` and `shape`, written first if it is not there."""
        assert self.dir is not None, "the export cache has no directory: start the emulator"
        variant = shape.key()
        fields = [asdict(spec), fmt, variant, self.seed]
        if self.catalogue.key():  # the default shape keeps the names files had before it
            fields.append(self.catalogue.key())
        key = hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:16]
        path = self.dir / f"{spec.run_id}-{spec.count}-{key}.{fmt}"
        with self._lock:
            key_lock = self._key_locks.setdefault(key, threading.Lock())
        with key_lock:
            if not path.exists():
                self._write(path, spec, fmt, shape)
            handle = path.open("rb")
        with self._lock:
            slot = (spec.run_id, fmt, variant)
            old = self._latest.get(slot)
            self._latest[slot] = path
            if old is not None and old != path:
                old.unlink(missing_ok=True)
        return handle

    def _write(self, path: Path, spec: ExportSpec, fmt: str, shape: ExportShape) -> None:
        """Write beside `path` and rename, so a reader never sees half a file."""
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
        try:
            write_captures(
                tmp,
                seed=self.seed,
                format=fmt,
                catalogue=self.catalogue,
                **spec.capture_arguments(),
                **shape.write_options(spec.count),
            )
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)


def stream_export(handle: BinaryIO, size: int, faults: Faults) -> Iterator[bytes]:
    """The body of an export, in 1 MiB chunks, with the export faults applied.

    A sync generator: Starlette iterates it in a worker thread, so disk reads never block the
    event loop.
    """
    limit = size
    if faults.export_truncate:
        limit = int(size * faults.export_truncate_fraction)
    cut = faults.export_cut_after_bytes
    if cut is not None:
        limit = min(limit, max(0, cut))
    garbled = []
    if faults.export_corrupt or faults.export_corrupt_page:
        garbled = _garbled_ranges(size, footer=faults.export_corrupt)
    pos = 0
    with contextlib.closing(handle):
        while pos < limit:
            chunk = handle.read(min(CHUNK_SIZE, limit - pos))
            if not chunk:
                break
            if garbled:
                chunk = _garble(chunk, pos, garbled)
            pos += len(chunk)
            yield chunk
    if cut is not None and cut < size:
        raise EmulatorAbort(f"export cut after {pos} bytes")


def _garbled_ranges(size: int, *, footer: bool = True) -> list[tuple[int, int]]:
    """Some bytes in the middle (a data page) and the last 16 (parquet's footer length and
    magic), so no reader can open the file, nor skip the damage. Without `footer`, only the
    middle: the file opens, and fails where a reader decodes that page."""
    mid = size // 2
    middle = (max(0, mid - 256), min(size, mid + 256))
    return [middle, (max(0, size - 16), size)] if footer else [middle]


def _garble(chunk: bytes, pos: int, ranges: list[tuple[int, int]]) -> bytes:
    out = bytearray(chunk)
    for lo, hi in ranges:
        a, b = max(lo, pos), min(hi, pos + len(chunk))
        if a < b:
            out[a - pos : b - pos] = b"\xff" * (b - a)
    return bytes(out)
