from __future__ import annotations

from typing import Any

import pytest

from bot.fediverse.models import parse_notification
from bot.relay.format import format_notification
from bot.relay.grouping import Pending, group_notifications, pack_messages

INSTANCE = "example.org"
POST_A = "https://example.org/@me/statuses/A"
POST_B = "https://example.org/@me/statuses/B"


def acc(name: str, domain: str = "remote.example") -> dict[str, Any]:
    return {
        "id": f"acc-{name.lower()}",
        "username": name.lower(),
        "acct": f"{name.lower()}@{domain}",
        "display_name": name,
        "url": f"https://{domain}/@{name.lower()}",
    }


def st(post: str, text: str = "my post") -> dict[str, Any]:
    return {"id": post, "content": f"<p>{text}</p>", "url": f"https://example.org/@me/statuses/{post}"}


_counter = iter(range(10_000))


def n(n_type: str, who: str, post: str | None = None, **over: Any) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": f"01N{next(_counter):04d}",
        "type": n_type,
        "created_at": "2026-12-01T10:00:00.000Z",
        "account": acc(who),
    }
    if post is not None:
        out["status"] = st(post)
    out.update(over)
    return out


def pend(*ns: dict[str, Any], label: str | None = None, instance: str = INSTANCE) -> list[Pending]:
    return [Pending(parse_notification(x), instance, label) for x in ns]


def names(*who: str) -> list[str]:
    return [f"{w} (@{w.lower()}@remote.example)" for w in who]


def plains(items: list[Pending]) -> list[str]:
    return [m.plain for m in group_notifications(items)]


def assert_all_covered(items: list[Pending]) -> None:
    covered = [i for m in group_notifications(items) for i in m.covers]
    assert sorted(covered) == sorted(p.id for p in items)


@pytest.mark.parametrize(
    ("who", "expected_who"),
    [
        (["Bob", "Carol"], "{0} and {1}"),
        (["Bob", "Carol", "Dave"], "{0}, {1} and {2}"),
        (["Bob", "Carol", "Dave", "Eve"], "{0}, {1} and 2 others"),
        (["Bob", "Carol", "Dave", "Eve", "Fay"], "{0}, {1} and 3 others"),
    ],
)
def test_favourites_of_one_post_collapse(who: list[str], expected_who: str) -> None:
    items = pend(*(n("favourite", w, "A") for w in who))
    shown = expected_who.format(*names(*who))
    assert plains(items) == [f"{shown} favourited your post:\nmy post\n{POST_A}"]
    assert_all_covered(items)


@pytest.mark.parametrize(
    ("n_type", "verb"),
    [
        ("follow", "followed you"),
        ("follow_request", "asked to follow you"),
    ],
)
def test_follows_collapse(n_type: str, verb: str) -> None:
    items = pend(*(n(n_type, w) for w in ["Bob", "Carol", "Dave", "Eve", "Fay"]))
    bob, carol = names("Bob", "Carol")
    assert plains(items) == [f"{bob}, {carol} and 3 others {verb}"]
    assert_all_covered(items)


def test_sign_ups_collapse_with_plural_wording() -> None:
    items = pend(n("admin.sign_up", "Bob"), n("admin.sign_up", "Carol"))
    assert plains(items) == ["New sign-ups: {} and {}".format(*names("Bob", "Carol"))]


def test_pending_favourites_use_plural_verb() -> None:
    items = pend(n("pending.favourite", "Bob", "A"), n("pending.favourite", "Carol", "A"))
    assert plains(items) == [
        "{} and {} want to favourite your post (needs your approval):\nmy post\n".format(
            *names("Bob", "Carol")
        )
        + POST_A
    ]


def test_different_posts_and_types_stay_apart_in_first_appearance_order() -> None:
    items = pend(
        n("favourite", "Bob", "A"),
        n("reblog", "Carol", "A"),
        n("favourite", "Dave", "B"),
        n("favourite", "Eve", "A"),
        n("follow", "Fay"),
        n("reblog", "Gus", "A"),
    )
    bob, carol, dave, eve, fay, gus = names("Bob", "Carol", "Dave", "Eve", "Fay", "Gus")
    assert plains(items) == [
        f"{bob} and {eve} favourited your post:\nmy post\n{POST_A}",
        f"{carol} and {gus} boosted your post:\nmy post\n{POST_A}",
        f"{dave} favourited your post:\nmy post\n{POST_B}",
        f"{fay} followed you",
    ]
    assert [m.covers for m in group_notifications(items)] == [
        (items[0].id, items[3].id),
        (items[1].id, items[5].id),
        (items[2].id,),
        (items[4].id,),
    ]


def test_mentions_are_never_merged() -> None:
    items = pend(
        n("mention", "Bob", "M1", status={**st("M1", "first question"), "id": "M1"}),
        n("mention", "Bob", "M2", status={**st("M2", "second question"), "id": "M2"}),
        n("mention", "Carol", "M1", status={**st("M1", "third"), "id": "M1"}),
    )
    messages = group_notifications(items)
    assert len(messages) == 3
    for item, message in zip(items, messages, strict=True):
        assert message == format_notification(item.notification, instance_display=INSTANCE)
    assert [m.plain.split("\n")[1] for m in messages] == ["first question", "second question", "third"]


def test_single_item_group_equals_plain_format() -> None:
    item = pend(n("favourite", "Bob", "A"), label="me@example.org")[0]
    assert group_notifications([item]) == [
        format_notification(item.notification, instance_display=INSTANCE, account_label="me@example.org")
    ]


def test_same_actor_twice_is_named_once_but_both_covered() -> None:
    items = pend(n("follow", "Bob"), n("follow", "Bob"))
    messages = group_notifications(items)
    assert [m.plain for m in messages] == [f"{names('Bob')[0]} followed you"]
    assert messages[0].covers == (items[0].id, items[1].id)


def test_accounts_are_never_mixed() -> None:
    items = [
        *pend(n("follow", "Bob"), label="me@example.org"),
        *pend(n("follow", "Carol"), label="work@other.example", instance="other.example"),
        *pend(n("follow", "Dave"), label="me@example.org"),
    ]
    bob, carol, dave = names("Bob", "Carol", "Dave")
    assert plains(items) == [
        f"[me@example.org] {bob} and {dave} followed you",
        f"[work@other.example] {carol} followed you",
    ]
    assert_all_covered(items)


def test_local_accts_use_each_items_instance() -> None:
    local = {"id": "z", "username": "zed", "acct": "zed", "display_name": "Zed"}
    items = [
        *pend(n("follow", "Zed", account=local), label="a", instance="one.example"),
        *pend(n("follow", "Zed", account=local), label="b", instance="two.example"),
    ]
    assert plains(items) == [
        "[a] Zed (@zed@one.example) followed you",
        "[b] Zed (@zed@two.example) followed you",
    ]


def test_grouped_html_is_escaped() -> None:
    evil = {"id": "e", "display_name": "<script>x</script>", "acct": "e@x.example", "username": "e"}
    items = pend(n("favourite", "Bob", "A"), n("favourite", "Carol", "A", account=evil))
    [message] = group_notifications(items)
    assert "<script>" not in message.html
    assert "&lt;script&gt;x&lt;/script&gt; (@e@x.example) favourited your post:" in message.html
    assert '<a href="https://remote.example/@bob">Bob</a> (@bob@remote.example) and ' in message.html


def test_big_burst_is_grouped_and_fully_covered() -> None:
    items = pend(
        *(n("favourite", f"Fan{i}", "A") for i in range(200)),
        *(n("follow", f"Follower{i}") for i in range(100)),
        n("mention", "Bob", "M"),
    )
    messages = group_notifications(items)
    assert len(messages) == 3
    assert messages[0].plain.startswith(
        "Fan0 (@fan0@remote.example), Fan1 (@fan1@remote.example) and 198 others"
    )
    assert_all_covered(items)


def test_pack_joins_in_order_within_budget() -> None:
    messages = group_notifications(pend(*(n("mention", f"P{i}", f"S{i}") for i in range(5))))
    packed = pack_messages(messages, max_bytes=10_000)
    assert len(packed) == 1
    assert packed[0].covers == tuple(c for m in messages for c in m.covers)
    assert packed[0].plain == "\n\n".join(m.plain for m in messages)
    assert packed[0].html == "<hr>".join(m.html for m in messages)


def test_pack_respects_budget_and_never_cuts() -> None:
    messages = group_notifications(pend(*(n("mention", f"P{i}", f"S{i}") for i in range(6))))
    one = len(messages[0].plain.encode()) + len(messages[0].html.encode())
    packed = pack_messages(messages, max_bytes=one * 2 + 10)
    assert [len(m.covers) for m in packed] == [2, 2, 2]
    assert "".join(m.plain for m in packed).count("mentioned you") == 6
    assert pack_messages(messages, max_bytes=1) == messages
    assert pack_messages([]) == []
