"""Server profiles of the fake: what GoToSocial, Mastodon, Akkoma and Iceshrimp.NET do differently at each
step a client takes, one named field per difference (facts from shared/reference/mastodon-family.md and
gotosocial-client-api.md; the source paths are there; Iceshrimp.NET's paths are in README, "Servers").

Every profile is GoToSocial (``GOTOSOCIAL``) with its differences replaced, so each literal below lists
only what that server does otherwise.

``FakeGoToSocial(profile=MASTODON)`` makes the fake behave like that server. A test that needs one
variation derives it: ``dataclasses.replace(MASTODON, limited_federation=True)``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

IdStyle = Literal["ulid", "snowflake", "flake"]
# Iceshrimp.NET: Doorkeeper's descriptions as `error` (no RFC code), 401 for an unknown code
OAuthDialect = Literal["gotosocial", "doorkeeper", "iceshrimp"]
ScopeModel = Literal["gotosocial", "mastodon"]
StreamTokenSource = Literal["query", "protocol", "bearer"]
# Iceshrimp.NET opens the socket, then closes it with 1008 (policy violation) on the subscribe
StreamScopeRefusal = Literal["handshake", "error_frame", "close_1008"]
# Iceshrimp.NET: ASP.NET's sliding-window limiter per user (else X-Forwarded-For, else IP), no headers
RateLimitModel = Literal["per_ip", "mastodon_buckets", "iceshrimp_sliding"]
AdvertisedStreamScheme = Literal["wss", "same_as_instance"]
# Idempotency-Key: GoToSocial ignores it; Mastodon remembers (account, key) → the status it posted, for an
# hour (PostStatusService); Akkoma's IdempotencyPlug replays any cached POST/PUT/PATCH response (6 hours).
IdempotencyModel = Literal["ignored", "status_per_account", "response_cache"]


@dataclass(frozen=True)
class Profile:
    name: str
    # --- who it says it is
    server_header: str  # "" = no product name of its own
    software: str  # nodeinfo software.name
    version: str  # /api/v1/instance .version ("" = a GoToSocial built without its version flag)
    source_url: str
    homepage: str
    id_style: IdStyle  # ULIDs (GtS), numeric snowflakes (Mastodon), base62 flake ids (Akkoma)
    # --- instance discovery
    serves_instance_v2: bool
    limited_federation: bool  # instance endpoints answer 401 without a user token (Mastodon option)
    # --- OAuth
    oauth_dialect: OAuthDialect  # error bodies of /oauth/token and /oauth/revoke
    oob_path: str  # the out-of-band code page
    code_length: int
    code_ttl: float  # seconds an authorization code lives
    reuses_tokens: bool  # same account + app + scopes → the same access token again
    revoke_unknown_token_status: int  # /oauth/revoke for a token the server does not know
    scope_model: ScopeModel  # "mastodon": `profile` covers verify_credentials, granular scopes stream
    inactive_login_status: int  # verify_credentials for an unconfirmed/disabled login (GtS: token ignored)
    app_scopes_as_list: bool  # POST /api/v1/apps answers `scopes` as a list (+ client_secret_expires_at)
    # --- notifications
    notification_limit_default: int
    notification_limit_max: int
    extra_notification_types: tuple[str, ...]
    # --- streaming
    stream_token_sources: frozenset[StreamTokenSource]
    stream_no_token_status: int  # handshake answer when none of the accepted token sources is present
    stream_scopes: frozenset[str]  # token scopes that may read the user's notification stream
    stream_scope_refusal: StreamScopeRefusal  # 403 at the handshake, or open + `{"error", "status": 401}`
    separate_streaming_host: bool  # streaming is served on another host; the web host answers 301
    advertises_streaming_host: bool  # the instance documents name the streaming host
    advertised_stream_scheme: AdvertisedStreamScheme  # GtS says wss:// even when served over http
    revoke_closes_streams: bool
    # --- rate limits
    rate_limit_model: RateLimitModel
    # --- writes (issue 12)
    idempotency: IdempotencyModel = "ignored"
    follow_scope_covers_follow_requests: bool = False  # Mastodon's and Akkoma's legacy `follow` scope
    status_char_limit: int = 5000
    idempotency_ttl: float = 3600.0  # seconds a remembered Idempotency-Key lives (Akkoma: its own 6 h)
    reblog_scope: str = "write:statuses"  # Iceshrimp.NET's StatusController wants write:favourites
    stream_pings: bool = True  # the server pings an idle socket every ping_interval
    stream_echoes_protocol: bool = True  # the 101 names the offered subprotocol (Iceshrimp.NET: no header)


GOTOSOCIAL = Profile(
    name="gotosocial",
    server_header="gotosocial",
    software="gotosocial",
    version="0.20.0",
    source_url="https://codeberg.org/superseriousbusiness/gotosocial",
    homepage="https://docs.gotosocial.org",
    id_style="ulid",
    serves_instance_v2=True,
    limited_federation=False,
    oauth_dialect="gotosocial",
    oob_path="/oauth/oob",
    code_length=48,
    code_ttl=300.0,
    reuses_tokens=False,
    revoke_unknown_token_status=200,
    scope_model="gotosocial",
    inactive_login_status=401,
    app_scopes_as_list=False,
    notification_limit_default=20,
    notification_limit_max=80,
    extra_notification_types=(),
    stream_token_sources=frozenset({"query", "protocol", "bearer"}),
    stream_no_token_status=401,
    stream_scopes=frozenset({"read"}),
    stream_scope_refusal="handshake",
    separate_streaming_host=False,
    advertises_streaming_host=True,
    advertised_stream_scheme="wss",
    revoke_closes_streams=False,
    rate_limit_model="per_ip",
)

MASTODON = replace(
    GOTOSOCIAL,
    name="mastodon",
    server_header="Mastodon",
    software="mastodon",
    version="4.3.0",
    source_url="https://github.com/mastodon/mastodon",
    homepage="https://joinmastodon.org",
    id_style="snowflake",
    oauth_dialect="doorkeeper",
    oob_path="/oauth/authorize/native",
    code_length=43,
    code_ttl=600.0,
    reuses_tokens=True,
    scope_model="mastodon",
    inactive_login_status=403,
    app_scopes_as_list=True,
    notification_limit_default=40,
    extra_notification_types=("severed_relationships", "moderation_warning", "quote", "quoted_update",
                              "annual_report"),
    stream_scopes=frozenset({"read", "read:notifications"}),
    stream_scope_refusal="error_frame",
    separate_streaming_host=True,
    advertised_stream_scheme="same_as_instance",
    revoke_closes_streams=True,
    rate_limit_model="mastodon_buckets",
    idempotency="status_per_account",
    follow_scope_covers_follow_requests=True,
    status_char_limit=500,
)

AKKOMA = replace(
    GOTOSOCIAL,
    name="akkoma",
    server_header="",
    software="akkoma",
    version="2.7.2 (compatible; Akkoma 3.13.2)",
    source_url="https://akkoma.dev/AkkomaGang/akkoma",
    homepage="https://akkoma.social",
    id_style="flake",
    oauth_dialect="doorkeeper",
    code_length=43,
    code_ttl=600.0,
    reuses_tokens=True,
    inactive_login_status=403,
    notification_limit_max=40,
    extra_notification_types=("move", "pleroma:emoji_reaction"),
    stream_token_sources=frozenset({"query", "protocol"}),
    stream_scopes=frozenset({"read", "read:notifications"}),
    advertised_stream_scheme="same_as_instance",
    revoke_closes_streams=True,
    idempotency="response_cache",
    idempotency_ttl=6 * 3600.0,
    follow_scope_covers_follow_requests=True,
)

# Iceshrimp.NET, read from its source (paths under Iceshrimp.Backend/):
# - Pages/OAuth/Authorize.cshtml(.cs): a 32-character code that never expires; a new token each time.
# - Controllers/Mastodon/AuthController.cs: Doorkeeper's descriptions as `error` (401 for an unknown code,
#   400 for a redeemed one); /oauth/revoke answers 403 for a token it does not know.
# - NotificationController.cs, Schemas/Entities/NotificationEntity.cs: numeric ids (MastoId), 40 a page by
#   default and 80 at most; its own "reaction" and "bite" types.
# - WebSocketController.cs: the token from the access_token query, else the first Sec-WebSocket-Protocol
#   (400 without either; 401 for an unknown token, before the upgrade); the 101 names no subprotocol.
# - Streaming/WebSocketConnection.cs, WebSocketHandler.cs, Channels/UserChannel.cs: a subscribe to a
#   channel whose scopes (read:statuses and read:notifications) the token lacks closes with 1008; the
#   server sends no pings; a revoked token's open socket stays open.
# - StatusController.cs: Idempotency-Key remembered per account for 24 h; boosting wants write:favourites.
# - Core/Helpers/MastodonOauthHelpers.cs: `follow` expands to write:follows.
# - Federation/NodeInfoController.cs: software "Iceshrimp.NET".
# - Core/Extensions/ServiceExtensions.cs (AddSlidingWindowRateLimiter): 500 requests a minute ("sliding"),
#   10 app registrations a minute ("strict"), a 429 with its own JSON and no rate-limit headers; the
#   streaming socket is not limited.
ICESHRIMP = replace(
    GOTOSOCIAL,
    name="iceshrimp",
    server_header="",
    software="Iceshrimp.NET",
    version="4.2.1 (compatible; Iceshrimp.NET/2025.1-beta5)",
    source_url="https://iceshrimp.dev/iceshrimp/Iceshrimp.NET",
    homepage="https://iceshrimp.net",
    id_style="snowflake",
    oauth_dialect="iceshrimp",
    code_length=32,
    code_ttl=float("inf"),
    revoke_unknown_token_status=403,
    app_scopes_as_list=True,
    notification_limit_default=40,
    extra_notification_types=("reaction", "bite"),
    stream_token_sources=frozenset({"query", "protocol"}),
    stream_no_token_status=400,
    stream_echoes_protocol=False,
    stream_pings=False,
    stream_scope_refusal="close_1008",
    advertised_stream_scheme="wss",
    idempotency="status_per_account",
    idempotency_ttl=24 * 3600.0,
    reblog_scope="write:favourites",
    follow_scope_covers_follow_requests=True,
    status_char_limit=8192,
    rate_limit_model="iceshrimp_sliding",
)

PROFILES: dict[str, Profile] = {p.name: p for p in (GOTOSOCIAL, MASTODON, AKKOMA, ICESHRIMP)}


def profile_named(name: str) -> Profile:
    try:
        return PROFILES[name]
    except KeyError:
        raise ValueError(f"no fake profile {name!r}; known: {', '.join(sorted(PROFILES))}") from None
