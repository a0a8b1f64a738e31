"""Pure grouping of queued notifications for one Matrix room into fewer messages.

A homeserver limits how fast the bot may send (Synapse: 0.2 messages/s, burst 10). When notifications
arrive faster than that, the relay groups its queue instead of falling behind:

- favourites / boosts (and pending ones) of the same post → "Bob, Carol and 3 others favourited your post";
- follows, follow requests, sign-ups (per account) → "Bob, Carol and 3 others followed you";
- everything else (mentions above all) keeps its own message with its content; `pack_messages` can then
  put several whole messages into one event, never dropping content.

Messages come out in the order of each group's first notification, and every input notification id is
listed in exactly one output message's `covers`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from bot.fediverse.models import Notification
from bot.fediverse.notification_types import type_named
from bot.relay.format import Actor, Message, actor_of, format_notification, render_notification

__all__ = ["PACK_SEPARATOR_HTML", "PACK_SEPARATOR_PLAIN", "Pending", "group_notifications", "pack_messages"]


PACK_SEPARATOR_PLAIN = "\n\n"
PACK_SEPARATOR_HTML = "<hr>"


@dataclass(frozen=True)
class Pending:
    """One queued notification, and which connected account it came from.

    `instance_display` is that account's instance domain (used to complete local accts); `account_label`
    is shown as a prefix when the user has several accounts (None: no prefix).
    """

    notification: Notification
    instance_display: str
    account_label: str | None = None

    @property
    def id(self) -> str:
        return self.notification.id


def _group_key(item: Pending, index: int) -> tuple[object, ...]:
    n_type = item.notification.type
    kind = type_named(n_type)
    grouping = kind.grouping if kind is not None else "none"
    base = (item.account_label, item.instance_display, n_type)
    if grouping == "post":
        status = item.notification.status
        if status is not None:
            return ("post", *base, status.id)
    elif grouping == "target":
        return ("target", *base)
    return ("single", index)


def group_notifications(items: Sequence[Pending]) -> list[Message]:
    """Collapse a queue into fewer messages (see the module docstring); pure and order-preserving."""
    groups: dict[tuple[object, ...], list[Pending]] = {}
    for index, item in enumerate(items):
        groups.setdefault(_group_key(item, index), []).append(item)

    messages: list[Message] = []
    for members in groups.values():
        first = members[0]
        if len(members) == 1:
            messages.append(
                format_notification(
                    first.notification,
                    instance_display=first.instance_display,
                    account_label=first.account_label,
                )
            )
            continue
        actors: dict[str, Actor] = {}
        for member in members:
            actor = actor_of(member.notification.account, instance_display=member.instance_display)
            actors.setdefault(actor.key, actor)
        messages.append(
            render_notification(
                first.notification,
                list(actors.values()),
                instance_display=first.instance_display,
                account_label=first.account_label,
                covers=tuple(member.id for member in members),
            )
        )
    return messages


def pack_messages(messages: Sequence[Message], *, max_bytes: int = 24_000) -> list[Message]:
    """Join consecutive messages into as few as fit in `max_bytes` (plain + HTML, UTF-8), in order.

    A message already larger than `max_bytes` is passed through alone. Nothing is cut or dropped.
    """
    packed: list[Message] = []
    for message in messages:
        if packed:
            last = packed[-1]
            plain = last.plain + PACK_SEPARATOR_PLAIN + message.plain
            rich = last.html + PACK_SEPARATOR_HTML + message.html
            if len(plain.encode("utf-8", "replace")) + len(rich.encode("utf-8", "replace")) <= max_bytes:
                packed[-1] = Message(plain, rich, last.covers + message.covers)
                continue
        packed.append(message)
    return packed
