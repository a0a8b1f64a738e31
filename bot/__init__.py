"""gts-bot: relays fediverse notifications into Matrix."""
