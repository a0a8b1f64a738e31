"""Placeholder until the CLI lands (being written)."""


def main() -> int:
    raise SystemExit("gts-bot: the CLI is not written yet")
