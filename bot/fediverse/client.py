"""The typed fediverse client: the handful of Mastodon-client-API calls the bot makes.

Thin on purpose: each method is one call (or a short, fixed sequence), returns frozen dataclasses from
`models`, and raises the `FediverseError` subclasses from `bot.errors`. Remote OAuth error codes map to
exception classes in one place, `oauth_errors.oauth_error`. The httpx client is injected (see
`guard.build_http_client`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import replace

import httpx

from bot.errors import (
    BadResponseError,
    FediverseError,
    ForbiddenAddressError,
    InstanceUnreachableError,
    NotAFediverseServerError,
    OAuthError,
    PageTooLargeError,
    RateLimitedError,
    ResponseTooLargeError,
    RevokeUnsupportedError,
)
from bot.fediverse._http import (
    InstanceHttp,
    QueryParams,
    RawResponse,
    ResponseObserver,
    decode_json,
    error_fields,
    parse_link_header,
    server_text,
    status_error,
)
from bot.fediverse.actions import FediverseActions
from bot.fediverse.guard import HttpSettings
from bot.fediverse.instance import InstanceRef
from bot.fediverse.models import (
    AppRegistration,
    FediverseAccount,
    InstanceInfo,
    Notification,
    Page,
    ShapeError,
    TokenGrant,
    notification_id,
    parse_account,
    parse_app,
    parse_notification,
    parse_token,
)
from bot.fediverse.oauth import OOB_REDIRECT_URI
from bot.fediverse.oauth_errors import NO_ROWS, oauth_error
from bot.fediverse.oversized import first_item_id
from bot.fediverse.ratelimit import PacerRegistry
from bot.fediverse.scopes import normalize_scopes

__all__ = ["MAX_PAGE_LIMIT", "FediverseClient"]

MAX_PAGE_LIMIT = 80
_NODEINFO_PATH = re.compile(r"^/[A-Za-z0-9/._-]{1,100}$")
_CURSOR = re.compile(r"^[A-Za-z0-9_-]{1,128}$")


def _bad_shape(instance: InstanceRef, what: str, exc: ShapeError) -> BadResponseError:
    return BadResponseError(f"{instance.display} sent {what} the bot could not understand ({exc}).")


def _text(d: dict[str, object], *keys: str) -> str | None:
    value: object = d
    for key in keys:
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return value if isinstance(value, str) and value else None


def _bare_domain(value: str) -> str:
    value = value.removeprefix("https://").removeprefix("http://")
    return value.split("/", 1)[0]


def _needs_login(response: RawResponse) -> bool:
    """A JSON 401: a Mastodon-API server that shows itself only to signed-in users (limited federation)."""
    return response.status == 401 and bool(error_fields(response)[0])


def _software_from_headers(response: RawResponse, doc: dict[str, object] | None) -> str:
    """When nodeinfo does not say: GoToSocial names itself in `Server` and `source_url`."""
    says_gts = "gotosocial" in response.headers.get("server", "").lower()
    says_gts = says_gts or (doc is not None and "gotosocial" in (_text(doc, "source_url") or ""))
    return "gotosocial" if says_gts else "unknown"


def _advertised_streaming_url(doc: dict[str, object]) -> str | None:
    return _text(doc, "configuration", "urls", "streaming") or _text(doc, "urls", "streaming_api")


class FediverseClient:
    def __init__(
        self,
        http: httpx.AsyncClient,
        *,
        connect_timeout: float = 5.0,
        request_timeout: float = 15.0,
        max_response_bytes: int = 1_048_576,
        pacers: PacerRegistry | None = None,
        on_response: ResponseObserver | None = None,
    ) -> None:
        self._http = InstanceHttp(
            http,
            connect_timeout=connect_timeout,
            request_timeout=request_timeout,
            max_response_bytes=max_response_bytes,
            pacers=pacers if pacers is not None else PacerRegistry(),
            on_response=on_response,
        )
        self.actions = FediverseActions(self._http)  # the write calls, on the same pacing and guard

    @classmethod
    def from_settings(
        cls,
        http: httpx.AsyncClient,
        settings: HttpSettings,
        *,
        pacers: PacerRegistry | None = None,
        on_response: ResponseObserver | None = None,
    ) -> FediverseClient:
        return cls(
            http,
            connect_timeout=settings.connect_timeout,
            request_timeout=settings.request_timeout,
            max_response_bytes=settings.max_response_bytes,
            pacers=pacers,
            on_response=on_response,
        )

    # -- discovery -------------------------------------------------------------------------------------

    async def probe(self, instance: InstanceRef) -> InstanceInfo:
        """Check that the instance speaks the Mastodon client API; learn its software, version and domains.

        A v1 document with `uri` or a v2 document with `domain` is enough; the version is optional (a
        GoToSocial built from source says `""`). A JSON 401 from the instance endpoints is a Mastodon in
        limited-federation mode: a Mastodon-API server that shows itself only after a login.
        """
        doc, v1_response = await self._instance_document(instance, "/api/v1/instance", ("uri", "domain"))
        if doc is None:
            doc, v2_response = await self._instance_document(instance, "/api/v2/instance", ("domain", "uri"))
            if doc is None and (_needs_login(v1_response) or _needs_login(v2_response)):
                return await self._login_only_info(instance, v1_response)
        if doc is None:
            raise NotAFediverseServerError(
                f"{instance.display} does not look like a GoToSocial or Mastodon-compatible server "
                "(it has no Mastodon client API)."
            )
        uri = _bare_domain(_text(doc, "uri") or _text(doc, "domain") or instance.netloc)
        version = _text(doc, "version") or ""
        software, software_version = await self._nodeinfo_software(instance)
        return InstanceInfo(
            software=software or _software_from_headers(v1_response, doc),
            version=software_version or version,
            title=_text(doc, "title") or uri,
            streaming_url=_advertised_streaming_url(doc),
            uri=uri,
            account_domain=_bare_domain(_text(doc, "account_domain") or uri),
        )

    async def _login_only_info(self, instance: InstanceRef, response: RawResponse) -> InstanceInfo:
        software, software_version = await self._nodeinfo_software(instance)
        return InstanceInfo(
            software=software or _software_from_headers(response, None),
            version=software_version or "",
            title=instance.display,
            streaming_url=None,
            uri=instance.netloc,
            account_domain=instance.netloc,
            needs_login=True,
        )

    async def streaming_url(self, instance: InstanceRef, token: str) -> str | None:
        """The streaming base URL the instance advertises (v2 `configuration.urls.streaming`, else v1
        `urls.streaming_api`), or None. Sent with the token: a limited-federation server needs it."""
        for path in ("/api/v2/instance", "/api/v1/instance"):
            doc, _ = await self._instance_document(instance, path, ("uri", "domain"), token=token)
            advertised = _advertised_streaming_url(doc) if doc is not None else None
            if advertised:
                return advertised
        return None

    async def _instance_document(
        self, instance: InstanceRef, path: str, any_of: Sequence[str], *, token: str | None = None
    ) -> tuple[dict[str, object] | None, RawResponse]:
        """The instance document at `path` when it is a JSON object with one of the `any_of` fields."""
        response = await self._http.request(instance, "GET", path, token=token)
        if response.status != 200:
            if response.status in (502, 503, 504):
                raise status_error(instance, response)
            return None, response
        try:
            data = decode_json(instance, response)
        except BadResponseError:
            return None, response
        if not isinstance(data, dict) or not any(_text(data, key) for key in any_of):
            return None, response
        return data, response

    async def _nodeinfo_software(self, instance: InstanceRef) -> tuple[str | None, str | None]:
        """Software name and version from nodeinfo, or (None, None). The document is always read from the
        instance itself: only the path of the advertised link is used."""
        try:
            index = await self._http.request(instance, "GET", "/.well-known/nodeinfo")
            if index.status != 200:
                return None, None
            links = decode_json(instance, index)
            hrefs: list[tuple[str, str]] = []
            if isinstance(links, dict) and isinstance(links.get("links"), list):
                for link in links["links"][:20]:
                    if isinstance(link, dict):
                        rel, href = _text(link, "rel"), _text(link, "href")
                        if rel and href and "nodeinfo.diaspora.software/ns/schema/2." in rel:
                            hrefs.append((rel, href))
            if not hrefs:
                return None, None
            path = httpx.URL(max(hrefs)[1]).path
            if not _NODEINFO_PATH.match(path):
                return None, None
            response = await self._http.request(instance, "GET", path)
            if response.status != 200:
                return None, None
            doc = decode_json(instance, response)
        except (InstanceUnreachableError, ForbiddenAddressError, RateLimitedError):
            raise
        except (FediverseError, httpx.InvalidURL):
            return None, None
        if not isinstance(doc, dict):
            return None, None
        name = _text(doc, "software", "name")
        return (name.lower()[:64] if name else None), (_text(doc, "software", "version") or None)

    def learn_software(self, instance: InstanceRef, software: str | None) -> None:
        """Pace this instance by its server's rate-limit model from now on (see `ratelimit`)."""
        self._http.learn_software(instance, software)

    # -- OAuth -----------------------------------------------------------------------------------------

    async def register_app(
        self, instance: InstanceRef, scopes: Iterable[str], *, client_name: str, website: str | None = None
    ) -> AppRegistration:
        """Register an OAuth app for the out-of-band flow (caching per instance + scopes is the caller's)."""
        scope_list = normalize_scopes(scopes)
        form = {"client_name": client_name, "redirect_uris": OOB_REDIRECT_URI, "scopes": " ".join(scope_list)}
        if website:
            form["website"] = website
        response = await self._http.request(instance, "POST", "/api/v1/apps", data=form)
        if response.status != 200:
            error, _ = error_fields(response)
            detail = server_text(error)
            raise OAuthError(
                f"{instance.display} refused to register the bot as an app (HTTP {response.status}"
                + (f": {detail})." if detail else ").")
            )
        try:
            app = parse_app(decode_json(instance, response))
        except ShapeError as exc:
            raise _bad_shape(instance, "an app registration", exc) from None
        return app if app.scopes else replace(app, scopes=scope_list)

    async def exchange_code(
        self, instance: InstanceRef, app: AppRegistration, code: str, code_verifier: str | None = None
    ) -> TokenGrant:
        """Trade an authorization code for an access token (with the flow's PKCE verifier, if given).

        The app's scopes (one app per scope set: the ones the flow asked for) go along: Iceshrimp.NET
        (`AuthSchemas.OauthTokenRequest`) takes a request without `scope` as one for `read` alone, which
        cuts a token down to `read` or fails when `read` was not granted; the others ignore the field."""
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "client_id": app.client_id,
            "client_secret": app.client_secret,
            "redirect_uri": OOB_REDIRECT_URI,
        }
        if app.scopes:
            form["scope"] = " ".join(app.scopes)
        if code_verifier is not None:
            form["code_verifier"] = code_verifier
        response = await self._http.request(instance, "POST", "/oauth/token", data=form)
        if response.status == 200:
            try:
                return parse_token(decode_json(instance, response))
            except ShapeError as exc:
                raise _bad_shape(instance, "a token response", exc) from None
        error, description = error_fields(response)
        if error == NO_ROWS and not await self._app_known(instance, app):
            error = "invalid_client"  # GoToSocial says "no rows" for an unknown client_id as for a bad code
        raise oauth_error(instance, response, error, description, redact=(code, app.client_secret))

    async def _app_known(self, instance: InstanceRef, app: AppRegistration) -> bool:
        """Whether the instance still knows our app, probed with a client_credentials request."""
        form = {
            "grant_type": "client_credentials",
            "client_id": app.client_id,
            "client_secret": app.client_secret,
            "redirect_uri": OOB_REDIRECT_URI,
        }
        if app.scopes:
            form["scope"] = app.scopes[0]
        response = await self._http.request(instance, "POST", "/oauth/token", data=form)
        error, _ = error_fields(response)
        if response.status == 200:
            try:
                grant = parse_token(decode_json(instance, response))
                await self.revoke(instance, app, grant.access_token)
            except FediverseError:
                pass  # an app-only token that expires on its own; nothing more to do
            return True
        return error != NO_ROWS

    async def revoke(self, instance: InstanceRef, app: AppRegistration, token: str) -> None:
        """Revoke an access token. An already revoked or unknown token counts as revoked."""
        form = {"client_id": app.client_id, "client_secret": app.client_secret, "token": token}
        response = await self._http.request(instance, "POST", "/oauth/revoke", data=form)
        if response.status == 200:
            return
        if response.status in (404, 405):
            raise RevokeUnsupportedError(
                f"{instance.display} does not support revoking tokens; remove the bot's access in the "
                "instance's settings (Applications) instead."
            )
        if response.status == 403:
            if await self._token_is_gone(instance, token):
                return  # Iceshrimp.NET answers 403 for a token it no longer knows, e.g. one revoked already
            raise OAuthError(
                f"{instance.display} refused to revoke the token: it says the token belongs to another app."
            )
        error, description = error_fields(response)
        raise oauth_error(instance, response, error, description, redact=(token, app.client_secret))

    async def _token_is_gone(self, instance: InstanceRef, token: str) -> bool:
        """Whether the instance rejects `token` outright (401), so there is nothing left to revoke."""
        path = "/api/v1/accounts/verify_credentials"
        response = await self._http.request(instance, "GET", path, token=token)
        return response.status == 401

    # -- account and notifications ---------------------------------------------------------------------

    async def verify_credentials(
        self, instance: InstanceRef, token: str, *, account_domain: str | None = None
    ) -> FediverseAccount:
        """The account the token belongs to. Its `acct` is always the full `user@domain`."""
        path = "/api/v1/accounts/verify_credentials"
        response = await self._http.request(instance, "GET", path, token=token)
        if response.status != 200:
            raise status_error(instance, response)
        try:
            account = parse_account(decode_json(instance, response))
        except ShapeError as exc:
            raise _bad_shape(instance, "an account", exc) from None
        if "@" in account.acct:
            return account
        if account_domain is None:
            document, _ = await self._instance_document(instance, "/api/v1/instance", ("uri",), token=token)
            found = _text(document, "account_domain") or _text(document, "uri") if document else None
            account_domain = _bare_domain(found) if found else instance.netloc
        return replace(account, acct=f"{account.acct}@{account_domain}")

    async def notifications(
        self,
        instance: InstanceRef,
        token: str,
        *,
        since_id: str | None = None,
        min_id: str | None = None,
        max_id: str | None = None,
        limit: int | None = None,
        types: Iterable[str] = (),
        exclude_types: Iterable[str] = (),
    ) -> Page:
        """One page of notifications, newest first. Cursors come from the Link header (none if empty)."""
        params: QueryParams = []
        for key, value in (("since_id", since_id), ("min_id", min_id), ("max_id", max_id)):
            if value is not None:
                params.append((key, value))
        if limit is not None:
            params.append(("limit", str(max(1, min(limit, MAX_PAGE_LIMIT)))))
        params += [("types[]", str(t)) for t in types]
        params += [("exclude_types[]", str(t)) for t in exclude_types]
        path = "/api/v1/notifications"
        try:
            response = await self._http.request(instance, "GET", path, params=params, token=token)
        except ResponseTooLargeError as exc:
            raise PageTooLargeError(str(exc), first_item_id(exc.prefix)) from None
        if response.status != 200:
            raise status_error(instance, response)
        data = decode_json(instance, response)
        if not isinstance(data, list):
            raise BadResponseError(f"{instance.display} sent a notification list that is not a list.")
        items: list[Notification] = []
        skipped: list[str] = []
        for raw in data:
            try:
                items.append(parse_notification(raw))
            except ShapeError as exc:
                try:
                    skipped.append(notification_id(raw))
                except ShapeError:
                    raise _bad_shape(instance, "a notification", exc) from None
        links = parse_link_header(response.headers.get("link"))
        return Page(
            items=tuple(items),
            next_max_id=_cursor(links.get("next"), "max_id"),
            prev_min_id=_cursor(links.get("prev"), "min_id") or _cursor(links.get("prev"), "since_id"),
            skipped_ids=tuple(skipped),
        )


def _cursor(url: httpx.URL | None, key: str) -> str | None:
    """Only the cursor value is taken from a Link URL; the URL itself is never followed."""
    if url is None:
        return None
    value = url.params.get(key)
    return value if value is not None and _CURSOR.match(value) else None
