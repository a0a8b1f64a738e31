"""The notification types the bot knows, in one place: what each is called, which servers send it, and the
words a notification of that type is shown with.

`!gts notify` accepts these names, the metrics label by them (anything else is "other"), the formatter
shows them with these words, and the fake server creates them. A type not listed here still reaches the
user, as a generic "New notification of type X from …" line.

A template names the parts the formatter fills in: `{actor}` (who did it; several when grouped),
`{target}` (the account someone moved to), `{emoji}` (a reaction's emoji), `{action}` (what the
moderators did), `{target_name}` (the server or account a moderation action was about) and `{year}`
(of an annual report). A part the notification does not carry is shown with its `FALLBACK_WORDS`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final, Literal

__all__ = [
    "AKKOMA",
    "FALLBACK_WORDS",
    "GOTOSOCIAL",
    "ICESHRIMP",
    "MASTODON",
    "MODERATION_ACTIONS",
    "NOTIFICATION_TYPES",
    "TYPE_NAMES",
    "NotificationType",
    "StatusShown",
    "type_named",
]

StatusShown = Literal["full", "excerpt", "none"]
"""How much of the notification's status is shown: a mention in full, a favourited post as an excerpt."""

Grouping = Literal["post", "target", "none"]
"""When many arrive at once: group by post ("3 people favourited your post"), by the notified account
("3 people followed you"), or never (each keeps its own message)."""

GOTOSOCIAL: Final = "GoToSocial"
MASTODON: Final = "Mastodon"
AKKOMA: Final = "Akkoma/Pleroma"
ICESHRIMP: Final = "Iceshrimp.NET"
_ALL: Final = (GOTOSOCIAL, MASTODON, AKKOMA, ICESHRIMP)


@dataclass(frozen=True)
class NotificationType:
    name: str
    singular: str
    plural: str  # used when several actors are grouped into one message
    status: StatusShown
    about_your_post: bool  # the status is the user's own post (favourited, boosted, reacted to)
    grouping: Grouping
    servers: tuple[str, ...]


def _t(
    name: str,
    singular: str,
    plural: str | None = None,
    *,
    status: StatusShown = "none",
    your_post: bool = False,
    grouping: Grouping = "none",
    servers: tuple[str, ...] = _ALL,
) -> NotificationType:
    return NotificationType(name, singular, plural or singular, status, your_post, grouping, servers)


NOTIFICATION_TYPES: Final[tuple[NotificationType, ...]] = (
    _t("mention", "{actor} mentioned you", status="full"),
    _t("status", "{actor} posted", status="full"),
    _t("reblog", "{actor} boosted your post", status="excerpt", your_post=True, grouping="post"),
    _t("favourite", "{actor} favourited your post", status="excerpt", your_post=True, grouping="post"),
    _t("follow", "{actor} followed you", grouping="target"),
    _t("follow_request", "{actor} asked to follow you", grouping="target"),
    _t(
        "poll",
        "A poll you voted in or created has ended",
        "Polls you voted in or created have ended",
        status="full",
    ),
    _t("update", "{actor} edited a post you interacted with", status="full"),
    _t("admin.sign_up", "New sign-up: {actor}", "New sign-ups: {actor}", grouping="target"),
    _t("admin.report", "New report from {actor}", "New reports from {actor}"),
    _t(
        "pending.favourite",
        "{actor} wants to favourite your post (needs your approval)",
        "{actor} want to favourite your post (needs your approval)",
        status="excerpt",
        your_post=True,
        grouping="post",
        servers=(GOTOSOCIAL,),
    ),
    _t(
        "pending.reply",
        "{actor} replied to your post (the reply needs your approval)",
        "{actor} replied to your post (the replies need your approval)",
        status="full",
        servers=(GOTOSOCIAL,),
    ),
    _t(
        "pending.reblog",
        "{actor} wants to boost your post (needs your approval)",
        "{actor} want to boost your post (needs your approval)",
        status="excerpt",
        your_post=True,
        grouping="post",
        servers=(GOTOSOCIAL,),
    ),
    _t(
        "severed_relationships",
        "A moderation action cut some of your follow relationships with {target_name}",
        servers=(MASTODON,),
    ),
    _t("moderation_warning", "Your instance's moderators sent you a notice: {action}", servers=(MASTODON,)),
    _t("quote", "{actor} quoted your post", status="full", servers=(MASTODON,)),
    _t("quoted_update", "{actor} edited a post that quotes yours", status="full", servers=(MASTODON,)),
    _t("annual_report", "Your annual report for {year} is ready", servers=(MASTODON,)),
    _t("move", "{actor} moved to {target}", servers=(AKKOMA,)),
    # Iceshrimp.NET (NotificationEntity.EncodeType) says "reaction", with the same top-level `emoji` as
    # Akkoma's, or "pleroma:emoji_reaction" to an app that declared itself Pleroma; and "bite".
    _t(
        "pleroma:emoji_reaction",
        "{actor} reacted with {emoji} to your post",
        status="excerpt",
        your_post=True,
        servers=(AKKOMA, ICESHRIMP),
    ),
    _t(
        "reaction",
        "{actor} reacted with {emoji} to your post",
        status="excerpt",
        your_post=True,
        servers=(ICESHRIMP,),
    ),
    _t("bite", "{actor} bit you", grouping="target", servers=(ICESHRIMP,)),
)

TYPE_NAMES: Final[tuple[str, ...]] = tuple(t.name for t in NOTIFICATION_TYPES)
_BY_NAME: Final[Mapping[str, NotificationType]] = {t.name: t for t in NOTIFICATION_TYPES}

FALLBACK_WORDS: Final[Mapping[str, str]] = {
    "actor": "Someone",
    "target": "a new account",
    "emoji": "an emoji",
    "action": "a warning",
    "target_name": "another server",
    "year": "this year",
}

# Mastodon's AccountWarning actions (app/models/account_warning.rb) in words.
MODERATION_ACTIONS: Final[Mapping[str, str]] = {
    "none": "a warning",
    "disable": "your account was disabled",
    "mark_statuses_as_sensitive": "some of your posts were marked as sensitive",
    "delete_statuses": "some of your posts were deleted",
    "sensitive": "your media will be marked as sensitive",
    "silence": "your account was limited",
    "suspend": "your account was suspended",
}


def type_named(name: str | None) -> NotificationType | None:
    """The known type called `name`, or None."""
    return None if name is None else _BY_NAME.get(name)
