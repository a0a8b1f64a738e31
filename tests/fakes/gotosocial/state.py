"""In-memory state of the fake GoToSocial: users, apps, codes, tokens, notifications, sessions, streams."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tests.fakes.gotosocial.core import SnowflakeFactory, UlidFactory, flake_id, go_json, iso_ms
from tests.fakes.gotosocial.profiles import Profile


@dataclass
class FakeUser:
    username: str
    email: str
    password: str = field(repr=False)
    account_id: str
    user_id: str
    created_at: str
    locked: bool = True
    domain: str | None = None  # None: a local account that can sign in
    display_name: str = ""
    bot: bool = False
    confirmed: bool = True
    approved: bool = True
    disabled: bool = False

    @property
    def acct(self) -> str:
        return self.username if self.domain is None else f"{self.username}@{self.domain}"


@dataclass
class FakeApp:
    id: str
    client_id: str
    client_secret: str = field(repr=False)
    name: str
    website: str
    redirect_uris: list[str]
    scopes: list[str]
    created_at: str
    managed_by: str | None = None  # user id


@dataclass
class FakeToken:
    id: str
    access: str = field(repr=False)
    client_id: str
    user_id: str | None
    scope: str
    created_at: int
    expires_at: float | None = None  # monotonic deadline; None = never


@dataclass
class FakeCode:
    code: str = field(repr=False)
    client_id: str
    user_id: str
    redirect_uri: str
    scope: str
    created: float  # time.monotonic()
    used: bool = False  # Iceshrimp.NET keeps a redeemed code (its token row) and refuses it with 400


@dataclass
class StoredNotification:
    id: str
    user_id: str
    type: str
    body: dict[str, Any]


@dataclass
class StoredStatus:
    """A status the fake knows: its JSON (as GET /api/v1/statuses/:id renders it) and who may see it."""

    body: dict[str, Any]
    author_account_id: str
    visibility: str
    mentioned_account_ids: frozenset[str] = frozenset()
    created: float = field(default_factory=time.monotonic)


@dataclass
class WriteState:
    """What the write endpoints change, and the record of every call to them (refused ones too)."""

    statuses: dict[str, StoredStatus] = field(default_factory=dict)  # by status id, oldest first
    favourites: set[tuple[str, str]] = field(default_factory=set)  # (account id, status id)
    reblogs: dict[tuple[str, str], str] = field(default_factory=dict)  # (account id, status id) → boost id
    follow_requests: dict[str, list[str]] = field(default_factory=dict)  # target account → requester ids
    followers: dict[str, set[str]] = field(default_factory=dict)  # account id → follower account ids
    calls: list[tuple[str, str, dict[str, str]]] = field(default_factory=list)  # (method, path, body)
    # Idempotency-Key memory: Mastodon's (account, key) → status id; Akkoma's replayable responses.
    posted_by_key: dict[tuple[str, str], tuple[str, float]] = field(default_factory=dict)
    cached_responses: dict[tuple[str, str, str, str], tuple[int, str, bytes, float]] = field(
        default_factory=dict
    )


@dataclass
class Session:
    id: str = field(repr=False)
    data: dict[str, str] = field(default_factory=dict)
    expires: float = 0.0


@dataclass(frozen=True)
class RawFrames:
    """Bytes written to a websocket as they are (`count` times), bypassing the framing: the hostile profile's
    invalid frames, fragments, pings and floods. Written as fast as the client reads them."""

    data: bytes
    count: int = 1


@dataclass
class StreamConn:
    user_id: str
    access: str = field(repr=False)
    streams: set[str]
    queue: asyncio.Queue[str | RawFrames]
    abort: Callable[[], None] = field(repr=False)


@dataclass
class FaultKnobs:
    """Mutable fault injection. Paths are matched exactly against the request path."""

    delay: float = 0.0
    status_override: dict[str, int] = field(default_factory=dict)
    huge_body_paths: set[str] = field(default_factory=set)
    huge_body_size: int = 8 * 1024 * 1024
    malformed_json_paths: set[str] = field(default_factory=set)
    drop_after_write: set[str] = field(default_factory=set)  # handled, then the connection is dropped
    redirect_paths: dict[str, str] = field(default_factory=dict)
    down: bool = False
    down_status: int | None = None  # None: drop connections without an answer; else answer this status
    streaming_enabled: bool = True
    revoke_enabled: bool = True  # False: /oauth/revoke → 404, like a server without the endpoint
    throttle: bool = False  # True: every limited request → 429 "server capacity exceeded"
    throttle_retry_after: int = 30
    stream_silent: bool = False  # True: streams open (101), then the server neither reads nor writes
    stream_unread: bool = False  # True: streams opened from now on never read what the client sends
    mangle_stream_frame: Callable[[str], str | RawFrames] | None = None  # applied to notification frames
    mangle_body: dict[str, Callable[[bytes], bytes]] = field(default_factory=dict)  # path → raw body rewrite
    _drop: Callable[[], int] | None = field(default=None, repr=False)

    def drop_streams(self) -> int:
        """Abort every open websocket (no close frame). Returns how many were dropped."""
        return self._drop() if self._drop is not None else 0


MASTODON_LIMITS: dict[str, tuple[int, float]] = {
    "token": (300, 300.0),
    "user": (1500, 300.0),
    "paging": (300, 900.0),
    "anonymous": (300, 300.0),
    "apps": (5, 600.0),
    # Iceshrimp.NET's sliding windows (500 a minute; 10 a minute to register an app), as aligned windows
    "iceshrimp_sliding": (500, 60.0),
    "iceshrimp_strict": (10, 60.0),
}


class FakeState:
    def __init__(
        self,
        *,
        profile: Profile,
        account_domain: str | None,
        code_ttl: float,
        rate_limit: int,
        rate_window: float,
        ping_interval: float,
        session_max_age: int,
        id_start: int | None,
    ) -> None:
        self.host = ""
        self.base_url = ""
        self.streaming_host = ""  # host:port of the separate streaming server, when the profile has one
        self.profile = profile
        self.account_domain_opt = account_domain
        self.code_ttl = code_ttl
        self.rate_limit = rate_limit
        self.rate_window = rate_window
        self.ping_interval = ping_interval
        self.session_max_age = session_max_age
        self.ulids = UlidFactory()
        self.snowflakes = SnowflakeFactory(id_start)
        self.users: dict[str, FakeUser] = {}  # by username (local) or acct (remote)
        self.apps: dict[str, FakeApp] = {}  # by client_id
        self.tokens: dict[str, FakeToken] = {}  # by access token
        self.codes: dict[str, FakeCode] = {}
        self.notifications: list[StoredNotification] = []
        self.statuses_by_user: dict[str, int] = {}
        self.sessions: dict[str, Session] = {}
        self.streams: list[StreamConn] = []
        self.rate_buckets: dict[tuple[str, str], tuple[float, int, float]] = {}
        # Mastodon's rack-attack throttles: kind → (limit, period in seconds) (profile "mastodon_buckets").
        self.mastodon_limits: dict[str, tuple[int, float]] = dict(MASTODON_LIMITS)
        self.rate_clock: Callable[[], float] = time.time  # wall clock of those windows; tests may pin it
        self.request_log: list[tuple[str, str]] = []
        self.rate_limited_responses = 0  # 429s sent because a rate-limit budget was spent (not throttling)
        self.served_over_rest: set[str] = set()  # ids of notifications a REST page returned
        # Notification pages answered while the user had a stream open (a relay's catch-up after opening)
        self.pages_while_streaming: dict[str, int] = {}
        self.writes = WriteState()
        self.faults = FaultKnobs(_drop=self.drop_streams)

    @property
    def numeric_ids(self) -> bool:
        return self.profile.id_style == "snowflake"

    @property
    def hostname(self) -> str:
        return self.host.rsplit(":", 1)[0] if ":" in self.host else self.host

    @property
    def account_domain(self) -> str:
        return self.account_domain_opt or self.host

    def new_id(self) -> str:
        if self.profile.id_style == "snowflake":
            return self.snowflakes.new()
        ulid = self.ulids.new()
        return flake_id(ulid) if self.profile.id_style == "flake" else ulid

    def now_iso(self) -> str:
        return iso_ms(time.time())

    # --- users -------------------------------------------------------------------------------------
    def add_user(self, username: str, email: str, password: str, *, locked: bool, domain: str | None = None,
                 display_name: str = "") -> FakeUser:
        key = username if domain is None else f"{username}@{domain}"
        if key in self.users:
            raise ValueError(f"user {key} exists")
        user = FakeUser(
            username=username, email=email, password=password, account_id=self.new_id(),
            user_id=self.new_id(),
            created_at=iso_ms(time.time()).split("T")[0] + "T00:00:00.000Z", locked=locked, domain=domain,
            display_name=display_name or username,
        )
        self.users[key] = user
        return user

    def user_by_id(self, user_id: str) -> FakeUser | None:
        return next((u for u in self.users.values() if u.user_id == user_id), None)

    def user_by_email(self, email: str) -> FakeUser | None:
        return next((u for u in self.users.values() if u.domain is None and u.email == email), None)

    def ensure_account(self, name: str) -> FakeUser:
        """A local user by username, or a remote account for ``user@domain`` (created on first use)."""
        if name in self.users:
            return self.users[name]
        if "@" in name:
            username, domain = name.split("@", 1)
            return self.add_user(username, f"{username}@{domain}", secrets.token_hex(8), locked=False,
                                 domain=domain)
        email = f"{name}@{self.hostname or 'localhost'}"
        return self.add_user(name, email, secrets.token_hex(8), locked=True)

    # --- tokens ------------------------------------------------------------------------------------
    def live_token(self, access: str) -> FakeToken | None:
        tok = self.tokens.get(access)
        if tok is None:
            return None
        if tok.expires_at is not None and time.monotonic() > tok.expires_at:
            return None
        if tok.client_id not in self.apps:
            return None
        return tok

    def revoke_all(self, username: str) -> int:
        user = self.users[username]
        gone = [k for k, t in self.tokens.items() if t.user_id == user.user_id]
        for k in gone:
            self.forget_token(k)
        return len(gone)

    def forget_token(self, access: str) -> None:
        """The token stops working; servers that close streams on revoke (Mastodon, Akkoma) do so."""
        self.tokens.pop(access, None)
        if self.profile.revoke_closes_streams:
            for conn in [c for c in self.streams if c.access == access]:
                conn.abort()

    # --- Mastodon's rate-limit buckets ----------------------------------------------------------------
    def count_in_bucket(
        self, kind: str, who: str, now: float, count: int = 1
    ) -> tuple[int, int, float, bool]:
        """Count requests in one rack-attack throttle: (remaining, limit, reset time, over the limit)."""
        limit, period = self.mastodon_limits[kind]
        reset = now - now % period + period  # rack-attack's windows are aligned to multiples of the period
        entry = self.rate_buckets.get((kind, who))
        used = (entry[1] if entry is not None and entry[0] == reset else 0) + count
        self.rate_buckets[(kind, who)] = (reset, used, now)
        return max(0, limit - used), limit, reset, used > limit

    # --- sessions ----------------------------------------------------------------------------------
    def load_session(self, sid: str | None) -> Session:
        now = time.monotonic()
        if sid is not None:
            s = self.sessions.get(sid)
            if s is not None and s.expires > now:
                return s
        return Session(id=secrets.token_urlsafe(24))

    def save_session(self, session: Session) -> None:
        session.expires = time.monotonic() + self.session_max_age
        self.sessions[session.id] = session

    # --- streams -----------------------------------------------------------------------------------
    def drop_streams(self) -> int:
        conns = list(self.streams)
        for conn in conns:
            conn.abort()
        return len(conns)

    def push_notification(self, user_id: str, payload: str) -> None:
        for conn in self.streams:
            if conn.user_id != user_id:
                continue
            name = "user:notification" if "user:notification" in conn.streams else "user"
            if name not in conn.streams:
                continue
            frame = go_json({"stream": [name], "event": "notification", "payload": payload})
            mangle = self.faults.mangle_stream_frame
            if conn.queue.qsize() < 50:
                conn.queue.put_nowait(frame if mangle is None else mangle(frame))
            else:  # GoToSocial drops the connection when its 50-message buffer is full
                conn.abort()
