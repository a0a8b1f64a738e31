from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

import pytest

from bot.cli import SUBCOMMANDS, Invocation, Lazy, Subcommand, build_parser, main

PASSWORD = "pw-never-printed-4711"


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """A complete configuration from the environment alone, with its data under tmp_path."""
    monkeypatch.chdir(tmp_path)  # no ./config.yaml here
    return {
        "GTS_BOT_MATRIX__HOMESERVER": "https://matrix.test.org",
        "GTS_BOT_MATRIX__USER_ID": "@bot:test.org",
        "GTS_BOT_MATRIX__PASSWORD": PASSWORD,
        "GTS_BOT_DATA_DIR": str(tmp_path / "data"),
    }


def test_python_m_bot_help_runs_in_a_real_process(tmp_path: Path) -> None:
    clean_env = {k: v for k, v in os.environ.items() if not k.startswith("GTS_BOT_")}
    result = subprocess.run(
        [sys.executable, "-m", "bot", "--help"], cwd=tmp_path, env=clean_env, capture_output=True, text=True,
        timeout=60, check=False,
    )
    assert result.returncode == 0, result.stderr
    for name in ("run", "migrate", "check-config", "keys"):
        assert name in result.stdout


def test_python_m_bot_check_config_exit_code_in_a_real_process(tmp_path: Path) -> None:
    clean_env = {k: v for k, v in os.environ.items() if not k.startswith("GTS_BOT_")}
    result = subprocess.run(
        [sys.executable, "-m", "bot", "check-config"], cwd=tmp_path, env=clean_env, capture_output=True,
        text=True, timeout=60, check=False,
    )
    assert result.returncode == 78
    assert "matrix.homeserver: required" in result.stderr
    assert "Traceback" not in result.stderr


# -- what the command line imports ------------------------------------------------------------------

HEAVY_MODULES = (
    "nio", "sqlalchemy", "aiohttp", "httpx", "httpcore", "alembic", "cryptography", "websockets",
    "bot.app", "bot.store", "bot.resources",
)  # fmt: skip


def modules_loaded_after(
    code: str, cwd: Path, environ: Mapping[str, str] | None = None
) -> tuple[int, set[str]]:
    """Run `code` (which sets `code`, an exit status) in a fresh interpreter; which modules did it load?"""
    trailer = "\nimport json, sys\nprint(json.dumps([code, sorted(sys.modules)]))\n"
    env = {k: v for k, v in os.environ.items() if not k.startswith("GTS_BOT_")}
    result = subprocess.run(
        [sys.executable, "-c", code + trailer], cwd=cwd, env={**env, **(environ or {})}, capture_output=True,
        text=True, timeout=60, check=True,
    )  # fmt: skip
    status, modules = json.loads(result.stdout.splitlines()[-1])
    return status, set(modules)


def heavy(modules: set[str]) -> list[str]:
    return sorted(m for m in modules if any(m == h or m.startswith(f"{h}.") for h in HEAVY_MODULES))


@pytest.mark.parametrize(
    ("argv", "status"),
    [
        (["--help"], 0),
        (["keys", "--help"], 0),
        (["accounts", "revoke", "--help"], 0),
        (["migrate-db", "--help"], 0),
        (["check-config"], 0),
        (["check-config", "-c", "missing.yaml"], 78),
    ],
)
def test_help_and_check_config_import_nothing_heavy(
    argv: list[str], status: int, tmp_path: Path, env: dict[str, str]
) -> None:
    code = f"from bot.cli import main\ncode = main({argv!r})\n"
    exit_status, modules = modules_loaded_after(code, tmp_path, env)
    assert exit_status == status
    assert "bot.cli" in modules
    assert heavy(modules) == []


def test_a_command_that_needs_the_store_imports_it(tmp_path: Path, env: dict[str, str]) -> None:
    # The control for the test above: the probe does see the heavy imports when a command needs them.
    code = "from bot.cli import main\ncode = main(['migrate'])\n"
    exit_status, modules = modules_loaded_after(code, tmp_path, env)
    assert exit_status == 0
    assert {"sqlalchemy", "alembic"} <= set(heavy(modules))


@pytest.mark.parametrize("command", SUBCOMMANDS, ids=lambda c: " ".join(c.path))
def test_every_handler_is_lazy_and_exists(command: Subcommand) -> None:
    assert isinstance(command.handler, Lazy)
    assert command.handler.module.startswith("bot.cli.")
    assert callable(command.handler.resolve())


@pytest.mark.parametrize("command", SUBCOMMANDS, ids=lambda c: " ".join(c.path))
def test_every_subcommand_explains_itself(command: Subcommand, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*command.path, "--help"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert command.description in out
    assert command.description.endswith(".")
    assert "-c PATH, --config PATH" in out


def test_keys_without_a_subcommand_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["keys"]) == 2
    assert "generate" in capsys.readouterr().err


def test_unknown_command_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["frobnicate"]) == 2
    assert "invalid choice" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "path", "config"),
    [
        ([], ("run",), None),
        (["-c", "x.yaml"], ("run",), "x.yaml"),
        (["run", "--config", "y.yaml"], ("run",), "y.yaml"),
        (["-c", "x.yaml", "check-config"], ("check-config",), "x.yaml"),
        (["keys", "rotate", "-c", "z.yaml"], ("keys", "rotate"), "z.yaml"),
    ],
)
def test_parsing_picks_the_command_and_config(
    argv: list[str], path: tuple[str, ...], config: str | None
) -> None:
    args = build_parser().parse_args(argv)
    assert args.command.path == path
    assert getattr(args, "config", None) == config


def test_a_new_command_is_one_table_entry() -> None:
    def show(inv: Invocation) -> int:
        return 42

    extra = Subcommand(("keys", "show"), "Show key ids.", "Show the ids of the keys in the key file.", show)
    args = build_parser((*SUBCOMMANDS, extra)).parse_args(["keys", "show"])
    assert args.command.handler(Invocation(args, {})) == 42


# -- check-config -----------------------------------------------------------------------------------


def test_check_config_lists_every_problem(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(
        f"matrix:\n  homeserver: matrix.test.org\n  user_id: bot\n  password: {PASSWORD}\n"
        "  command_prefix: 'a b'\nlogging:\n  format: xml\nrelay:\n  pol_interval: 5\n"
    )
    assert main(["check-config", "-c", str(path)], environ={"GTS_BOT_OBSERVABILITY__PORT": "99999"}) == 78
    err = capsys.readouterr().err
    for key in (
        "matrix.homeserver",
        "matrix.user_id",
        "matrix.command_prefix",
        "logging.format",
        "relay.pol_interval: unknown key; did you mean relay.poll_interval?",
        "observability.port (from GTS_BOT_OBSERVABILITY__PORT)",
    ):
        assert f"  - {key}" in err
    assert PASSWORD not in err


def test_check_config_from_the_environment_alone(
    env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["check-config"], environ=env) == 0
    out = capsys.readouterr().out
    assert out.startswith("configuration OK (environment only)")
    assert "@bot:test.org on https://matrix.test.org (password login)" in out
    assert "missing: run `gts-bot keys generate`" in out
    assert PASSWORD not in out


def test_check_config_hides_database_passwords(
    env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    env["GTS_BOT_DATABASE__URL"] = f"postgresql+asyncpg://gts:{PASSWORD}@db.internal/gts"
    assert main(["check-config"], environ=env) == 0
    out = capsys.readouterr().out
    assert "postgresql+asyncpg://gts:***@db.internal/gts" in out
    assert PASSWORD not in out


def test_config_file_from_gts_bot_config(
    tmp_path: Path, env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "elsewhere.yaml"
    path.write_text("matrix:\n  command_prefix: '!fedi'\n")
    assert main(["check-config"], environ={**env, "GTS_BOT_CONFIG": str(path)}) == 0
    out = capsys.readouterr().out
    assert f"configuration OK ({path})" in out
    assert "'!fedi'" in out


def test_an_explicit_missing_config_file_fails(
    tmp_path: Path, env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["check-config", "-c", str(tmp_path / "missing.yaml")], environ=env) == 78
    assert "missing.yaml: config file not found" in capsys.readouterr().err


# -- keys -------------------------------------------------------------------------------------------


def test_keys_generate_makes_a_private_file_and_never_overwrites(
    tmp_path: Path, env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    key_file = tmp_path / "data" / "keyring.json"
    assert main(["keys", "generate"], environ=env) == 0
    assert f"wrote a new key file to {key_file}" in capsys.readouterr().out
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    before = key_file.read_bytes()

    assert main(["keys", "generate"], environ=env) == 77
    assert "refusing to overwrite" in capsys.readouterr().err
    assert key_file.read_bytes() == before


def test_keys_generate_to_an_explicit_path_needs_no_configuration(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    key_file = tmp_path / "keys" / "ring.json"
    assert main(["keys", "generate", "--key-file", str(key_file)], environ={}) == 0
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600


def test_migrate_then_rotate_keys(
    tmp_path: Path, env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    from bot.store.keyring import KeyRing

    assert main(["migrate"], environ=env) == 0
    out = capsys.readouterr().out
    assert f"database SQLite {tmp_path}/data/gts-bot.sqlite3 is at revision " in out
    assert (tmp_path / "data" / "gts-bot.sqlite3").exists()
    assert main(["migrate"], environ=env) == 0  # a second run is a no-op

    assert main(["keys", "generate"], environ=env) == 0
    assert main(["keys", "rotate"], environ=env) == 0
    out = capsys.readouterr().out
    assert "re-encrypted 0 stored secrets with a new key" in out
    assert "old keys remain in the key file" in out
    assert len(KeyRing.load(tmp_path / "data" / "keyring.json").key_ids) == 2


def test_migrate_before_the_first_run_leaves_a_private_data_dir_and_database(
    tmp_path: Path, env: dict[str, str]
) -> None:
    old_umask = os.umask(0o022)
    try:
        assert main(["migrate"], environ=env) == 0
    finally:
        os.umask(old_umask)
    data = tmp_path / "data"
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    assert stat.S_IMODE((data / "gts-bot.sqlite3").stat().st_mode) == 0o600


def test_a_key_file_others_can_read_stops_the_bot_with_its_own_exit_code(
    tmp_path: Path, env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["keys", "generate"], environ=env) == 0
    key_file = tmp_path / "data" / "keyring.json"
    key_file.chmod(0o644)
    assert main(["keys", "rotate"], environ=env) == 72
    err = capsys.readouterr().err
    assert f"chmod 600 {key_file}" in err
    assert "Traceback" not in err


def test_keys_rotate_without_a_key_file_is_a_key_ring_error(
    env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["keys", "rotate"], environ=env) == 77
    assert "Traceback" not in capsys.readouterr().err


# -- failures ---------------------------------------------------------------------------------------


def test_unexpected_errors_are_one_line_without_secrets(
    tmp_path: Path, env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    # Nothing listens on port 1 of the loopback: the migration fails with a connection error.
    env["GTS_BOT_DATABASE__URL"] = f"postgresql+asyncpg://gts:{PASSWORD}@127.0.0.1:1/gts"
    env["GTS_BOT_LOGGING__FORMAT"] = "json"
    assert main(["migrate"], environ=env) == 1
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("gts-bot migrate: unexpected error")]
    assert len(lines) == 1
    assert "see the log, reference " in lines[0]
    assert PASSWORD not in err

