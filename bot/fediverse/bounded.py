"""A bounded copy of decoded JSON, and what a value kept in memory costs.

An instance decides what a notification contains. Before the bot parses one it takes a bounded copy:
nesting, items per container, characters per string and the total bytes are all capped, whatever the
server sent. The copy keeps every key of an ordinary notification whole, so nothing the formatter reads
is lost for real content.

The copy is what the parser reads, not what the bot keeps: a notification keeps only the typed fields
parsed from it (`models.Notification`), which share the copy's strings. `retained_size` measures what
such a typed value holds, with `sys.getsizeof` over every object it reaches, so byte budgets downstream
count what Python actually holds, not what the JSON text was.
"""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass
from typing import Any

__all__ = ["BoundedJson", "JsonLimits", "bounded_copy", "retained_size"]


@dataclass(frozen=True)
class JsonLimits:
    max_depth: int = 8
    max_items: int = 64  # per object or array; the rest is left out
    max_string_chars: int = 50_000  # status HTML is cut to this anyway (sanitize.MAX_HTML_CHARS)
    max_bytes: int = 256 * 1024  # the whole copy; what does not fit is left out


@dataclass(frozen=True)
class BoundedJson:
    value: Any
    retained_bytes: int


def bounded_copy(value: object, limits: JsonLimits | None = None) -> BoundedJson:
    """A copy of `value` within `limits`; linear in the part of `value` it visits."""
    walker = _Walker(limits or JsonLimits())
    copied = walker.copy(value, 0)
    return BoundedJson(copied, walker.used)


def retained_size(value: object) -> int:
    """Bytes `value` holds: itself and every object it reaches through dataclass fields, tuples, lists and
    dicts, each counted once. Singletons (None, True, False) cost nothing to keep."""
    seen: set[int] = set()
    total = 0
    todo: list[object] = [value]
    while todo:
        item = todo.pop()
        if item is None or item is True or item is False or id(item) in seen:
            continue
        seen.add(id(item))
        total += sys.getsizeof(item)
        if isinstance(item, tuple | list):
            todo.extend(item)
        elif isinstance(item, dict):
            todo.extend(item.keys())
            todo.extend(item.values())
        elif dataclasses.is_dataclass(item) and not isinstance(item, type):
            todo.extend(getattr(item, f.name) for f in dataclasses.fields(item))
            if hasattr(item, "__dict__"):
                total += sys.getsizeof(item.__dict__)
    return total


class _Walker:
    def __init__(self, limits: JsonLimits) -> None:
        self.limits = limits
        self.used = 0

    def _room(self) -> int:
        return self.limits.max_bytes - self.used

    def copy(self, value: object, depth: int) -> Any:
        if isinstance(value, str):
            # A str of n characters costs at most ~4n bytes (+ header); cut it to what still fits.
            keep = min(len(value), self.limits.max_string_chars, max(0, (self._room() - 80) // 4))
            text = value[:keep]
            self.used += sys.getsizeof(text)
            return text
        if value is None or isinstance(value, bool | int | float):
            if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 64:
                value = None  # a giant number is no count or id the bot can use
            self.used += sys.getsizeof(value)
            return value
        if depth >= self.limits.max_depth:
            return None
        if isinstance(value, dict):
            out: dict[str, Any] = {}
            self.used += sys.getsizeof(out)
            for index, (key, item) in enumerate(value.items()):
                if index >= self.limits.max_items or self._room() <= 0:
                    break
                if not isinstance(key, str) or len(key) > 256:
                    continue
                self.used += sys.getsizeof(key) + 16
                out[key] = self.copy(item, depth + 1)
            self.used += sys.getsizeof(out) - sys.getsizeof({})
            return out
        if isinstance(value, list):
            items: list[Any] = []
            for item in value[: self.limits.max_items]:
                if self._room() <= 0:
                    break
                items.append(self.copy(item, depth + 1))
            self.used += sys.getsizeof(items)
            return items
        return None
