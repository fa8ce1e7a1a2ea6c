"""Quoting for SQL text: the one module every other warehouse module may import.

Identifiers and literals are needed by the type algebra (``schema``: struct types are SQL
text), by the object names (``target``) and by the SQL builders (``sql``), which import both
of those: so they live below all three.
"""

from __future__ import annotations


def _q(name: str) -> str:
    """A quoted SQL identifier; safe for any string."""
    return '"' + name.replace('"', '""') + '"'


def _lit(value: str) -> str:
    """A SQL string literal, for the few places DuckDB takes no parameter."""
    return "'" + value.replace("'", "''") + "'"
