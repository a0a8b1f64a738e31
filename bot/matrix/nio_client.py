"""The one place that builds matrix-nio clients and turns nio's `Response | ErrorResponse` into exceptions."""

from __future__ import annotations

from collections.abc import Awaitable
from pathlib import Path
from typing import Any

import nio

from bot.matrix.errors import MatrixError, error_from_response

# Every sync asks for up to 100 timeline events per room, so a burst while the bot was busy or down is
# delivered whole instead of being cut to Synapse's default of 10; presence is never needed.
SYNC_FILTER: dict[str, Any] = {"room": {"timeline": {"limit": 100}}, "presence": {"not_types": ["*"]}}
# The very first sync only records where "now" is: one event per room is enough for nio's room state.
FIRST_SYNC_FILTER: dict[str, Any] = {"room": {"timeline": {"limit": 1}}, "presence": {"not_types": ["*"]}}


def make_client(homeserver: str, user_id: str, store_dir: Path, pickle_key: str) -> Any:
    """A nio AsyncClient with E2EE on and nio's silent retries off.

    - `max_limit_exceeded=0`: nio returns the first 429 as an ErrorResponse instead of sleeping and retrying
      on its own (nio's default is to retry forever, hiding the rate limit); the adapter retries itself,
      keeping order and telling observers.
    - `max_timeouts=None` (nio's default): connection errors and timeouts are retried by nio with
      exponential backoff capped at 60 s, so a homeserver outage pauses the bot instead of crashing it.
    - `store_sync_tokens=False`: the sync token lives in the bot's database, written only after the events
      of a sync were handled.
    - `pickle_key`: encrypts the device keys in the nio store; derived from the bot's key ring by the caller.
    """
    config = nio.AsyncClientConfig(
        max_limit_exceeded=0,
        max_timeouts=None,
        store_sync_tokens=False,
        encryption_enabled=True,
        pickle_key=pickle_key,
    )
    return nio.AsyncClient(homeserver, user_id, store_path=str(store_dir), config=config)


def store_file(store_dir: Path, user_id: str, device_id: str) -> Path:
    """Where nio's default SQLite store keeps the keys of one device."""
    return store_dir / f"{user_id}_{device_id}.db"


def check(response: Any) -> Any:
    """Return a successful nio response; raise the mapped MatrixRequestError for an ErrorResponse."""
    if isinstance(response, nio.ErrorResponse):
        transport = getattr(response, "transport_response", None)
        status = getattr(transport, "status", None)
        raise error_from_response(
            str(response.message),
            response.status_code if isinstance(response.status_code, str) else None,
            status if isinstance(status, int) else None,
            response.retry_after_ms if isinstance(response.retry_after_ms, int) else None,
        )
    return response


async def call(what: str, awaitable: Awaitable[Any]) -> Any:
    """Await a nio request and `check` it; nio's local exceptions become MatrixError."""
    try:
        response = await awaitable
    except (nio.LocalProtocolError, nio.OlmTrustError, nio.EncryptionError) as e:
        raise MatrixError(f"{what} failed: {e}") from e
    return check(response)
