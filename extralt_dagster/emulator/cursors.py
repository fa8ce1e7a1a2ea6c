"""Opaque page cursors: base64 JSON naming what they page (`kind`) and where the next page starts."""

import base64
import binascii
import json
from typing import Any

from .errors import ApiError


def encode_cursor(kind: str, **values: Any) -> str:
    raw = json.dumps({"k": kind, **values}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str, kind: str) -> dict[str, Any]:
    """The values of a cursor of `kind`; a 400 for anything else."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        data = json.loads(raw)
        if not isinstance(data, dict) or data.get("k") != kind:
            raise ValueError(cursor)
        return data
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise ApiError(400, "BadRequest", f"Invalid cursor {cursor!r}") from None
