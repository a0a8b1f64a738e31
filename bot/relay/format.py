"""Pure formatting: a parsed notification (`models.Notification`) → a Matrix message (plain + HTML).

The parser has checked every field's type and kept only typed fields of a bounded copy; their text is still
the server's: here it is cleaned and escaped, remote HTML is sanitised (in bounded time: see
`sanitize.render_html`), and a notification of an unknown type or without the status its type needs
becomes a generic line ("New notification of type X from …") instead of an error. Formatting never
raises: should rendering fail anyway, the notification becomes the short COULD_NOT_SHOW line (with a
link to the post or account when there is a safe one), so the cursor moves on.
"""

from __future__ import annotations

import html
import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from bot.fediverse.models import FediverseAccount, Notification, Poll, Status
from bot.fediverse.notification_types import FALLBACK_WORDS, MODERATION_ACTIONS, StatusShown, type_named
from bot.relay.sanitize import MAX_HTML_CHARS, clean_line, clean_multiline, render_html, safe_url, truncate
from bot.rich_text import RichText, blockquote, bold, link, spoiler

__all__ = [
    "COULD_NOT_SHOW",
    "Actor",
    "Message",
    "actor_of",
    "could_not_show",
    "format_notification",
    "render_notification",
]

MAX_NAME_CHARS = 100
MAX_ACCT_CHARS = 300
MAX_CW_CHARS = 300
MAX_TYPE_CHARS = 60
MAX_EMOJI_CHARS = 60  # a unicode emoji, or a custom one's :shortcode:
MAX_LABEL_CHARS = 100
FULL_CONTENT_CHARS = 2000
EXCERPT_CHARS = 500
MAX_CONTENT_HTML_BYTES = 12_000  # sanitised HTML above this falls back to the (truncated) plain text
COULD_NOT_SHOW = "Could not show this notification"
CW_HIDDEN = "[content hidden behind a content warning; open the post]"
NO_TEXT = "[no text]"
_LOOKS_LIKE_HTML = re.compile(r"<[A-Za-z/!]")

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Message:
    """One Matrix m.notice: `plain` is the body, `html` the formatted_body.

    `covers` lists the ids of the notifications this message stands for (one, or several when grouped),
    so the caller can advance its cursor only past what was delivered.
    """

    plain: str
    html: str
    covers: tuple[str, ...] = ()


_text = RichText.text


@dataclass(frozen=True)
class Actor:
    """The account behind a notification, cleaned for display. `acct` is "@user@domain" or ""."""

    name: str
    acct: str
    url: str | None

    @property
    def key(self) -> str:
        """What makes two actors the same person (for de-duplication when grouping)."""
        return self.acct or self.url or self.name

    def part(self) -> RichText:
        # A link only when the URL passed `safe_url`; plain text shows just the name.
        shown = _text(self.name) if self.url is None else link(self.url, self.name, plain=self.name)
        if not self.acct or self.acct == self.name:
            return shown
        return shown + _text(f" ({self.acct})")


SOMEONE = Actor("Someone", "", None)


def actor_of(account: FediverseAccount | None, *, instance_display: str) -> Actor:
    """Display form of an account; a local acct ("bob") gets the instance's domain."""
    if account is None:
        return SOMEONE
    display_name = clean_line(account.display_name, MAX_NAME_CHARS)
    username = clean_line(account.username, MAX_NAME_CHARS)
    raw_acct = clean_line(account.acct or username, MAX_ACCT_CHARS).lstrip("@")
    acct = ""
    if raw_acct:
        domain = clean_line(instance_display, MAX_ACCT_CHARS)
        acct = "@" + truncate(
            raw_acct if "@" in raw_acct or not domain else f"{raw_acct}@{domain}", MAX_ACCT_CHARS
        )
    name = display_name or username or acct
    if not name:
        return SOMEONE
    return Actor(name=name, acct=acct, url=safe_url(account.url))


_STATUS_CHARS: dict[StatusShown, int | None] = {
    "full": FULL_CONTENT_CHARS,
    "excerpt": EXCERPT_CHARS,
    "none": None,  # the type carries no status
}
_PLACEHOLDER = re.compile(r"\{([a-z_]+)\}")


def _actors_part(actors: Sequence[Actor]) -> RichText:
    """ "A", "A and B", "A, B and C", "A, B and N others"."""
    if not actors:
        return SOMEONE.part()
    if len(actors) > 3:
        shown = [a.part() for a in actors[:2]]
        return shown[0] + _text(", ") + shown[1] + _text(f" and {len(actors) - 2} others")
    parts = [a.part() for a in actors]
    out = parts[0]
    for i, part in enumerate(parts[1:], start=1):
        out = out + _text(" and " if i == len(parts) - 1 else ", ") + part
    return out


def _fill(template: str, parts: Mapping[str, RichText]) -> RichText:
    """The template with each `{name}` replaced by its part (or its fallback words)."""
    out = _text("")
    last = 0
    for match in _PLACEHOLDER.finditer(template):
        name = match.group(1)
        out = out + _text(template[last : match.start()])
        out = out + parts.get(name, _text(FALLBACK_WORDS.get(name, name)))
        last = match.end()
    return out + _text(template[last:])


def _details(n: Notification, instance_display: str) -> dict[str, RichText]:
    """The parts a type's words may name besides `{actor}` (see `notification_types`), when present."""
    parts: dict[str, RichText] = {}
    if n.target is not None:
        parts["target"] = actor_of(n.target, instance_display=instance_display).part()
    emoji = clean_line(n.emoji, MAX_EMOJI_CHARS)
    if emoji:
        parts["emoji"] = _text(emoji)
    action = clean_line(n.moderation_action, MAX_TYPE_CHARS)
    if action:
        parts["action"] = _text(MODERATION_ACTIONS.get(action, action))
    target_name = clean_line(n.event_target_name, MAX_ACCT_CHARS)
    if target_name:
        parts["target_name"] = _text(target_name)
    year = n.annual_report_year
    if year is not None and 0 < year < 10_000:
        parts["year"] = _text(str(year))
    return parts


def _status_body(status: Status, limit: int, *, with_poll: bool) -> RichText:
    """The post's text (or a content-warning spoiler), attachments and, for polls, the results."""
    content = status.content[:MAX_HTML_CHARS]
    # "Should be HTML, but might also be plaintext in some cases" (swagger): without tags keep its lines.
    rich = render_html(content) if _LOOKS_LIKE_HTML.search(content) else None
    text = rich.plain if rich is not None else clean_multiline(html.unescape(content)).strip()
    if len(text) > limit:
        body = _text(truncate(text, limit))
    elif rich is None or len(rich.html.encode("utf-8", "replace")) > MAX_CONTENT_HTML_BYTES:
        body = _text(text)
    else:
        body = RichText(text, rich.html)  # sanitised by `render_html`

    extras: list[RichText] = []
    media = status.media_count
    if media:
        extras.append(_text(f"[{media} attachment{'s' if media != 1 else ''}]"))
    if with_poll and status.poll is not None:
        extras.extend(_poll_lines(status.poll))
    if extras:
        body = RichText.lines([body, *extras]) if body.plain else RichText.lines(extras)
    if not body.plain:
        body = _text(NO_TEXT)

    cw = clean_line(status.spoiler_text, MAX_CW_CHARS)
    if cw:
        return RichText.lines([bold("CW:") + _text(f" {cw}"), spoiler(cw, body, plain=CW_HIDDEN)])
    return body


def _poll_lines(poll: Poll) -> list[RichText]:
    lines: list[RichText] = []
    for option in poll.options:
        title = clean_line(option.title, 200) or "?"
        votes = option.votes_count
        if votes is not None:
            lines.append(_text(f"• {title}: {votes} vote{'s' if votes != 1 else ''}"))
        else:
            lines.append(_text(f"• {title}"))
    return lines


def _report_target(n: Notification, instance_display: str) -> RichText | None:
    if n.report_target is None:
        return None
    return _text(" about ") + actor_of(n.report_target, instance_display=instance_display).part()


def _generic(n_type: str | None, actors: RichText) -> RichText:
    shown_type = clean_line(n_type or "", MAX_TYPE_CHARS)
    if shown_type:
        return _text(f"New notification of type {shown_type} from ") + actors
    return _text("New notification from ") + actors


def render_notification(
    n: Notification,
    actors: Sequence[Actor],
    *,
    instance_display: str,
    account_label: str | None = None,
    covers: tuple[str, ...] = (),
) -> Message:
    """Render `n` (its type and status) as said by `actors` (several when grouped). Never raises.

    `account_label`, when given, prefixes the message ("[bob@example.org] …") so a user with several
    connected accounts can tell them apart.
    """
    try:
        return _render(
            n, actors, instance_display=instance_display, account_label=account_label, covers=covers
        )
    except Exception as exc:  # a parser bug or a shape nobody foresaw: one short line, never a stall
        log.warning("a notification could not be formatted (%s); relaying a short line", type(exc).__name__)
        return could_not_show(n, covers)


def could_not_show(n: Notification, covers: tuple[str, ...] = ()) -> Message:
    """The short line that stands for a notification that cannot be rendered: link to post or account."""
    url: str | None = None
    try:
        if n.status is not None:
            url = safe_url(n.status.url) or safe_url(n.status.uri)
        if url is None:
            url = safe_url(n.account.url)
    except Exception:  # noqa: S110 - the line without a link is the fallback of the fallback
        pass
    if url is None:
        return Message(f"{COULD_NOT_SHOW}.", f"{COULD_NOT_SHOW}.", covers)
    line = _text(f"{COULD_NOT_SHOW} (") + link(url) + _text(").")
    return Message(line.plain, line.html, covers)


def _render(
    n: Notification,
    actors: Sequence[Actor],
    *,
    instance_display: str,
    account_label: str | None,
    covers: tuple[str, ...],
) -> Message:
    n_type = n.type
    kind = type_named(n_type)
    content_chars = _STATUS_CHARS[kind.status] if kind is not None else None
    status = n.status
    who = _actors_part(actors)

    body: RichText | None = None
    post_url: str | None = None
    if kind is None or (content_chars is not None and status is None):
        line = _generic(n_type, who)
    else:
        parts = {**_details(n, instance_display), "actor": who}
        line = _fill(kind.singular if len(actors) <= 1 else kind.plural, parts)
        if n_type == "admin.report" and len(actors) <= 1:
            target = _report_target(n, instance_display)
            if target is not None:
                line = line + target
        if n_type == "status" and status is not None and status.reblog is not None:
            # The followed account boosted something: show the boosted post and its author.
            status = status.reblog
            author = actor_of(status.account, instance_display=instance_display)
            line = _fill("{actor} boosted a post by ", {"actor": who}) + author.part()
        if content_chars is not None and status is not None:
            body = _status_body(status, content_chars, with_poll=n_type == "poll")
            post_url = safe_url(status.url) or safe_url(status.uri)

    if account_label:
        line = _text(f"[{clean_line(account_label, MAX_LABEL_CHARS)}] ") + line
    if body is not None:
        line = line + _text(":") + blockquote(body)
    if post_url is not None:
        line = line + RichText("\n", "") + link(post_url, "Open post", plain=post_url)
    return Message(plain=line.plain, html=line.html, covers=covers)


def format_notification(
    n: Notification, *, instance_display: str, account_label: str | None = None
) -> Message:
    """One notification → one message. Never raises."""
    try:
        actor = actor_of(n.account, instance_display=instance_display)
    except Exception as exc:
        log.warning("a notification could not be formatted (%s); relaying a short line", type(exc).__name__)
        return could_not_show(n, (n.id,))
    return render_notification(
        n, [actor], instance_display=instance_display, account_label=account_label, covers=(n.id,)
    )
