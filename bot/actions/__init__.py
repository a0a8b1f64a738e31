"""Acting on the fediverse from Matrix (issue 12): reactions, redactions and replies to relayed messages,
and `post`. `intents` is the pure core (what an event asks for, whether it may), `service` does the I/O."""
