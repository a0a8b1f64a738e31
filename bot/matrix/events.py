"""Turning one nio sync response into the adapter's typed events. No I/O.

What is delivered, in order per sync: invites, then per joined room a change of its privacy in the
state section (a limited sync), the gap a limited timeline left out (fetched by the adapter, see gaps.py)
and its timeline (messages, undecryptable messages, members who left, privacy changes), then rooms the
bot itself left. The bot's own events are skipped, and so are
edits (`m.replace`), redacted messages and malformed content. Reactions (`m.annotation`) and redactions
come through as `Reaction` and `Redaction`, decrypted ones too (nio decrypts before this runs).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import nio

from bot.matrix.types import (
    BotEvent,
    EventId,
    IncomingMessage,
    Invite,
    MemberLeft,
    Reaction,
    Redaction,
    RoomChanged,
    RoomId,
    UndecryptableMessage,
    UserId,
)

log = logging.getLogger(__name__)

# nio's MegolmEvent that it could not decrypt → a short reason code (see UndecryptableMessage).
ReasonFor = Callable[[Any], str]


def _str(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _int(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def message_from_source(
    room_id: RoomId, source: Mapping[str, Any], *, encrypted: bool
) -> IncomingMessage | None:
    """An m.room.message event dict (decrypted if needed) → IncomingMessage; None if not usable."""
    if source.get("type") != "m.room.message":
        return None
    content = source.get("content")
    event_id, sender = _str(source.get("event_id")), _str(source.get("sender"))
    if not isinstance(content, Mapping) or event_id is None or sender is None:
        return None
    body, msgtype = _str(content.get("body")), _str(content.get("msgtype"))
    if body is None or msgtype is None:
        return None  # redacted, or not a message we can read
    relates = content.get("m.relates_to")
    if isinstance(relates, Mapping) and relates.get("rel_type") == "m.replace":
        return None
    reply_to = _reply_target(relates)
    formatted = None
    if content.get("format") == "org.matrix.custom.html":
        formatted = _str(content.get("formatted_body"))
    return IncomingMessage(
        room_id=room_id,
        event_id=EventId(event_id),
        sender=UserId(sender),
        body=body,
        formatted_body=formatted,
        msgtype=msgtype,
        is_encrypted=encrypted,
        server_ts=_int(source.get("origin_server_ts")),
        reply_to=reply_to,
    )


def _reply_target(relates: object) -> EventId | None:
    """The event a message replies to; None for a thread message whose reply is only a fallback."""
    if not isinstance(relates, Mapping):
        return None
    if relates.get("rel_type") == "m.thread" and relates.get("is_falling_back") is True:
        return None
    in_reply_to = relates.get("m.in_reply_to")
    if not isinstance(in_reply_to, Mapping):
        return None
    event_id = _str(in_reply_to.get("event_id"))
    return EventId(event_id) if event_id else None


def reaction_from_source(room_id: RoomId, source: Mapping[str, Any]) -> Reaction | None:
    """An m.reaction event dict (decrypted if needed) with an m.annotation relation → Reaction."""
    if source.get("type") != "m.reaction":
        return None
    content = source.get("content")
    event_id, sender = _str(source.get("event_id")), _str(source.get("sender"))
    if not isinstance(content, Mapping) or event_id is None or sender is None:
        return None
    relates = content.get("m.relates_to")
    if not isinstance(relates, Mapping) or relates.get("rel_type") != "m.annotation":
        return None
    target, key = _str(relates.get("event_id")), _str(relates.get("key"))
    if not target or not key:
        return None
    return Reaction(room_id, EventId(event_id), UserId(sender), EventId(target), key[:64])


def redaction_from_source(room_id: RoomId, source: Mapping[str, Any]) -> Redaction | None:
    """An m.room.redaction → Redaction. `redacts` is top-level before room version 11, in content after."""
    if source.get("type") != "m.room.redaction":
        return None
    event_id, sender = _str(source.get("event_id")), _str(source.get("sender"))
    content = source.get("content")
    redacts = _str(source.get("redacts"))
    if redacts is None and isinstance(content, Mapping):
        redacts = _str(content.get("redacts"))
    if event_id is None or sender is None or not redacts:
        return None
    return Redaction(room_id, EventId(event_id), UserId(sender), EventId(redacts))


def left_member(room_id: RoomId, source: Mapping[str, Any]) -> MemberLeft | None:
    """A member event whose membership became leave or ban → MemberLeft."""
    if source.get("type") != "m.room.member":
        return None
    content = source.get("content")
    state_key = _str(source.get("state_key"))
    if not isinstance(content, Mapping) or state_key is None:
        return None
    if content.get("membership") not in ("leave", "ban"):
        return None
    return MemberLeft(room_id, UserId(state_key))


_PRIVACY_STATE = frozenset({"m.room.join_rules", "m.room.history_visibility"})


def room_change(room_id: RoomId, source: Mapping[str, Any], bot: UserId) -> RoomChanged | None:
    """A state event that may make a room less private → RoomChanged (see its docstring)."""
    kind, sender = source.get("type"), _str(source.get("sender"))
    if sender is None or _str(source.get("state_key")) is None:
        return None
    if kind in _PRIVACY_STATE:
        return RoomChanged(room_id, UserId(sender))
    if kind == "m.room.member" and source.get("state_key") != bot:
        content = source.get("content")
        if isinstance(content, Mapping) and content.get("membership") in ("join", "invite", "knock"):
            return RoomChanged(room_id, UserId(sender))
    return None


def invite_from_state(room_id: RoomId, stripped_state: Iterable[Mapping[str, Any]], bot: UserId) -> Invite:
    """The bot's own invite member event in an invited room's stripped state → Invite."""
    inviter: UserId | None = None
    is_direct = False
    for source in stripped_state:
        if source.get("type") == "m.room.member" and source.get("state_key") == bot:
            content = source.get("content")
            if isinstance(content, Mapping) and content.get("membership") == "invite":
                sender = _str(source.get("sender"))
                inviter = UserId(sender) if sender is not None else None
                is_direct = content.get("is_direct") is True
    return Invite(room_id, inviter, is_direct)


def _source(event: Any) -> Mapping[str, Any]:
    source = getattr(event, "source", None)
    return source if isinstance(source, Mapping) else {}


def _invite_source(event: Any) -> Mapping[str, Any]:
    # nio moves "content" out of an invite event's source dict and into an attribute.
    content = getattr(event, "content", None)
    source = _source(event)
    return {**source, "content": content} if isinstance(content, Mapping) else source


def events_from_sync(
    response: Any,
    bot: UserId,
    reason_for: ReasonFor,
    *,
    invites_only: bool = False,
    gaps: Mapping[RoomId, Sequence[Any]] | None = None,
    full_state: bool = False,
) -> list[BotEvent]:
    """Typed events from a nio SyncResponse that nio already processed (so encrypted events are decrypted).

    `gaps`: per room, nio events (oldest first) that its limited timeline left out; delivered before it.
    `full_state`: the sync was asked for every room's whole state (a catch-up); its state section is
    then not a change and yields no RoomChanged (each delivery checks the DM again anyway).
    """
    gaps = gaps or {}
    out: list[BotEvent] = []
    rooms = response.rooms
    for room_id, info in rooms.invite.items():
        stripped = [_invite_source(e) for e in info.invite_state]
        out.append(invite_from_state(RoomId(room_id), stripped, bot))
    if invites_only:
        return out

    for room_id, info in rooms.join.items():
        rid = RoomId(room_id)
        if info.timeline.limited and rid not in gaps:
            log.info("sync timeline for %s was limited: older events in the gap are not delivered", rid)
        # State that changed outside the timeline (a limited sync) counts as well, once per room.
        changes = () if full_state else (room_change(rid, _source(e), bot) for e in info.state)
        changed = next((c for c in changes if c is not None), None)
        if changed is not None:
            out.append(changed)
        for event in (*gaps.get(rid, ()), *info.timeline.events):
            converted = _timeline_event(rid, event, bot, reason_for)
            if converted is not None:
                out.append(converted)

    for room_id, info in rooms.leave.items():
        rid = RoomId(room_id)
        bot_left = False
        for event in info.timeline.events:
            left = left_member(rid, _source(event))
            if left is not None:
                bot_left = bot_left or left.user_id == bot
                out.append(left)
        if not bot_left:
            out.append(MemberLeft(rid, bot))
    return out


def _timeline_event(room_id: RoomId, event: Any, bot: UserId, reason_for: ReasonFor) -> BotEvent | None:
    if isinstance(event, nio.MegolmEvent):
        sender: str = event.sender
        if sender == bot:
            return None
        return UndecryptableMessage(
            room_id=room_id,
            event_id=EventId(str(event.event_id)),
            sender=UserId(sender),
            reason=reason_for(event),
            server_ts=_int(event.server_timestamp),
        )
    source = _source(event)
    changed = room_change(room_id, source, bot)  # even when the bot made the change (it may invite)
    if changed is not None:
        return changed
    if source.get("sender") == bot:
        return None
    message = message_from_source(room_id, source, encrypted=getattr(event, "decrypted", False) is True)
    if message is not None:
        return message
    return (
        reaction_from_source(room_id, source)
        or redaction_from_source(room_id, source)
        or left_member(room_id, source)
    )
