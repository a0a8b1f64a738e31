"""Talking to fediverse instances (GoToSocial and other Mastodon-client-API servers).

instance.py   user input → InstanceRef (pure)
oauth.py      authorize URL, state, scopes, pasted codes (pure)
oauth_errors.py  what an instance's OAuth error answer means (pure)
models.py     frozen API objects and their parsers (pure)
guard.py      address policy, resolver, guarded httpx client (`build_http_client`)
_http.py      one careful request: pacing, deadline, size cap, redirects, error mapping
client.py     FediverseClient: probe, register_app, exchange_code, verify_credentials,
              notifications, revoke
ratelimit.py  per-instance pacing (InstancePacer, PacerRegistry)
streaming.py  the notification websocket, through the same guard
"""
