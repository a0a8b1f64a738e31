"""Ordering of notification ids, which are opaque strings whose scheme depends on the server.

- GoToSocial: ULIDs (26 characters of Crockford base32, time-ordered): compare as strings (upper-cased).
- Mastodon: numeric strings: compare as integers ("10" is newer than "9"; a plain string compare gets
  that wrong).
- Akkoma/Pleroma: flake ids, base62 in ASCII order ("0-9A-Za-z"): compare as strings, case matters
  ("a" is newer than "Z"), so only ULIDs are upper-cased.

One instance uses one scheme. Should numeric and non-numeric ids ever meet, numeric ids sort first:
that order has no meaning, it only keeps `notification_id_key` a total order.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

__all__ = ["IdKey", "is_newer", "max_id", "notification_id_key"]

IdKey = tuple[int, int, str]

_ULID = re.compile(r"^[0-9A-HJKMNP-TV-Za-hjkmnp-tv-z]{26}$")  # Crockford base32, either case


def _is_numeric(value: str) -> bool:
    return value.isascii() and value.isdigit()


def notification_id_key(value: str) -> IdKey:
    """A sort key: larger means newer. Numeric ids compare as integers, ULIDs as upper-cased strings,
    others (Akkoma's case-sensitive flake ids) as they are."""
    if _is_numeric(value):
        # By length, then digits: the integer order without int() (which refuses > 4300 digits).
        digits = value.lstrip("0") or "0"
        return (0, len(digits), digits)
    return (1, 0, value.upper() if _ULID.match(value) else value)


def is_newer(candidate: str, than: str | None) -> bool:
    """True when `candidate` is strictly newer than `than` (and always when there is no `than` yet)."""
    if than is None:
        return True
    return notification_id_key(candidate) > notification_id_key(than)


def max_id(ids: Iterable[str]) -> str | None:
    """The newest id, or None when `ids` is empty."""
    return max(ids, key=notification_id_key, default=None)
