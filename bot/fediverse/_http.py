"""One request to an instance, done carefully: pacing, a whole-request deadline, a body size cap, no
redirects off the instance, and every transport failure mapped to a user-facing error naming the instance."""

from __future__ import annotations

import asyncio
import json
import re
import socket
import ssl
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import httpx

from bot.errors import (
    BadResponseError,
    DnsError,
    FediverseError,
    InactiveLoginError,
    InstanceTimeoutError,
    InstanceUnreachableError,
    InsufficientScopeError,
    RateLimitedError,
    ResponseTooLargeError,
    TlsError,
    TokenRejectedError,
    UnexpectedRedirectError,
)
from bot.fediverse.instance import InstanceRef
from bot.fediverse.ratelimit import PacerRegistry, WaitTooLong, bucket_kind

MAX_SAME_ORIGIN_REDIRECTS = 3
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_LINK = re.compile(r"<([^<>]*)>((?:\s*;\s*[^;,]*)*)")
_REL = re.compile(r"""rel\s*=\s*"?([^";,]+)"?""")

QueryParams = list[tuple[str, str | int | float | bool | None]]


@dataclass(frozen=True)
class RawResponse:
    status: int
    headers: httpx.Headers
    body: bytes
    method: str
    path: str


def server_text(text: object, *, redact: Sequence[str] = (), limit: int = 160) -> str:
    """Server-supplied text made safe to quote: printable, short, and with our secrets cut out."""
    if not isinstance(text, str):
        return ""
    for secret in redact:
        if secret:
            text = text.replace(secret, "…")
    text = "".join(ch if ch.isprintable() else " " for ch in text).strip()
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _origin(url: httpx.URL) -> tuple[str, str, int | None]:
    default = {"https": 443, "http": 80}.get(url.scheme)
    return url.scheme, url.host, url.port if url.port != default else None


def _describe_url(url: httpx.URL) -> str:
    """A URL for a message: no credentials, no query, no fragment, bounded length."""
    host = f"[{url.host}]" if ":" in url.host else url.host
    port = f":{url.port}" if url.port is not None else ""
    return server_text(f"{url.scheme}://{host}{port}{url.path}", limit=120)


def _chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in seen:
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen


def parse_link_header(value: str | None) -> dict[str, httpx.URL]:
    """`<url>; rel="next", <url>; rel="prev"` → {"next": URL, "prev": URL}. Malformed parts are skipped."""
    links: dict[str, httpx.URL] = {}
    if not value:
        return links
    for match in _LINK.finditer(value[:8192]):
        rel = _REL.search(match.group(2))
        if rel is None:
            continue
        try:
            url = httpx.URL(match.group(1))
        except httpx.InvalidURL:
            continue
        for name in rel.group(1).split():
            links.setdefault(name.lower(), url)
    return links


ResponseObserver = Callable[[str, int], None]
"""Told (instance display name, HTTP status) of every response an instance gives; metrics use it."""


class InstanceHttp:
    def __init__(
        self,
        http: httpx.AsyncClient,
        *,
        connect_timeout: float,
        request_timeout: float,
        max_response_bytes: int,
        pacers: PacerRegistry,
        on_response: ResponseObserver | None = None,
    ) -> None:
        self._on_response = on_response
        self._http = http
        self._connect_timeout = connect_timeout
        self._request_timeout = request_timeout
        self._max_bytes = max_response_bytes
        self._pacers = pacers

    def learn_software(self, instance: InstanceRef, software: str | None) -> None:
        self._pacers.learn_software(instance.key, software)

    async def request(
        self,
        instance: InstanceRef,
        method: str,
        path: str,
        *,
        params: QueryParams | None = None,
        data: Mapping[str, str] | None = None,
        token: str | None = None,
        extra_headers: Mapping[str, str] | None = None,
    ) -> RawResponse:
        """Send one request (retrying after a 429 as the pacer says). Any status comes back as a response."""
        headers = {**(extra_headers or {}), "Accept-Encoding": "gzip, deflate"}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        kind = bucket_kind(method, path, (key for key, _ in params or ()), authenticated=token is not None)
        attempt = 0
        while True:
            # The bucket is chosen again on each attempt: an answer may have told us the server's model.
            pacer = self._pacers.get(self._pacers.bucket(instance.key, kind, token))
            try:
                await pacer.acquire()
            except WaitTooLong as exc:
                raise rate_limited_error(instance, exc.delay) from None
            response = await self._fetch(instance, method, path, params, data, headers)
            if self._on_response is not None:
                self._on_response(instance.display, response.status)
            self._pacers.learn_from_headers(instance.key, response.headers)
            if response.status != 429:
                pacer.observe(response.headers)
                return response
            delay = pacer.rate_limited(response.headers)
            if attempt >= pacer.policy.max_retries or delay > pacer.policy.max_wait:
                raise rate_limited_error(instance, delay)
            attempt += 1

    async def _fetch(
        self,
        instance: InstanceRef,
        method: str,
        path: str,
        params: QueryParams | None,
        data: Mapping[str, str] | None,
        headers: Mapping[str, str],
    ) -> RawResponse:
        url = httpx.URL(instance.base_url + path)
        origin = _origin(url)
        for _hop in range(MAX_SAME_ORIGIN_REDIRECTS + 1):
            request = self._http.build_request(method, url, params=params, data=data, headers=headers)
            try:
                async with asyncio.timeout(self._request_timeout):
                    response = await self._http.send(request, stream=True)
                    try:
                        location = response.headers.get("location")
                        if response.status_code in _REDIRECTS and location:
                            target = self._redirect_target(instance, request.url, location)
                            if method != "GET" or _origin(target) != origin:
                                raise UnexpectedRedirectError(
                                    f"{instance.display} redirected the bot to {_describe_url(target)} "
                                    "instead of answering; the bot does not follow redirects off an instance."
                                )
                            url, params = target, None
                            continue
                        body = await self._read_capped(instance, response)
                    finally:
                        await response.aclose()
            except TimeoutError:
                raise InstanceTimeoutError(
                    f"{instance.display} did not answer within {self._request_timeout:g} seconds."
                ) from None
            except httpx.HTTPError as exc:
                raise self._transport_error(instance, exc) from exc
            return RawResponse(response.status_code, response.headers, body, method, url.path)
        raise UnexpectedRedirectError(f"{instance.display} redirected the bot too many times.")

    @staticmethod
    def _redirect_target(instance: InstanceRef, base: httpx.URL, location: str) -> httpx.URL:
        try:
            return base.join(location)
        except (httpx.InvalidURL, ValueError):
            raise UnexpectedRedirectError(
                f"{instance.display} answered with a redirect to an invalid address."
            ) from None

    async def _read_capped(self, instance: InstanceRef, response: httpx.Response) -> bytes:
        """The body, decompressed, up to `max_response_bytes`. Past that, `ResponseTooLargeError` carries
        the part read (a declared Content-Length is not trusted either way; reading stops at the limit)."""
        encoding = response.headers.get("content-encoding", "identity").strip().lower()
        decoder: zlib._Decompress | None
        if encoding in ("", "identity"):
            decoder = None
        elif encoding in ("gzip", "x-gzip"):
            decoder = zlib.decompressobj(16 + zlib.MAX_WBITS)
        elif encoding == "deflate":
            decoder = zlib.decompressobj()
        else:
            raise BadResponseError(f"{instance.display} sent a response in an unsupported encoding.")
        chunks: list[bytes] = []
        size = 0
        try:
            async for raw in response.aiter_raw():
                # Decompress with a bound so a small compressed body cannot expand without limit.
                piece = raw if decoder is None else decoder.decompress(raw, self._max_bytes + 1 - size)
                chunks.append(piece)
                size += len(piece)
                if size > self._max_bytes or (decoder is not None and decoder.unconsumed_tail):
                    raise ResponseTooLargeError(
                        f"{instance.display} sent a response larger than {self._max_bytes:,} bytes; "
                        "the bot stopped reading.",
                        prefix=b"".join(chunks)[: self._max_bytes],
                    )
        except zlib.error:
            raise BadResponseError(f"{instance.display} sent a corrupt compressed response.") from None
        return b"".join(chunks)

    def _transport_error(self, instance: InstanceRef, exc: httpx.HTTPError) -> FediverseError:
        name = instance.display
        if isinstance(exc, httpx.ConnectTimeout):
            return InstanceTimeoutError(
                f"{name} did not accept a connection within {self._connect_timeout:g} seconds."
            )
        if isinstance(exc, httpx.TimeoutException):
            return InstanceTimeoutError(f"{name} did not answer within {self._request_timeout:g} seconds.")
        chain = _chain(exc)
        for cause in chain:
            if isinstance(cause, ssl.SSLCertVerificationError):
                reason = server_text(cause.verify_message, limit=80) or "verification failed"
                return TlsError(f"The TLS certificate of {name} is not valid ({reason}).")
            if isinstance(cause, ssl.SSLError):
                return TlsError(f"A secure (TLS) connection to {name} could not be established.")
        for cause in chain:
            if isinstance(cause, socket.gaierror):
                return DnsError(f"The name {name} could not be found (DNS lookup failed).")
            if isinstance(cause, ConnectionRefusedError):
                return InstanceUnreachableError(f"{name} refused the connection (is the server down?).")
        if isinstance(exc, httpx.RemoteProtocolError):
            return BadResponseError(f"{name} broke off or sent a malformed HTTP response.")
        if isinstance(exc, httpx.ConnectError):
            return InstanceUnreachableError(f"Could not connect to {name}.")
        if isinstance(exc, httpx.TransportError):
            return InstanceUnreachableError(f"The connection to {name} failed.")
        return BadResponseError(f"The request to {name} failed.")


def rate_limited_error(instance: InstanceRef, delay: float) -> RateLimitedError:
    wait = f"{max(1, round(delay))} seconds" if delay < 120 else f"{round(delay / 60)} minutes"
    return RateLimitedError(
        f"{instance.display} is limiting how often the bot may ask; try again in about {wait}.",
        retry_after=delay,
    )


def decode_json(instance: InstanceRef, response: RawResponse) -> object:
    """The body as JSON (UTF-8, RFC 8259). Bytes that are not UTF-8 (overlong, encoded surrogates, truncated)
    become U+FFFD: one bad byte in one notification must not make the whole page unreadable, or the cursor
    would never pass it. (`json.loads` on bytes would let encoded surrogates through as lone surrogates.)"""
    try:
        text = response.body.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = response.body.decode("utf-8-sig", errors="replace")
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        raise BadResponseError(
            f"{instance.display} sent something that is not valid JSON for {response.method} {response.path}."
        ) from None


def error_fields(response: RawResponse) -> tuple[str, str]:
    """The `error` and `error_description` of an error body, or empty strings."""
    try:
        data = json.loads(response.body)
    except (ValueError, RecursionError):
        return "", ""
    if not isinstance(data, dict):
        return "", ""
    error, description = data.get("error"), data.get("error_description")
    return (error if isinstance(error, str) else "", description if isinstance(description, str) else "")


# Mastodon's `require_user!` (app/controllers/api/base_controller.rb): a 403 about the login, not a scope.
_LOGIN_STATES = (
    ("confirmed e-mail", "has not confirmed its e-mail address yet"),
    ("pending approval", "is still waiting for a moderator's approval"),
    ("disabled", "is disabled"),
)


def login_state_error(instance: InstanceRef, response: RawResponse) -> InactiveLoginError | None:
    """Mastodon's 403 for a login that cannot be used (unconfirmed, pending, disabled), or None."""
    if response.status != 403:
        return None
    error, _ = error_fields(response)
    if "login" not in error.lower():
        return None
    for marker, words in _LOGIN_STATES:
        if marker in error.lower():
            return InactiveLoginError(
                f"{instance.display} says your login {words}, so the bot cannot use it yet. "
                "Sort that out on the instance, then connect again."
            )
    return InactiveLoginError(
        f"{instance.display} says your login cannot be used right now ({server_text(error, limit=80)}). "
        "Sort that out on the instance, then connect again."
    )


def status_error(instance: InstanceRef, response: RawResponse) -> FediverseError:
    """The error for an unexpected status on an authenticated API call."""
    name, status = instance.display, response.status
    if status == 401:
        return TokenRejectedError(
            f"{name} rejected the bot's access token: it was revoked, or the account was disabled or deleted."
        )
    if status == 403:
        return login_state_error(instance, response) or InsufficientScopeError(
            f"{name} refused: the bot's access token lacks the permission (scope) this needs."
        )
    if status in (502, 503, 504):
        return InstanceUnreachableError(f"{name} is not available right now (HTTP {status}).")
    return BadResponseError(
        f"{name} answered HTTP {status} to {response.method} {response.path}, which the bot did not expect."
    )
