"""A run's export, streamed to disk: whole and readable, or not at all.

Bytes go to a temporary file beside the target and take its name only when whole and readable,
so a cut connection or a corrupt body never leaves a partial file behind. The local name comes
from the run id alone, never from the server's Content-Disposition.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from pathlib import Path
from typing import BinaryIO

from .errors import ExtraltExportError, ExtraltReadError
from .models import ExportFormat
from .transport import Transport

CHUNK_SIZE = 1 << 20
EXPORT_PATH = "/captures/export"
_SAFE_FILENAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,200}$")


def download_export(
    transport: Transport,
    run_id: str,
    dest: Path,
    fmt: ExportFormat,
    *,
    max_bytes: int | None = None,
) -> Path:
    """Stream the export of `run_id` to `dest` (a directory or a file path), retried whole."""
    target = export_target(run_id, dest, fmt)
    target.parent.mkdir(parents=True, exist_ok=True)
    params = {"run_id": run_id, "format": fmt.value}

    def attempt() -> Path:
        fd, tmp_name = tempfile.mkstemp(
            dir=target.parent, prefix=f".{target.name}.", suffix=".part"
        )
        tmp = Path(tmp_name)
        try:
            with os.fdopen(fd, "wb") as out:
                _stream_into(transport, out, params, max_bytes)
            check_export(tmp, fmt)
            os.replace(tmp, target)
            return target
        finally:
            tmp.unlink(missing_ok=True)

    return transport.with_retries("GET", EXPORT_PATH, attempt, idempotent=True)


def _stream_into(
    transport: Transport, out: BinaryIO, params: dict[str, str], max_bytes: int | None
) -> None:
    with transport.stream("GET", EXPORT_PATH, params=params) as response:
        expected = response.headers.get("content-length")
        written = 0
        for chunk in response.iter_bytes(CHUNK_SIZE):
            written += len(chunk)
            if max_bytes is not None and written > max_bytes:
                raise ExtraltExportError(
                    f"Export for run {params['run_id']} exceeded max_export_bytes "
                    f"({max_bytes:,} bytes); download aborted. Raise the cap if "
                    "the run is really that large."
                )
            out.write(chunk)
        if expected is not None and expected.isdigit() and int(expected) != written:
            raise ExtraltReadError(
                f"Export for run {params['run_id']} ended after {written:,} of "
                f"{int(expected):,} bytes."
            )


def export_target(run_id: str, dest: Path, fmt: ExportFormat) -> Path:
    """`dest` itself, or the run's file in it when `dest` is a directory."""
    if dest.is_dir() or str(dest).endswith(os.sep):
        return dest / safe_export_filename(run_id, fmt)
    return dest


def safe_export_filename(run_id: str, fmt: ExportFormat) -> str:
    """A local name derived from the run id alone: never from the server's hint."""
    name = f"{run_id}.{fmt.value}"
    if not _SAFE_FILENAME.fullmatch(name) or ".." in name:
        # hashlib, not hash(): Python salts str hashes per process, and the name must not move.
        digest = hashlib.sha256(run_id.encode("utf-8", "surrogatepass")).hexdigest()[:16]
        name = f"export-{digest}.{fmt.value}"
    return name


def check_export(path: Path, fmt: ExportFormat) -> None:
    """Refuse a body that is not a whole file before it takes the target's name."""
    if fmt is ExportFormat.PARQUET:
        _check_parquet(path)
    else:
        _check_jsonl(path)


def _check_parquet(path: Path) -> None:
    import pyarrow.parquet as pq

    size = path.stat().st_size
    with path.open("rb") as f:
        head = f.read(4)
        if size >= 8:
            f.seek(-4, os.SEEK_END)
        tail = f.read(4)
    if size < 12 or head != b"PAR1" or tail != b"PAR1":
        raise ExtraltExportError(
            f"Export is not a complete Parquet file ({size:,} bytes, missing magic bytes); "
            "it was truncated or corrupted in transit."
        )
    try:
        pq.read_metadata(path)
    except Exception as exc:
        raise ExtraltExportError(f"Export's Parquet footer is unreadable: {exc}") from None


def _check_jsonl(path: Path) -> None:
    size = path.stat().st_size
    if not size:
        return
    with path.open("rb") as f:
        f.seek(max(0, size - 65536))
        tail = f.read()
    last = tail.rstrip().rsplit(b"\n", 1)[-1]
    if not last.strip() and size <= len(tail):
        return  # only blank lines: a run with no captures
    try:
        json.loads(last)
    except ValueError:
        raise ExtraltExportError(
            "Export's last JSONL line is not valid JSON; it was truncated or corrupted."
        ) from None
