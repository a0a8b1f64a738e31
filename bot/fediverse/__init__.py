"""Talking to fediverse instances (GoToSocial and other Mastodon-client-API servers).

instance.py   user input → InstanceRef (pure)
oauth.py      authorize URL, state, code lifetimes, pasted codes (pure)
scopes.py     the scope vocabulary, covering, what relaying, streaming and acting need per server (pure)
replies.py    reply composition and Matrix text → status text (pure)
notification_types.py  the notification types the bot knows, with their words (pure)
oauth_errors.py  what an instance's OAuth error answer means (pure)
models.py     frozen API objects and their parsers (pure)
guard.py      address policy, guarded httpx client (`build_http_client`)
resolver.py   name lookups on the resolver's own bounded thread pool (`SystemResolver`)
_http.py      one careful request: pacing, deadline, size cap, redirects, error mapping
client.py     FediverseClient: probe, register_app, exchange_code, verify_credentials,
              notifications, revoke; `client.actions` for the writes
actions.py    FediverseActions: get_status, post_status, favourite, reblog, follow requests (issue 12)
ratelimit.py  pacing per rate-limit bucket (InstancePacer, PacerRegistry)
streaming.py  the notification websocket, through the same guard
"""
