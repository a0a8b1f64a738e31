"""Frozen dataclasses for the API objects the bot uses, and small explicit parsers for them.

Parsers take decoded JSON (`object`) and raise `ShapeError` when it is not the shape we need; the client turns
that into a `BadResponseError` naming the instance. Fields the bot does not need are not parsed and not kept:
a notification is parsed from a bounded copy of its JSON (`bounded`) and keeps only its typed fields.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, NewType, TypeVar

from bot.fediverse.bounded import bounded_copy, retained_size
from bot.relay.sanitize import safe_url

__all__ = [
    "AppRegistration",
    "FediverseAccount",
    "InstanceInfo",
    "Notification",
    "NotificationId",
    "Page",
    "Poll",
    "PollOption",
    "PostedStatus",
    "RemoteAccountId",
    "ShapeError",
    "Status",
    "StatusId",
    "TokenGrant",
    "parse_account",
    "parse_app",
    "parse_notification",
    "parse_posted",
    "parse_status",
    "parse_token",
]

RemoteAccountId = NewType("RemoteAccountId", str)  # the id on its own server
StatusId = NewType("StatusId", str)
NotificationId = NewType("NotificationId", str)

MAX_ID_LENGTH = 128
MAX_POLL_OPTIONS = 20


class ShapeError(ValueError):
    """Decoded JSON is not the shape expected. The message names the field, never a value."""


@dataclass(frozen=True)
class InstanceInfo:
    software: str  # "gotosocial", "mastodon", ... lowercase; "unknown" when the server does not say
    version: str
    title: str
    streaming_url: str | None  # as advertised (GoToSocial always says wss://, even over http)
    uri: str  # v1 `uri` / v2 `domain`: the host, usually without scheme
    account_domain: str  # the domain in local accounts' handles (`account_domain`, else `uri`)
    needs_login: bool = False  # limited-federation Mastodon: instance documents only for signed-in users

    @property
    def is_gotosocial(self) -> bool:
        return self.software == "gotosocial"


@dataclass(frozen=True)
class AppRegistration:
    client_id: str
    client_secret: str = field(repr=False)
    scopes: tuple[str, ...] = ()


@dataclass(frozen=True)
class TokenGrant:
    access_token: str = field(repr=False)
    scope: tuple[str, ...] = ()
    created_at: int | None = None


@dataclass(frozen=True, slots=True)
class FediverseAccount:
    id: RemoteAccountId
    username: str
    acct: str  # as the server gives it: "bob" for a local account, "bob@other.example" for a remote one
    url: str | None
    display_name: str
    bot: bool = False
    default_visibility: str | None = None  # `source.privacy`: only verify_credentials sends it


@dataclass(frozen=True, slots=True)
class PollOption:
    title: str
    votes_count: int | None  # None: the server hides the count (poll still open)


@dataclass(frozen=True, slots=True)
class Poll:
    options: tuple[PollOption, ...]  # at most MAX_POLL_OPTIONS


@dataclass(frozen=True, slots=True)
class Status:
    id: StatusId
    uri: str | None
    url: str | None
    content: str  # HTML as the server sent it (or its plain `text`); sanitise before showing
    spoiler_text: str
    visibility: str
    sensitive: bool
    created_at: datetime | None
    account: FediverseAccount | None
    in_reply_to_id: str | None = None
    media_count: int = 0
    poll: Poll | None = None
    reblog: Status | None = None  # the boosted post, when this status is a boost
    mentions: tuple[str, ...] = ()  # `acct` of each mentioned account, as the server writes it


@dataclass(frozen=True)
class PostedStatus:
    """What the bot needs of a status it has just posted: its id and the link to show (only a URL that
    passed `safe_url`, as the relay shows)."""

    id: StatusId
    url: str | None


@dataclass(frozen=True, slots=True)
class Notification:
    """A notification with what any type's message may show. Type-specific parts are "" or None when the
    server did not send them (or sent them in a shape we cannot use)."""

    id: NotificationId
    type: str
    created_at: datetime
    account: FediverseAccount
    status: Status | None
    target: FediverseAccount | None = None  # `move`: the new account
    emoji: str = ""  # emoji reactions: the emoji or its :shortcode:
    moderation_action: str = ""  # `moderation_warning`: what the moderators did
    event_target_name: str = ""  # `severed_relationships`: the other server
    annual_report_year: int | None = None
    report_target: FediverseAccount | None = None  # `admin.report`: who was reported
    # What keeping this notification costs in memory (the relay's byte budgets count it); set by the parser.
    retained_bytes: int = field(default=0, compare=False)


@dataclass(frozen=True)
class Page:
    """One page of notifications, newest first, with cursors read from the Link header."""

    items: tuple[Notification, ...]
    next_max_id: str | None = None  # older page: pass as max_id
    prev_min_id: str | None = None  # newer page: pass as min_id
    skipped_ids: tuple[str, ...] = ()  # items with an ID but an unusable shape (still count for cursors)

    @property
    def all_ids(self) -> tuple[str, ...]:
        return tuple(n.id for n in self.items) + self.skipped_ids


def _obj(value: object, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ShapeError(f"{what} is not a JSON object")
    return value


def _str(d: dict[str, Any], key: str, what: str, *, max_len: int | None = None) -> str:
    value = d.get(key)
    if not isinstance(value, str) or not value:
        raise ShapeError(f"{what}.{key} is missing or not a string")
    if max_len is not None and len(value) > max_len:
        raise ShapeError(f"{what}.{key} is too long")
    return value


def _opt_str(d: dict[str, Any], key: str) -> str | None:
    value = d.get(key)
    return value if isinstance(value, str) and value else None


def _text(d: dict[str, Any], key: str) -> str:
    value = d.get(key)
    return value if isinstance(value, str) else ""


def _time(value: object, what: str) -> datetime:
    if not isinstance(value, str):
        raise ShapeError(f"{what} is not a time string")
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        raise ShapeError(f"{what} is not an ISO 8601 time") from None


def _scopes(value: object) -> tuple[str, ...]:
    if isinstance(value, str):
        words = value.split()
    elif isinstance(value, list):
        words = [w for w in value if isinstance(w, str) and w]
    else:
        words = []
    return tuple(dict.fromkeys(words))


def parse_app(data: object) -> AppRegistration:
    d = _obj(data, "app")
    return AppRegistration(
        client_id=_str(d, "client_id", "app", max_len=512),
        client_secret=_str(d, "client_secret", "app", max_len=512),
        scopes=_scopes(d.get("scopes")),
    )


def parse_token(data: object) -> TokenGrant:
    d = _obj(data, "token")
    token_type = d.get("token_type", "Bearer")
    if not isinstance(token_type, str) or token_type.lower() != "bearer":
        raise ShapeError("token.token_type is not Bearer")
    created = d.get("created_at")
    return TokenGrant(
        access_token=_str(d, "access_token", "token", max_len=2048),
        scope=_scopes(d.get("scope")),
        created_at=created if isinstance(created, int) and not isinstance(created, bool) else None,
    )


def parse_account(data: object, what: str = "account") -> FediverseAccount:
    d = _obj(data, what)
    username = _str(d, "username", what, max_len=2048)
    return FediverseAccount(
        id=RemoteAccountId(_str(d, "id", what, max_len=MAX_ID_LENGTH)),
        username=username,
        acct=_str(d, "acct", what, max_len=2048),
        url=_opt_str(d, "url"),
        display_name=_opt_str(d, "display_name") or username,
        bot=d.get("bot") is True,
        default_visibility=_opt_str(_dict_or_empty(d.get("source")), "privacy"),
    )


_T = TypeVar("_T")


def _lenient(parse: Callable[[object, str], _T], value: object, what: str) -> _T | None:
    """An optional part: None when absent or not in a shape we can use (the rest still counts)."""
    if value is None:
        return None
    try:
        return parse(value, what)
    except ShapeError:
        return None


def _parse_poll(data: object, what: str = "poll") -> Poll:
    options = _obj(data, what).get("options")
    if not isinstance(options, list):
        raise ShapeError(f"{what}.options is not a list")
    parsed: list[PollOption] = []
    for option in options[:MAX_POLL_OPTIONS]:
        if isinstance(option, dict):
            votes = option.get("votes_count")
            counted = isinstance(votes, int) and not isinstance(votes, bool)
            parsed.append(PollOption(_text(option, "title"), votes if counted else None))
    return Poll(tuple(parsed))


def parse_status(data: object, what: str = "status", *, depth: int = 0) -> Status:
    d = _obj(data, what)
    account = d.get("account")
    media = d.get("media_attachments")
    created = d.get("created_at")
    reblog = d.get("reblog")
    return Status(
        id=StatusId(_str(d, "id", what, max_len=MAX_ID_LENGTH)),
        uri=_opt_str(d, "uri"),
        url=_opt_str(d, "url"),
        content=_text(d, "content") or _text(d, "text"),
        spoiler_text=_text(d, "spoiler_text"),
        visibility=_opt_str(d, "visibility") or "public",
        sensitive=d.get("sensitive") is True,
        created_at=_time(created, f"{what}.created_at") if created is not None else None,
        account=parse_account(account, f"{what}.account") if account is not None else None,
        in_reply_to_id=_opt_str(d, "in_reply_to_id"),
        media_count=len(media) if isinstance(media, list) else 0,
        poll=_lenient(_parse_poll, d.get("poll"), f"{what}.poll"),
        # A boost of a boost does not exist; one level is all a message shows.
        reblog=_lenient(_parse_boosted, reblog, f"{what}.reblog") if depth == 0 else None,
        mentions=_mention_accts(d.get("mentions")),
    )


MAX_MENTIONS = 64  # more than any server lets a status carry; what a reply would mention is bounded


def _mention_accts(value: object) -> tuple[str, ...]:
    if not isinstance(value, list):
        return ()
    accts = (m.get("acct") for m in value[:MAX_MENTIONS] if isinstance(m, dict))
    return tuple(a for a in accts if isinstance(a, str) and a and len(a) <= 2048)


def parse_posted(data: object) -> PostedStatus:
    d = _obj(data, "status")
    status_id = StatusId(_str(d, "id", "status", max_len=MAX_ID_LENGTH))
    return PostedStatus(id=status_id, url=safe_url(d.get("url")))


def _parse_boosted(data: object, what: str) -> Status:
    return parse_status(data, what, depth=1)


# Ids end up in cursors, Matrix transaction ids and URLs: URL-safe ASCII only (ULIDs, numbers, flake ids).
_ID_CHARS = re.compile(r"[A-Za-z0-9._~-]+")


def notification_id(data: object) -> str:
    """Just the ID of a notification object (for cursors even when the rest is unusable)."""
    value = _str(_obj(data, "notification"), "id", "notification", max_len=MAX_ID_LENGTH)
    if not _ID_CHARS.fullmatch(value):
        raise ShapeError("notification.id has characters an id never has")
    return value


def parse_notification(data: object) -> Notification:
    d = _obj(data, "notification")
    n_id = NotificationId(notification_id(d))
    n_type = _str(d, "type", "notification", max_len=64)
    # The fields are parsed from a bounded copy, so what they hold is bounded whatever the server sent;
    # the copy itself is dropped here: only the typed fields are kept (`Notification.retained_bytes`).
    raw: dict[str, Any] = bounded_copy(d).value
    status_json = raw.get("status")
    report, warning, event, annual = (_dict_or_empty(raw.get(k)) for k in _PARTS)
    year = annual.get("year")
    account = parse_account(raw.get("account"), "notification.account")
    status = parse_status(status_json, "notification.status") if status_json is not None else None
    if status is not None and status.account == account:  # a mention's author: keep one copy
        status = replace(status, account=account)
    parsed = Notification(
        id=n_id,
        type=n_type,
        created_at=_time(raw.get("created_at"), "notification.created_at"),
        account=account,
        status=status,
        target=_lenient(parse_account, raw.get("target"), "notification.target"),
        emoji=_text(raw, "emoji"),
        moderation_action=_text(warning, "action"),
        event_target_name=_text(event, "target_name"),
        annual_report_year=year if isinstance(year, int) and not isinstance(year, bool) else None,
        report_target=_lenient(parse_account, report.get("target_account"), "notification.report.target"),
    )
    return replace(parsed, retained_bytes=retained_size(parsed))


_PARTS = ("report", "moderation_warning", "event", "annual_report")


def _dict_or_empty(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}
