"""Acting on the fediverse from Matrix (issue 12): reactions, redactions and replies to relayed messages,
and `post`. `intents` and `decisions` are the pure core (what an event asks for, whether it may, what a
redaction undoes, what the user is told), `ports` the fediverse calls as protocols, `journal` the database
steps, and `service` does the I/O."""
