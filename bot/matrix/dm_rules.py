"""Direct-chat rules, as pure functions over room state (lists of event dicts).

The homeserver does not write `m.direct` account data for the bot, so the bot keeps its own record of which
room is the DM with whom; these functions answer "is this room really 1:1 with that user right now?" from
state the adapter fetched from the server.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

MEGOLM = "m.megolm.v1.aes-sha2"


def dm_create_args(user_id: str, *, encrypted: bool) -> dict[str, Any]:
    """Keyword arguments for createRoom: a private direct chat with `user_id` (encrypted when asked).

    History is visible from the invite on, not "shared" as the trusted_private_chat preset makes it:
    whoever is invited later (the DM then stops being private anyway) sees nothing said before.
    """
    initial_state: list[dict[str, Any]] = [
        {"type": "m.room.history_visibility", "state_key": "", "content": {"history_visibility": "invited"}}
    ]
    if encrypted:
        initial_state.append({"type": "m.room.encryption", "state_key": "", "content": {"algorithm": MEGOLM}})
    return {"is_direct": True, "invite": [user_id], "initial_state": initial_state}


def current_members(state: Iterable[Mapping[str, Any]]) -> set[str]:
    """Users whose membership in the given room state is join or invite."""
    members: set[str] = set()
    for event in state:
        if event.get("type") != "m.room.member":
            continue
        content = event.get("content")
        state_key = event.get("state_key")
        if (
            isinstance(content, Mapping)
            and isinstance(state_key, str)
            and content.get("membership") in ("join", "invite")
        ):
            members.add(state_key)
    return members


def is_one_to_one(members: set[str], bot: str, user: str) -> bool:
    """True when the joined+invited members are exactly the bot and the user."""
    return bot != user and members == {bot, user}


def _state_content(
    state: Iterable[Mapping[str, Any]], event_type: str
) -> tuple[Mapping[str, Any], str | None]:
    for event in state:
        if event.get("type") == event_type and event.get("state_key") == "":
            content = event.get("content")
            sender = event.get("sender")
            return (content if isinstance(content, Mapping) else {}), (
                sender if isinstance(sender, str) else None
            )
    return {}, None


def is_private_dm(state: Iterable[Mapping[str, Any]], bot: str, user: str) -> bool:
    """Whether a room (by its full state) is a private direct chat between the bot and `user`.

    Exactly the two as joined or invited members is not enough: a third person could have made a public
    or world-readable room, invited both, and left, and would read everything sent there. So the room
    must also have been created by the bot or the user, be invite-only, and not be world-readable.
    """
    events = list(state)
    if not is_one_to_one(current_members(events), bot, user):
        return False
    _, creator = _state_content(events, "m.room.create")
    if creator not in (bot, user) or not room_creators(events) <= {bot, user}:
        return False
    join_rules, _ = _state_content(events, "m.room.join_rules")
    history, _ = _state_content(events, "m.room.history_visibility")
    return join_rules.get("join_rule") == "invite" and history.get("history_visibility") != "world_readable"


def room_creators(state: Iterable[Mapping[str, Any]]) -> set[str]:
    """Creators with infinite power in room version 12+ (sender of m.room.create + additional_creators)."""
    for event in state:
        if event.get("type") == "m.room.create" and event.get("state_key") == "":
            content = event.get("content")
            content = content if isinstance(content, Mapping) else {}
            version = content.get("room_version", "1")
            if not (isinstance(version, str) and version.isdigit() and int(version) >= 12):
                return set()
            creators = {event["sender"]} if isinstance(event.get("sender"), str) else set()
            extra = content.get("additional_creators")
            if isinstance(extra, list):
                creators.update(c for c in extra if isinstance(c, str))
            return creators
    return set()
