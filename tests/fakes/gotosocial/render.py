"""Pure renderers: API JSON objects and the HTML pages of the browser flow."""

from __future__ import annotations

import html
from typing import Any

from tests.fakes.gotosocial.state import FakeApp, FakeState, FakeUser

DEFAULT_PRIVACY = "unlisted"  # every fake user's default visibility (`source.privacy`)


def account_json(state: FakeState, user: FakeUser, *, with_source: bool = False) -> dict[str, Any]:
    if user.domain is None:
        url = f"{state.base_url}/@{user.username}"
        avatar = f"{state.base_url}/assets/default_avatars/GoToSocial_icon1.webp"
        header = f"{state.base_url}/assets/default_header.webp"
    else:
        url = f"https://{user.domain}/@{user.username}"
        avatar = f"https://{user.domain}/avatars/{user.username}.png"
        header = f"https://{user.domain}/headers/{user.username}.png"
    out: dict[str, Any] = {
        "id": user.account_id,
        "username": user.username,
        "acct": user.acct,
        "display_name": user.display_name,
        "locked": user.locked,
        "discoverable": False,
        "bot": user.bot,
        "created_at": user.created_at,
        "note": "",
        "url": url,
        "avatar": avatar,
        "avatar_static": avatar,
        "header": header,
        "header_static": header,
        "followers_count": 0,
        "following_count": 0,
        "statuses_count": state.statuses_by_user.get(user.account_id, 0),
        "last_status_at": None,
        "emojis": [],
        "fields": [],
    }
    if with_source:
        out["source"] = {
            "privacy": DEFAULT_PRIVACY,
            "web_visibility": "unlisted",
            "sensitive": False,
            "language": "en",
            "status_content_type": "text/plain",
            "note": "",
            "fields": [],
            "follow_requests_count": 0,
        }
        out["role"] = {"id": "3", "name": "user", "permissions": "0", "highlighted": False}
    return out


def status_json(state: FakeState, author: FakeUser, status_id: str, created_at: str, content_html: str,
                spoiler_text: str) -> dict[str, Any]:
    if author.domain is None:
        uri = f"{state.base_url}/users/{author.username}/statuses/{status_id}"
        url = f"{state.base_url}/@{author.username}/statuses/{status_id}"
    else:
        uri = f"https://{author.domain}/users/{author.username}/statuses/{status_id}"
        url = f"https://{author.domain}/@{author.username}/statuses/{status_id}"
    return {
        "id": status_id,
        "created_at": created_at,
        "in_reply_to_id": None,
        "in_reply_to_account_id": None,
        "sensitive": bool(spoiler_text),
        "spoiler_text": spoiler_text,
        "visibility": "public",
        "language": "en",
        "uri": uri,
        "url": url,
        "replies_count": 0,
        "reblogs_count": 0,
        "favourites_count": 0,
        "favourited": False,
        "reblogged": False,
        "muted": False,
        "bookmarked": False,
        "pinned": False,
        "content": content_html,
        "reblog": None,
        "account": account_json(state, author),
        "media_attachments": [],
        "mentions": [],
        "tags": [],
        "emojis": [],
        "card": None,
        "poll": None,
    }


def app_json(app: FakeApp, *, sensitive: bool = True) -> dict[str, Any]:
    out: dict[str, Any] = {"id": app.id, "created_at": app.created_at, "name": app.name}
    if app.website:
        out["website"] = app.website
    out["redirect_uri"] = "\n".join(app.redirect_uris)
    out["redirect_uris"] = list(app.redirect_uris)
    if sensitive:
        out["client_id"] = app.client_id
        out["client_secret"] = app.client_secret
    out["vapid_key"] = _APP_VAPID
    out["scopes"] = list(app.scopes)
    return out


_APP_VAPID = "BBxYvXA2r8EKJgq9h_0kQyXwWZK6lL6uBt8v0ZpUuFqXg1pX9m2kH1q4LqIuE5mY0f6oV3yPZ8mYwq7nW1aP0bE"


def _config_common() -> dict[str, Any]:
    return {
        "statuses": {
            "max_characters": 5000,
            "max_media_attachments": 6,
            "characters_reserved_per_url": 25,
            "supported_mime_types": ["text/plain", "text/markdown"],
        },
        "media_attachments": {
            "supported_mime_types": ["image/jpeg", "image/png", "image/gif", "image/webp", "video/mp4"],
            "image_size_limit": 41943040,
            "image_matrix_limit": 16777216,
            "video_size_limit": 41943040,
            "video_frame_rate_limit": 60,
            "video_matrix_limit": 16777216,
            "description_limit": 1500,
            "description_minimum": 0,
        },
        "polls": {"max_options": 6, "max_characters_per_option": 50, "min_expiration": 300,
                  "max_expiration": 2629746},
        "accounts": {"allow_custom_css": False, "max_featured_tags": 10, "max_profile_fields": 6},
        "emojis": {"emoji_size_limit": 51200},
        "oidc_enabled": False,
    }


def streaming_url(state: FakeState, *, actual: bool = False) -> str:
    """The streaming base URL the instance documents advertise (``actual``: where streaming really is)."""
    profile = state.profile
    separate = profile.separate_streaming_host and (actual or profile.advertises_streaming_host)
    host = state.streaming_host if separate else state.host
    secure = profile.advertised_stream_scheme == "wss" or state.base_url.startswith("https:")
    return f"{'wss' if secure else 'ws'}://{host}"


def version_string(state: FakeState) -> str:
    return state.profile.version


def instance_v1(state: FakeState) -> dict[str, Any]:
    return {
        "uri": state.host,
        "account_domain": state.account_domain,
        "title": "GoToSocial Testing Instance",
        "description": "<p>A fake GoToSocial instance for tests.</p>",
        "description_text": "A fake GoToSocial instance for tests.",
        "short_description": "<p>fake</p>",
        "short_description_text": "fake",
        "email": f"admin@{state.hostname}",
        "version": version_string(state),
        "languages": [],
        "registrations": False,
        "approval_required": True,
        "invites_enabled": False,
        "configuration": _config_common(),
        "urls": {"streaming_api": streaming_url(state)},
        "stats": {"domain_count": 0, "status_count": sum(state.statuses_by_user.values()),
                  "user_count": sum(1 for u in state.users.values() if u.domain is None)},
        "thumbnail": f"{state.base_url}/assets/logo.webp",
        "thumbnail_type": "image/webp",
        "max_toot_chars": 5000,
        "rules": [],
    }


def instance_v2(state: FakeState) -> dict[str, Any]:
    config = _config_common()
    config["urls"] = {"streaming": streaming_url(state)}
    config["vapid"] = {"public_key": _APP_VAPID}
    config["translation"] = {"enabled": False}
    return {
        "domain": state.host,
        "account_domain": state.account_domain,
        "title": "GoToSocial Testing Instance",
        "version": version_string(state),
        "source_url": state.profile.source_url,
        "description": "<p>A fake GoToSocial instance for tests.</p>",
        "description_text": "A fake GoToSocial instance for tests.",
        "usage": {"users": {"active_month": sum(1 for u in state.users.values() if u.domain is None)}},
        "thumbnail": {"url": f"{state.base_url}/assets/logo.webp", "thumbnail_type": "image/webp"},
        "languages": [],
        "configuration": config,
        "registrations": {"enabled": False, "approval_required": True, "reason_required": True},
        "contact": {"email": f"admin@{state.hostname}"},
        "rules": [],
    }


def nodeinfo_links(state: FakeState) -> dict[str, Any]:
    return {"links": [
        {"rel": "http://nodeinfo.diaspora.software/ns/schema/2.0", "href": f"{state.base_url}/nodeinfo/2.0"},
        {"rel": "http://nodeinfo.diaspora.software/ns/schema/2.1", "href": f"{state.base_url}/nodeinfo/2.1"},
    ]}


def nodeinfo(state: FakeState, schema: str) -> dict[str, Any]:
    software: dict[str, Any] = {"name": state.profile.software, "version": version_string(state)}
    if schema == "2.1":
        software["repository"] = state.profile.source_url
        software["homepage"] = state.profile.homepage
    return {
        "version": schema,
        "software": software,
        "protocols": ["activitypub"],
        "services": {"inbound": [], "outbound": []},
        "openRegistrations": False,
        "usage": {"users": {"total": sum(1 for u in state.users.values() if u.domain is None)},
                  "localPosts": sum(state.statuses_by_user.values())},
        "metadata": {"nodeName": "GoToSocial Testing Instance"},
    }


# --- HTML ------------------------------------------------------------------------------------------
TRUSTED_PROXIES_BANNER = (
    '<div class="trusted-proxies-rec"><p>Warning! It looks like <code>trusted-proxies</code> is not set '
    "correctly in this instance's configuration. This may cause rate-limiting issues and, by extension, "
    "federation issues.</p><p>If you are the instance admin, you should fix this by adding "
    "<code>127.0.0.1/32</code> to your <code>trusted-proxies</code>.</p><p>If you are using a reverse proxy "
    "that sets <code>X-Forwarded-For</code> or <code>X-Real-IP</code>, ...</p></div>"
)


def page(title: str, body_class: str, main: str, *, banner: bool) -> str:
    head = TRUSTED_PROXIES_BANNER if banner else ""
    return (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head><meta charset=\"utf-8\">"
        f"<title>{html.escape(title)} - GoToSocial Testing Instance</title></head>\n"
        f"<body class=\"page {body_class}\">\n<header class=\"page-header\">{head}"
        "<a href=\"/\"><h1>GoToSocial Testing Instance</h1></a></header>\n"
        f"<main>\n{main}\n</main>\n<footer>Powered by GoToSocial</footer>\n</body>\n</html>\n"
    )


def sign_in_page(*, banner: bool) -> str:
    main = (
        '<section class="with-form" aria-labelledby="sign-in">\n'
        '<h2 id="sign-in">Sign in</h2>\n'
        '<form action="/auth/sign_in" method="POST">\n'
        '<div class="labelinput"><label for="username">Email</label>'
        '<input type="email" name="username" id="username" autocomplete="username" required autofocus>'
        "</div>\n"
        '<div class="labelinput"><label for="password">Password</label>'
        '<input type="password" name="password" id="password" autocomplete="current-password" required>'
        "</div>\n"
        '<button type="submit" class="btn btn-success">Sign in</button>\n'
        "</form>\n</section>"
    )
    return page("Sign in", "sign-in-page", main, banner=banner)


def authorize_page(*, user: str, app_name: str, app_website: str, redirect: str, scope: str,
                   banner: bool) -> str:
    e = html.escape
    if app_website:
        app = (f'<a href="{e(app_website)}" rel="nofollow noreferrer noopener" target="_blank">'
               f"{e(app_name)}</a>")
    else:
        app = f"<b>{e(app_name)}</b>"
    main = (
        '<section class="with-form" aria-labelledby="authorize">\n'
        '<h2 id="authorize">Authorize app</h2>\n'
        '<form action="/oauth/authorize" method="POST">\n'
        f"<p>Hi <b>{e(user)}</b>!</p>\n"
        f"<p> Application {app} would like to perform actions on your behalf, with scope "
        f"<em>{e(scope)}</em>.</p>\n"
        f"<p> To continue, the application will redirect to: <code>{e(redirect)}</code></p>\n"
        '<button type="submit" class="btn btn-success">Allow</button>\n'
        "</form>\n</section>"
    )
    return page("Authorize", "authorize-page", main, banner=banner)


def oob_page(*, user: str, scope: str, code: str, banner: bool) -> str:
    e = html.escape
    main = (
        '<section class="oob-token">\n'
        f"    <h1>Hi <b>{e(user)}</b>!</h1>\n"
        f"    <p>Here's your out-of-band token with scope \"<em>{e(scope)}</em>\", use it wisely:</p>\n"
        f"    <code>{e(code)}</code>\n"
        "</section>"
    )
    return page("Out-of-band token", "oob-page", main, banner=banner)


def error_page(status: int, text: str, *, banner: bool) -> str:
    main = f'<section class="error"><h2>{status}</h2><p>{html.escape(text)}</p></section>'
    return page("Error", "error-page", main, banner=banner)
