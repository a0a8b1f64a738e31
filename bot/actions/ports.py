"""The fediverse calls the action service makes, as protocols (`FediverseActions` and the client's
`verify_credentials` fill them; tests can pass a recording fake)."""

from __future__ import annotations

from typing import Protocol

from bot.fediverse.instance import InstanceRef
from bot.fediverse.models import FediverseAccount, PostedStatus, Status
from bot.fediverse.replies import StatusDraft

__all__ = ["Credentials", "FediverseWriter"]


class FediverseWriter(Protocol):
    """The fediverse calls actions make (`FediverseActions`, and `verify_credentials` of the client)."""

    async def get_status(self, instance: InstanceRef, token: str, status_id: str) -> Status: ...

    async def post_status(
        self, instance: InstanceRef, token: str, draft: StatusDraft, *, idempotency_key: str
    ) -> PostedStatus: ...

    async def recent_own_statuses(
        self, instance: InstanceRef, token: str, account_id: str, *, limit: int
    ) -> list[Status]: ...

    async def favourite(self, instance: InstanceRef, token: str, status_id: str) -> None: ...

    async def unfavourite(self, instance: InstanceRef, token: str, status_id: str) -> None: ...

    async def reblog(self, instance: InstanceRef, token: str, status_id: str) -> None: ...

    async def unreblog(self, instance: InstanceRef, token: str, status_id: str) -> None: ...

    async def authorize_follow_request(self, instance: InstanceRef, token: str, account_id: str) -> None: ...

    async def reject_follow_request(self, instance: InstanceRef, token: str, account_id: str) -> None: ...


class Credentials(Protocol):
    async def verify_credentials(self, instance: InstanceRef, token: str) -> FediverseAccount: ...
