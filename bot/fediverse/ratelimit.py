"""Request pacing per rate-limit bucket, so normal operation never meets a 429.

Servers count requests in different buckets, and each response's `X-Ratelimit-Limit/-Remaining/-Reset`
headers describe only the bucket that request was counted in (the tightest one, on Mastodon):

- GoToSocial (reference §9): one fixed 5-minute window (default 300) per client IP for the whole client
  API. All users of the bot on one instance share the bot's IP, so they share one pacer: model SHARED.
- Mastodon (`config/initializers/rack_attack.rb`): 300 / 5 min per token, 300 / 15 min per user for
  paging requests (`min_id`, `max_id`, `since_id`), 300 / 5 min per IP for unauthenticated calls, and 5 app
  registrations per 10 min per IP. Model BUCKETS: one pacer per token (and one per token for paging), one
  for unauthenticated calls.
- App registration (`POST /api/v1/apps`) always has a pacer of its own: Mastodon's "4 of 5 left, reset in
  10 minutes" must hold back the next registration only, never the code exchange or a relay.

An instance is paced as SHARED (the cautious model) until it is known to be Mastodon: from the probe's
software name or the `Server: Mastodon` header. A call waits only on the pacer of the bucket it is counted
in, and its answer's headers feed only that pacer, so one user's tight bucket never delays another user.

A pacer lets requests through freely while more than half the window's allowance remains, then spreads
the rest evenly over the time left, keeping a reserve; at the reserve it waits for the window to end.
The registry keeps a bounded number of pacers (least recently used go first), so probing many hosts or
connecting many tokens cannot grow it without limit.
"""

from __future__ import annotations

import asyncio
import enum
import hashlib
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from email.utils import parsedate_to_datetime

__all__ = [
    "Bucket",
    "BucketKind",
    "Clock",
    "InstancePacer",
    "PacerPolicy",
    "PacerRegistry",
    "PacingModel",
    "Sleep",
    "WaitTooLong",
    "bucket_kind",
    "token_owner",
]

Clock = Callable[[], float]  # wall-clock seconds since the epoch (reset times are wall-clock)
Sleep = Callable[[float], Awaitable[None]]


@dataclass(frozen=True)
class PacerPolicy:
    reserve_fraction: float = 0.05  # of the limit, kept back for interactive requests
    min_reserve: int = 2
    pace_below_fraction: float = 0.5  # start spreading requests when remaining falls below this share
    max_wait: float = 330.0  # never sleep longer than this for one request; longer → WaitTooLong
    max_retries: int = 2  # retries after a 429
    default_retry_after: float = 30.0  # a 429 that says nothing about when to come back
    reset_margin: float = 1.0  # GoToSocial truncates the reset time to whole seconds


def _header(headers: Mapping[str, str], name: str) -> str | None:
    for key, value in headers.items():
        if key.lower() == name:
            return value.strip()
    return None


def _parse_int(text: str | None) -> int | None:
    if text is None or not text.isdigit() or len(text) > 12:
        return None
    return int(text)


def _parse_reset(text: str | None, now: float) -> float | None:
    """X-RateLimit-Reset as epoch time: ISO 8601 (GoToSocial, Mastodon), epoch, or seconds from now."""
    if not text:
        return None
    try:
        number = float(text)
    except ValueError:
        pass
    else:
        return number if number > 1e9 else now + max(number, 0.0)
    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        return None


def _parse_retry_after(text: str | None, now: float) -> float | None:
    if not text:
        return None
    if text.isdigit():
        return float(text)
    try:
        return parsedate_to_datetime(text).timestamp() - now
    except (TypeError, ValueError, IndexError):
        return None


class WaitTooLong(Exception):
    """The bucket is spent for longer than `PacerPolicy.max_wait`; `delay` is how long, in seconds."""

    def __init__(self, delay: float) -> None:
        super().__init__(delay)
        self.delay = delay


class InstancePacer:
    """Paces the requests to one instance. Safe to share between tasks."""

    def __init__(
        self,
        *,
        clock: Clock = time.time,
        sleep: Sleep = asyncio.sleep,
        policy: PacerPolicy | None = None,
    ) -> None:
        self._clock = clock
        self._sleep = sleep
        self.policy = policy if policy is not None else PacerPolicy()
        self._lock = asyncio.Lock()
        self._limit: int | None = None
        self._remaining: int | None = None
        self._reset_at: float | None = None
        self._blocked_until = 0.0
        self._last_slot = 0.0

    @property
    def remaining(self) -> int | None:
        """The requests believed left in the current window (None when unknown)."""
        return self._remaining

    def delay_for_next(self) -> float:
        """How long the next request would wait now (for tests and metrics); reserves nothing."""
        return max(0.0, self._next_slot(self._clock()) - self._clock())

    def _reserve(self) -> int:
        if self._limit is None:
            return self.policy.min_reserve
        return max(self.policy.min_reserve, int(self._limit * self.policy.reserve_fraction))

    def _next_slot(self, now: float) -> float:
        if self._blocked_until > now:
            return self._blocked_until
        if self._remaining is None or self._reset_at is None:
            return now
        window_end = self._reset_at + self.policy.reset_margin
        if window_end <= now:  # the window has ended; the next response tells us about the new one
            return now
        usable = self._remaining - self._reserve()
        if usable <= 0:
            return window_end
        if self._limit is not None and self._remaining >= self._limit * self.policy.pace_below_fraction:
            return now
        interval = (window_end - now) / usable
        return max(now, self._last_slot + interval)

    async def acquire(self) -> None:
        """Wait until a request to this instance may be sent."""
        async with self._lock:
            now = self._clock()
            window_end = None if self._reset_at is None else self._reset_at + self.policy.reset_margin
            if window_end is not None and window_end <= now and self._blocked_until <= now:
                self._remaining = None
                self._reset_at = None
            slot = self._next_slot(now)
            if slot - now > self.policy.max_wait:
                # Waiting that long would outlast any command; the caller says when to come back instead.
                raise WaitTooLong(slot - now)
            self._last_slot = slot
            if self._remaining is not None:
                self._remaining = max(0, self._remaining - 1)  # corrected by the response's headers
        delay = slot - now
        if delay > 0:
            await self._sleep(delay)

    def observe(self, headers: Mapping[str, str]) -> None:
        """Learn the instance's limit from a response's headers."""
        now = self._clock()
        limit = _parse_int(_header(headers, "x-ratelimit-limit"))
        remaining = _parse_int(_header(headers, "x-ratelimit-remaining"))
        reset_at = _parse_reset(_header(headers, "x-ratelimit-reset"), now)
        if limit is not None:
            self._limit = limit
        if remaining is None:
            return
        same_window = reset_at is None or (
            self._reset_at is not None and abs(reset_at - self._reset_at) < 1.0
        )
        if same_window and self._remaining is not None:
            # Responses can arrive out of order: within one window the lowest count is the truest.
            self._remaining = min(self._remaining, remaining)
        else:
            self._remaining = remaining
        if reset_at is not None:
            self._reset_at = reset_at

    def rate_limited(self, headers: Mapping[str, str]) -> float:
        """Record a 429 and return how many seconds to wait before trying again."""
        self.observe(headers)
        now = self._clock()
        delay = _parse_retry_after(_header(headers, "retry-after"), now)
        if delay is None:
            reset_at = _parse_reset(_header(headers, "x-ratelimit-reset"), now)
            delay = reset_at - now + self.policy.reset_margin if reset_at is not None else None
        if delay is None:
            delay = self.policy.default_retry_after
        delay = max(delay, 1.0)
        self._blocked_until = max(self._blocked_until, now + delay)
        return delay


class PacingModel(enum.Enum):
    SHARED = "shared"  # one budget per IP for every call (GoToSocial, and any server not known better)
    BUCKETS = "buckets"  # Mastodon: per token, per user for paging, per IP unauthenticated


class BucketKind(enum.Enum):
    APP_REGISTRATION = "apps"
    UNAUTHENTICATED = "anonymous"
    TOKEN = "token"  # noqa: S105 - a bucket's name, not a secret
    PAGING = "paging"


_PAGING_PARAMS = frozenset({"min_id", "max_id", "since_id", "page"})


def bucket_kind(method: str, path: str, param_names: Iterable[str], *, authenticated: bool) -> BucketKind:
    """The bucket a call is counted in on a bucketed server (pure; see the module docstring)."""
    if method == "POST" and path == "/api/v1/apps":
        return BucketKind.APP_REGISTRATION
    if not authenticated:
        return BucketKind.UNAUTHENTICATED
    if _PAGING_PARAMS.intersection(param_names):
        return BucketKind.PAGING
    return BucketKind.TOKEN


@dataclass(frozen=True)
class Bucket:
    """One pacer's key. `owner` tells tokens apart by a digest (the token itself is never kept here)."""

    instance: str
    kind: str
    owner: str = ""


def token_owner(token: str) -> str:
    return hashlib.blake2b(token.encode("utf-8"), digest_size=16).hexdigest()


class PacerRegistry:
    """The pacers of every bucket in use, created on first use and bounded in number (LRU)."""

    def __init__(
        self,
        *,
        clock: Clock = time.time,
        sleep: Sleep = asyncio.sleep,
        policy: PacerPolicy | None = None,
        max_pacers: int = 1024,
    ) -> None:
        self._clock = clock
        self._sleep = sleep
        self._policy = policy if policy is not None else PacerPolicy()
        self._max = max(1, max_pacers)
        self._pacers: OrderedDict[Bucket | str, InstancePacer] = OrderedDict()
        self._models: OrderedDict[str, PacingModel] = OrderedDict()

    def __len__(self) -> int:
        return len(self._pacers)

    def get(self, key: Bucket | str) -> InstancePacer:
        """The pacer for `key` (a bucket, or any name), most recently used from now on."""
        pacer = self._pacers.get(key)
        if pacer is None:
            pacer = InstancePacer(clock=self._clock, sleep=self._sleep, policy=self._policy)
            self._pacers[key] = pacer
            while len(self._pacers) > self._max:
                self._pacers.popitem(last=False)
        else:
            self._pacers.move_to_end(key)
        return pacer

    def model(self, instance_key: str) -> PacingModel:
        return self._models.get(instance_key, PacingModel.SHARED)

    def learn_model(self, instance_key: str, model: PacingModel) -> None:
        """Pace `instance_key` by `model` from now on (told by the probe, or learnt from a header)."""
        if self._models.get(instance_key) is model:
            self._models.move_to_end(instance_key)
            return
        self._models[instance_key] = model
        while len(self._models) > self._max:
            self._models.popitem(last=False)

    def learn_software(self, instance_key: str, software: str | None) -> None:
        if software is not None and software.lower() == "mastodon":
            self.learn_model(instance_key, PacingModel.BUCKETS)

    def learn_from_headers(self, instance_key: str, headers: Mapping[str, str]) -> None:
        server = _header(headers, "server")
        if server is not None and server.lower().startswith("mastodon"):
            self.learn_model(instance_key, PacingModel.BUCKETS)

    def bucket(self, instance_key: str, kind: BucketKind, token: str | None) -> Bucket:
        """The bucket a call of `kind` (with `token`, if authenticated) is counted in on this instance."""
        if kind is BucketKind.APP_REGISTRATION:
            return Bucket(instance_key, kind.value)
        if self.model(instance_key) is PacingModel.SHARED:
            return Bucket(instance_key, PacingModel.SHARED.value)
        if kind is BucketKind.UNAUTHENTICATED or token is None:
            return Bucket(instance_key, BucketKind.UNAUTHENTICATED.value)
        return Bucket(instance_key, kind.value, token_owner(token))
