"""A demo of the bot for people trying it from a checkout: `python -m tests.demo` (see `runner`)."""
