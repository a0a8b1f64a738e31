"""Reply composition, pure: what a fediverse client would post when you answer a status, and Matrix text
reduced to the plain text a server accepts.

- `compose_reply` mentions the author first, then the other accounts the status mentions, as Mastodon's
  web client does (`compose` reducer, `mentions` of a reply): never yourself, never twice, and not again
  when the text already starts with them. The visibility is never wider than the original's, and the
  content warning is carried over unchanged.
- `Visibility` orders the four standard visibilities. A visibility the bot does not know (GoToSocial's
  `mutuals_only`, Akkoma's `local`, `list`) maps to `direct`: the one choice that can never be wider.
- `matrix_body_to_status_text` drops a Matrix reply fallback (the `> <@user:server> …` quote lines of the
  body, the `<mx-reply>` block of the HTML) and reduces HTML to plain text.
"""

from __future__ import annotations

import enum
import html
import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from bot.fediverse.models import Status
from bot.relay.sanitize import html_to_text

__all__ = [
    "StatusDraft",
    "Visibility",
    "compose_reply",
    "matrix_body_to_status_text",
    "narrowest",
]


class Visibility(enum.IntEnum):
    """Mastodon's four visibilities, ordered: a larger value reaches more people."""

    DIRECT = 0
    PRIVATE = 1
    UNLISTED = 2
    PUBLIC = 3

    @property
    def api_name(self) -> str:
        return self.name.lower()

    @classmethod
    def parse(cls, value: str | None) -> Visibility:
        """The server's word for a visibility; unknown words are `DIRECT` (never wider than meant)."""
        try:
            return cls[(value or "").upper()]
        except KeyError:
            return cls.DIRECT

    @classmethod
    def from_word(cls, value: str) -> Visibility | None:
        """What a user typed (`public`, `unlisted`, `private`, `direct`), or None if it is not one."""
        try:
            return cls[value.strip().upper()]
        except KeyError:
            return None


def narrowest(*choices: Visibility) -> Visibility:
    return min(choices)


@dataclass(frozen=True)
class StatusDraft:
    """What `POST /api/v1/statuses` gets: plain text, and the reply, visibility and CW fields."""

    text: str
    in_reply_to_id: str | None = None
    visibility: Visibility | None = None  # None: the account's default (the server decides)
    spoiler_text: str = ""


def _same_account(acct: str, own_acct: str) -> bool:
    """`acct` as the own server writes it ("alice" for a local account) against our full `alice@domain`."""
    acct, own = acct.lower().lstrip("@"), own_acct.lower().lstrip("@")
    if "@" in acct:
        return acct == own
    return acct == own.split("@", 1)[0]


def reply_mentions(original: Status, own_acct: str) -> list[str]:
    """The accounts a reply mentions: the author, then the status's mentions; not you, no duplicates."""
    candidates: list[str] = []
    if original.account is not None:
        candidates.append(original.account.acct)
    candidates.extend(original.mentions)
    seen: set[str] = set()
    out: list[str] = []
    for acct in candidates:
        key = acct.lower().lstrip("@")
        if not key or key in seen or _same_account(key, own_acct):
            continue
        seen.add(key)
        out.append(acct.lstrip("@"))
    return out


_LEADING_MENTION = re.compile(r"@([A-Za-z0-9_.-]+(?:@[A-Za-z0-9.-]+)?)\s*")


def _mentioned_at_start(text: str) -> set[str]:
    found: set[str] = set()
    position = 0
    while match := _LEADING_MENTION.match(text, position):
        found.add(match.group(1).lower())
        position = match.end()
    return found


def compose_reply(
    original: Status, own_acct: str, text: str, *, visibility: Visibility | None = None
) -> StatusDraft:
    """The draft of a reply to `original` by `own_acct` (full `user@domain`) saying `text`.

    `visibility` is what the user asked for, or their default (`source.privacy`): Mastodon's own client
    replies with the narrower of the default and the original's, and so does this. A boost is answered
    by replying to the boosted post.
    """
    original = original.reblog or original
    already = _mentioned_at_start(text)
    prefix = [f"@{acct}" for acct in reply_mentions(original, own_acct) if acct.lower() not in already]
    body = text.strip()
    full = " ".join([*prefix, body]) if body else " ".join(prefix)
    chosen = Visibility.parse(original.visibility)
    if visibility is not None:
        chosen = narrowest(chosen, visibility)
    return StatusDraft(
        text=full,
        in_reply_to_id=original.id,
        visibility=chosen,
        spoiler_text=original.spoiler_text,
    )


# The reply fallback of the Matrix spec (removed from the spec in v1.13, still sent by many clients).
_MX_REPLY = re.compile(r"<mx-reply>.*?</mx-reply>", re.DOTALL | re.IGNORECASE)
_MAX_BODY_CHARS = 65_536


def _strip_fallback_lines(body: str) -> str:
    lines = body.split("\n")
    if not lines or not lines[0].startswith("> <"):
        return body
    index = 0
    while index < len(lines) and lines[index].startswith(">"):
        index += 1
    if index < len(lines) and lines[index].strip() == "":
        index += 1
    return "\n".join(lines[index:])


# A link whose text is plain (what Matrix clients make of a Markdown link): its address is kept in the
# text, since the post is plain text. Each attempt stops at the next "<", so the match is linear.
_PLAIN_LINK = re.compile(r'<a\b[^<>]*\bhref="(https?://[^"<>]*)"[^<>]*>([^<]*)</a>', re.IGNORECASE)


def _keep_link_address(match: re.Match[str]) -> str:
    href, label = match.group(1), match.group(2)
    address = html.unescape(href)
    if urlsplit(address).hostname == "matrix.to" or html.unescape(label).strip() in ("", address):
        return label  # a pill or a bare link: its text says it all
    return f"{label} ({href})"


def matrix_body_to_status_text(body: str, formatted_body: str | None) -> str:
    """The plain text to post for a Matrix message: reply fallback removed, HTML reduced to text (a
    link keeps its address after its text)."""
    if formatted_body:
        without_fallback = _MX_REPLY.sub("", formatted_body[:_MAX_BODY_CHARS], count=1)
        text = html_to_text(_PLAIN_LINK.sub(_keep_link_address, without_fallback))
    else:
        text = _strip_fallback_lines(body[:_MAX_BODY_CHARS])
    return text.strip()
