"""Relay knobs that are not user configuration (`RelayConfig` holds those). Tests shrink them."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["RelayTuning"]


@dataclass(frozen=True)
class RelayTuning:
    page_limit: int = 80  # notifications per catch-up page (the server clamps to 80)
    catch_up_pages: int = 10  # pages per catch-up round; then wait for delivery to drain and pause
    catch_up_pause: float = 5.0  # the pause between catch-up rounds (an endless backlog is paced)
    stream_buffer: int = 500  # stream notifications buffered per account; a full buffer stops reading
    stream_buffer_bytes: int = 128 * 1024  # ... and the bytes they may hold (`Notification.retained_bytes`)
    max_pending: int = 1_000  # notifications queued per Matrix user before relays stop taking more
    max_pending_bytes: int = 256 * 1024  # ... and the bytes they may hold
    reconnect_base: float = 1.0  # first reconnect / retry delay after an instance failure
    reconnect_cap: float = 300.0  # never more than 12 attempts an hour per account at steady state
    stream_healthy_after: float = 60.0  # a stream that lived this long resets the failure count
    stream_failures_before_poll: int = 3  # quick stream drops in a row → poll instead for a while
    stream_retry_after: float = 3600.0  # in that poll fallback, try streaming again after this long
    breaker_threshold: int = 5  # consecutive failures of an instance that open its circuit
    breaker_cooldown: float = 30.0
    breaker_max_cooldown: float = 300.0
    send_retry_base: float = 1.0  # homeserver send failures: first retry delay
    send_retry_cap: float = 60.0
    no_room_retry: float = 30.0  # no DM room recorded for the user yet: look again after this long
    forbidden_retries: int = 3  # 403/404 from the user's current DM: look again this often, then drop
    max_batch: int = 500  # notifications taken from a user's queue at once
    max_message_bytes: int = 24_000  # packed message size (plain + HTML)
