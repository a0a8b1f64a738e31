"""Shared fixtures. Keep this small: fixtures live in their own modules and are registered here."""

pytest_plugins = ["tests.pg", "tests.db_fixtures"]
