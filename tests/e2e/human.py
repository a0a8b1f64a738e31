"""A person on the other side of the bot: a plain matrix-nio client with its own E2EE store."""

from __future__ import annotations

import secrets
import time
from pathlib import Path
from typing import Any

import nio

from tests.e2e.synapse import Synapse
from tests.waiting import wait_for_value

MEGOLM = "m.megolm.v1.aes-sha2"


def _ok(resp: Any) -> Any:
    assert not isinstance(resp, nio.ErrorResponse), f"request failed: {resp}"
    return resp


class Human:
    def __init__(self, synapse: Synapse, user_id: str, password: str, client: Any) -> None:
        self.synapse = synapse
        self.user_id = user_id
        self.password = password
        self.client = client
        self._timeline: list[tuple[str, Any]] = []  # (room_id, nio event), everything synced so far
        self._invites: list[str] = []

    @classmethod
    async def create(cls, synapse: Synapse, store_dir: Path, name: str = "human") -> Human:
        localpart = f"{name}-{secrets.token_hex(4)}"
        password = secrets.token_hex(12)
        user_id = await synapse.create_account(localpart, password)
        store_dir.mkdir(parents=True, exist_ok=True)
        config = nio.AsyncClientConfig(encryption_enabled=True, store_sync_tokens=False)
        client = nio.AsyncClient(synapse.base_url, user_id, store_path=str(store_dir), config=config)
        human = cls(synapse, user_id, password, client)
        _ok(await client.login(password, device_name=name))
        await human.sync(0)
        return human

    @property
    def access_token(self) -> str:
        token: str = self.client.access_token
        return token

    async def close(self) -> None:
        await self.client.close()

    async def sync(self, timeout_ms: int = 1000) -> None:
        """One sync plus the key housekeeping a real client does."""
        c = self.client
        resp = _ok(await c.sync(timeout=timeout_ms, sync_filter={"room": {"timeline": {"limit": 100}}}))
        for room_id, info in resp.rooms.join.items():
            self._timeline.extend((room_id, event) for event in info.timeline.events)
        self._invites.extend(resp.rooms.invite)
        if c.should_upload_keys:
            _ok(await c.keys_upload())
        if c.should_query_keys:
            _ok(await c.keys_query())
        if c.should_claim_keys:
            _ok(await c.keys_claim(c.get_users_for_key_claiming()))
        await c.send_to_device_messages()

    async def _sync_until(self, what: str, check: Any, timeout: float) -> Any:
        async def synced_check() -> Any:
            found = check()
            if found is None:
                await self.sync(500)
            return found

        return await wait_for_value(synced_check, what=f"{self.user_id}: {what}", timeout=timeout, interval=0)

    # ---- rooms ----

    async def create_dm(self, other: str, *, encrypted: bool = True) -> str:
        initial_state = [{"type": "m.room.encryption", "state_key": "", "content": {"algorithm": MEGOLM}}]
        resp = _ok(
            await self.client.room_create(
                is_direct=True,
                invite=[other],
                preset=nio.RoomPreset.trusted_private_chat,
                initial_state=initial_state if encrypted else [],
            )
        )
        room_id: str = resp.room_id
        await self.wait_room(room_id)
        return room_id

    async def create_room(self, invite: list[str], *, encrypted: bool = False) -> str:
        initial_state = [{"type": "m.room.encryption", "state_key": "", "content": {"algorithm": MEGOLM}}]
        resp = _ok(
            await self.client.room_create(
                invite=invite,
                preset=nio.RoomPreset.private_chat,
                initial_state=initial_state if encrypted else [],
            )
        )
        room_id: str = resp.room_id
        await self.wait_room(room_id)
        return room_id

    async def wait_room(self, room_id: str, timeout: float = 60.0) -> None:
        await self._sync_until(f"room {room_id}", lambda: self.client.rooms.get(room_id), timeout)

    async def wait_member(self, room_id: str, user_id: str, timeout: float = 60.0) -> None:
        """Until `user_id` has joined `room_id` (as this client sees it)."""

        def joined() -> bool | None:
            room = self.client.rooms.get(room_id)
            user = room.users.get(user_id) if room is not None else None
            return True if user is not None and not user.invited else None

        await self._sync_until(f"{user_id} to join {room_id}", joined, timeout)

    async def wait_invite(self, timeout: float = 60.0) -> str:
        room_id: str = await self._sync_until(
            "an invite", lambda: self._invites.pop(0) if self._invites else None, timeout
        )
        return room_id

    async def accept_invite(self, timeout: float = 60.0) -> str:
        room_id = await self.wait_invite(timeout)
        _ok(await self.client.join(room_id))
        await self.wait_room(room_id)
        return room_id

    async def invite(self, room_id: str, user_id: str) -> None:
        _ok(await self.client.room_invite(room_id, user_id))

    async def join(self, room_id: str) -> None:
        _ok(await self.client.join(room_id))

    async def set_power(self, room_id: str, user_id: str, level: int) -> None:
        resp = _ok(await self.client.room_get_state_event(room_id, "m.room.power_levels"))
        content = dict(resp.content)
        content["users"] = {**content.get("users", {}), user_id: level}
        _ok(await self.client.room_put_state(room_id, "m.room.power_levels", content))

    # ---- messages ----

    async def send_text(self, room_id: str, body: str) -> str:
        await self.wait_room(room_id)
        resp = _ok(
            await self.client.room_send(
                room_id, "m.room.message", {"msgtype": "m.text", "body": body}, ignore_unverified_devices=True
            )
        )
        event_id: str = resp.event_id
        return event_id

    async def reply(self, room_id: str, event_id: str, body: str, *, quoted: str = "") -> str:
        """A Matrix reply (m.in_reply_to) to `event_id`, with the classic quoted fallback in its body."""
        await self.wait_room(room_id)
        content = {
            "msgtype": "m.text",
            "body": f"> <{self.user_id}> {quoted}\n\n{body}" if quoted else body,
            "m.relates_to": {"m.in_reply_to": {"event_id": event_id}},
        }
        resp = _ok(
            await self.client.room_send(room_id, "m.room.message", content, ignore_unverified_devices=True)
        )
        sent: str = resp.event_id
        return sent

    async def react(self, room_id: str, event_id: str, key: str, *, encrypted: bool = False) -> str:
        """An m.reaction annotation. nio sends reactions in the clear; `encrypted` does what Element does:
        Megolm-encrypts it (the relation stays visible to the server)."""
        await self.wait_room(room_id)
        content = {"m.relates_to": {"rel_type": "m.annotation", "event_id": event_id, "key": key}}
        if not encrypted:
            resp = _ok(
                await self.client.room_send(room_id, "m.reaction", content, ignore_unverified_devices=True)
            )
        else:
            c = self.client
            if c.olm.should_share_group_session(room_id):
                _ok(await c.share_group_session(room_id, ignore_unverified_devices=True))
            event_type, sealed = c.encrypt(room_id, "m.reaction", content)
            method, path, data = nio.Api.room_send(
                c.access_token, room_id, event_type, sealed, secrets.token_hex(8)
            )
            resp = _ok(await c._send(nio.RoomSendResponse, method, path, data, (room_id,)))
        sent: str = resp.event_id
        return sent

    async def redact(self, room_id: str, event_id: str) -> str:
        resp = _ok(await self.client.room_redact(room_id, event_id))
        sent: str = resp.event_id
        return sent

    async def send_undecryptable(self, room_id: str, body: str) -> str:
        """An encrypted message whose room key is never shared: a fresh Megolm session marked as shared."""
        await self.wait_room(room_id)
        olm = self.client.olm
        olm.create_outbound_group_session(room_id)
        olm.outbound_group_sessions[room_id].shared = True  # nio now encrypts without sending the key
        return await self.send_text(room_id, body)

    async def wait_message(self, room_id: str, sender: str, timeout: float = 60.0) -> Any:
        """The next m.room.message (decrypted when possible) or undecryptable event from `sender`."""

        def pop() -> Any:
            for i, (rid, event) in enumerate(self._timeline):
                is_message = isinstance(event, (nio.RoomMessage, nio.MegolmEvent))
                if rid == room_id and is_message and event.sender == sender:
                    del self._timeline[i]
                    return event
            return None

        return await self._sync_until(f"a message from {sender} in {room_id}", pop, timeout)

    async def messages_from(self, room_id: str, sender: str, count: int, timeout: float = 60.0) -> list[Any]:
        return [await self.wait_message(room_id, sender, timeout) for _ in range(count)]

    async def no_more_messages(self, room_id: str, sender: str, wait: float = 1.5) -> bool:
        """Sync for `wait` seconds; True if no message from `sender` arrived in the room meanwhile.

        Only for the demo's narration ("3 seconds pass: nothing arrives"). A test must not prove an
        absence this way: it waits for a later, distinct message and checks nothing came before it."""
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            await self.sync(200)
        return not any(
            rid == room_id and isinstance(e, nio.RoomMessage) and e.sender == sender
            for rid, e in self._timeline
        )
