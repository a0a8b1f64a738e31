"""What can still be learnt from a notification page too large to read: its first notification's id.

A page that passes `max_response_bytes` is not parsed, but the relay must still move its cursor past the
notification that makes it too big, or that account's catch-up would ask for the same page for ever. The
id is read from the start of the body: the `id` key of the first object in the top-level array, whatever
order the server writes its keys in (Akkoma writes `account` first; its nested `id` is not the one).
Pure; tested with plain values.
"""

from __future__ import annotations

import re

__all__ = ["first_item_id"]

_STRUCTURE = re.compile(r'[\[\]{},:"]')
_STRING = re.compile(r'"((?:[^"\\]|\\.)*)"', re.S)
_ID_VALUE = re.compile(r'\s*:\s*"([A-Za-z0-9_-]{1,128})"')


def first_item_id(prefix: bytes) -> str | None:
    """The `id` of the first object in a JSON array, from the first bytes of that array's text."""
    text = prefix.decode("utf-8", errors="replace")
    depth = 0
    previous = ""  # the last structural character outside strings
    pos = 0
    while (token := _STRUCTURE.search(text, pos)) is not None:
        char = token.group()
        if char == '"':
            string = _STRING.match(text, token.start())
            if string is None:
                return None  # the prefix ends inside a string before the id
            is_key = depth == 2 and previous in ("{", ",")
            if is_key and string.group(1) == "id":
                value = _ID_VALUE.match(text, string.end())
                return value.group(1) if value else None
            pos, previous = string.end(), '"'
            continue
        if char in "[{":
            if depth == 0 and char != "[":
                return None  # not an array
            depth += 1
        elif char in "]}":
            depth -= 1
            if depth <= 1:
                return None  # the first item ended without an id (or the array is empty)
        previous, pos = char, token.end()
    return None
