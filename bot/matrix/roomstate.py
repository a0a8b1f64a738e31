"""A room's state straight from the server, and nio's room object filled from it before a send."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import nio

from bot.matrix.nio_client import call
from bot.matrix.types import RoomId


async def room_state(client: Any, room_id: RoomId) -> list[Mapping[str, Any]]:
    resp = await call("room state", client.room_get_state(room_id))
    events: list[Mapping[str, Any]] = [e for e in resp.events if isinstance(e, Mapping)]
    return events


async def room_for_send(client: Any, room_id: RoomId) -> Any:
    """nio's room object with members (joined AND invited) fresh from the server on first use.

    nio alone would ask for joined members only, and a sync can show a new room before its invites
    exist; either way the room key of a DM's first message would miss the invited user.
    """
    room = client.rooms.get(room_id)
    if room is not None and room.members_synced:
        return room
    state = await room_state(client, room_id)
    room = client.rooms.get(room_id)  # the sync may have brought it meanwhile
    if room is None:
        room = nio.MatrixRoom(room_id, client.user_id)
        client.rooms[room_id] = room
    for source in state:
        event = nio.Event.parse_event(dict(source))
        if isinstance(event, nio.RoomMemberEvent):
            room.handle_membership(event)
        elif not isinstance(event, (nio.BadEvent, nio.UnknownBadEvent)):
            room.handle_event(event)
    room.members_synced = True
    if room.encrypted:
        client.encrypted_rooms.add(room_id)
        if client.store is not None:
            client.store.save_encrypted_rooms({room_id})
        if client.olm is not None:
            client.olm.update_tracked_users(room)
    return room
