from __future__ import annotations

import pytest

from bot.commands.parse import ParsedCommand, parse_command
from bot.commands.registry import Command, CommandContext, CommandRegistry
from bot.commands.throttle import UserThrottle


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("!gts connect example.org", ParsedCommand("connect", ("example.org",))),
        ("  !GTS   Connect  example.org  read  ", ParsedCommand("connect", ("example.org", "read"))),
        ("!gts", ParsedCommand("help", ())),
        ("!gts\nstatus", ParsedCommand("status", ())),
        ("!gtsconnect example.org", None),
        ("hello !gts help", None),
        ("", None),
        ("   ", None),
    ],
)
def test_parse_command(body: str, expected: ParsedCommand | None) -> None:
    assert parse_command(body, "!gts") == expected


def test_parse_command_custom_prefix() -> None:
    assert parse_command("!fedi status", "!fedi") == ParsedCommand("status", ())
    assert parse_command("!gts status", "!fedi") is None


async def _noop(ctx: CommandContext, args: tuple[str, ...]) -> None:
    return None


def test_registry_lookup_aliases_and_help() -> None:
    registry = CommandRegistry()
    registry.add(Command("status", "", "Show your accounts", _noop, aliases=("list",)))
    summary = "Connect <b>an</b> account"
    registry.add(Command("connect", "<instance> [scopes]", summary, _noop, min_args=1, max_args=None))
    status = registry.get("status")
    assert status is not None
    assert registry.get("list") is status
    assert registry.get("nope") is None
    help_reply = registry.help("!gts")
    assert "!gts connect <instance> [scopes] — Connect <b>an</b> account" in help_reply.plain
    assert "(alias: list)" in help_reply.plain
    assert "<code>!gts connect &lt;instance&gt; [scopes]</code>" in help_reply.html
    assert "<b>an</b>" not in help_reply.html  # summaries are escaped, not trusted HTML


def test_registry_refuses_duplicate_names() -> None:
    registry = CommandRegistry()
    registry.add(Command("status", "", "x", _noop, aliases=("list",)))
    with pytest.raises(ValueError, match="list"):
        registry.add(Command("list", "", "y", _noop))


@pytest.mark.parametrize(
    ("min_args", "max_args", "args", "ok"),
    [
        (0, 0, (), True),
        (0, 0, ("x",), False),
        (1, None, (), False),
        (1, None, ("a", "b", "c"), True),
        (0, 1, ("a",), True),
        (0, 1, ("a", "b"), False),
    ],
)
def test_command_arity(min_args: int, max_args: int | None, args: tuple[str, ...], ok: bool) -> None:
    assert Command("x", "", "", _noop, min_args=min_args, max_args=max_args).accepts(args) is ok


def test_throttle_bucket_refills_over_time() -> None:
    now = [0.0]
    throttle = UserThrottle(3, clock=lambda: now[0])
    assert [throttle.allow("@a:x") for _ in range(4)] == [True, True, True, False]
    assert throttle.allow("@b:x")  # buckets are per user
    now[0] += 20.0  # 3 per minute = one token per 20 s
    assert throttle.allow("@a:x")
    assert not throttle.allow("@a:x")
