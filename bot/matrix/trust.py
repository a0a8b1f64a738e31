"""Which devices of other users get the bot's room keys.

The bot has nobody to compare emoji with, so interactive verification is impossible. Two policies:

- ``tofu`` (default, "trust on first use"): every device of a room member that the bot sees and that is not
  blacklisted is marked *verified* in the bot's E2EE store the first time the bot sees it, and the bot logs
  that it did so. A device added later by the same user is trusted the same way when it first shows up.
  What TOFU buys: once the bot has recorded a device's identity keys, matrix-nio refuses a later key query
  that claims different Ed25519 keys for the same device id, so a homeserver cannot silently swap the keys
  of a device the bot already knows. Blacklisted devices (by an operator, through nio's store) never get keys.
- ``all``: devices are not marked verified; keys go to every device that is not blacklisted
  (nio's ``ignore_unverified_devices=True``), and nothing is recorded.

Under both policies the adapter sends with ``ignore_unverified_devices=True`` after applying the policy, so
``room_send`` in an encrypted room never raises ``OlmUnverifiedDeviceError`` (a device that appears between
the trust pass and the send is marked "ignored" by nio and trusted at the next pass).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from bot.matrix.types import TrustPolicy

log = logging.getLogger(__name__)


def apply_trust(client: Any, user_ids: Iterable[str], policy: TrustPolicy) -> int:
    """Apply `policy` to the known devices of `user_ids`; return how many devices were newly trusted."""
    if policy is not TrustPolicy.TOFU or client.olm is None:
        return 0
    trusted = 0
    for user_id in user_ids:
        if user_id == client.user_id:
            continue
        for device in client.device_store.active_user_devices(user_id):
            if client.olm.is_device_verified(device) or client.olm.is_device_blacklisted(device):
                continue
            client.verify_device(device)
            trusted += 1
            log.info("trusting device %s of %s on first use", device.id, user_id)
    return trusted
