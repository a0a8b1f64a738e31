"""What a relayed notification offers to act on, for the event map. Pure."""

from __future__ import annotations

from bot.fediverse.models import Notification
from bot.store.event_map import RelayedTarget
from bot.store.records import AccountId

__all__ = ["target_of"]


def target_of(account_id: AccountId, notification: Notification) -> RelayedTarget:
    """The event-map target of a message showing only `notification`: its status (reply, favourite,
    boost) and, for a follow request, the account asking (authorize, reject)."""
    status = notification.status
    requester = notification.account.id if notification.type == "follow_request" else None
    return RelayedTarget(
        account_id=account_id,
        notification_id=notification.id,
        notification_type=notification.type,
        status_id=None if status is None else status.id,
        requester_account_id=requester,
    )
