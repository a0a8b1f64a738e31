"""A fake GoToSocial (and Mastodon-family) server on loopback for the tests; see ``server.py``.

Modules: ``core`` (pure facts: ids, errors, scopes), ``state`` (users, apps, tokens, notifications),
``httputil`` and ``middleware`` (the HTTP conventions), ``oauth``, ``tokens``, ``api``, ``stream``
(the endpoints), ``render`` (HTML and JSON shapes), ``profiles`` (which server it imitates),
``testkit`` (helpers for tests), ``server`` (the aiohttp app and its public handle, ``FakeGoToSocial``).
"""

from tests.fakes.gotosocial.profiles import (
    AKKOMA,
    GOTOSOCIAL,
    ICESHRIMP,
    MASTODON,
    PROFILES,
    Profile,
    profile_named,
)
from tests.fakes.gotosocial.server import AuthorizeError, FakeGoToSocial, main

__all__ = [
    "AKKOMA",
    "GOTOSOCIAL",
    "ICESHRIMP",
    "MASTODON",
    "PROFILES",
    "AuthorizeError",
    "FakeGoToSocial",
    "Profile",
    "main",
    "profile_named",
]
