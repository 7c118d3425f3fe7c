"""Helpers shared by the subcommands."""
from __future__ import annotations

from memsim.errors import MemsimError

EXIT_USAGE = 2


def key_values(items: list[str] | None, flag: str) -> dict[str, str]:
    """['a=1', 'b.c=2'] -> {'a': '1', 'b.c': '2'}; anything else is a usage error."""
    pairs = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise MemsimError(f"{flag} {item!r}: expected KEY=VALUE")
        pairs[key.strip()] = value.strip()
    return pairs
