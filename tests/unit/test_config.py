from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from bot import config as config_module
from bot.config import (
    Config,
    MatrixConfig,
    config_path,
    env_name,
    is_user_allowed,
    known_keys,
    load_config,
)
from bot.errors import ConfigError

EXAMPLE = Path(__file__).resolve().parents[2] / "config.example.yaml"

REQUIRED = {
    "GTS_BOT_MATRIX__HOMESERVER": "https://matrix.test.org",
    "GTS_BOT_MATRIX__USER_ID": "@bot:test.org",
    "GTS_BOT_MATRIX__PASSWORD": "s3cret-pass",
}
SECRET = "hunter2-do-not-print"


def write(tmp_path: Path, text: str, name: str = "config.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def problems_of(path: Path | None, environ: dict[str, str]) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config(path, environ)
    assert info.value.exit_code == 78
    return info.value.problems


def edited_example() -> str:
    text = EXAMPLE.read_text(encoding="utf-8")
    for old, new in [
        ("https://matrix.example.org", "https://matrix.test.org"),
        ('"@gts-bot:example.org"', '"@bot:test.org"'),
        ("password: change-me", "password: s3cret-pass"),
        ('- "@*:example.org"', '- "@*:test.org"'),
    ]:
        assert old in text
        text = text.replace(old, new, 1)
    return text


# -- the example file is the schema of record -------------------------------------------------------


def test_unedited_example_reports_exactly_its_placeholders() -> None:
    problems = problems_of(EXAMPLE, {})
    assert all("unedited example value" in p for p in problems), problems
    assert sorted(p.split(":")[0] for p in problems) == [
        "matrix.allowed_users",
        "matrix.homeserver",
        "matrix.password",
        "matrix.user_id",
    ]
    assert not any("change-me" in p for p in problems), "a secret placeholder must not be echoed"


def test_edited_example_loads_and_documents_the_real_defaults(tmp_path: Path) -> None:
    from_file = load_config(write(tmp_path, edited_example()), {})
    from_env_only = load_config(None, {**REQUIRED, "GTS_BOT_MATRIX__ALLOWED_USERS": "@*:test.org"})
    assert from_file == from_env_only


def _leaf_keys(data: dict[str, Any], prefix: str = "") -> set[str]:
    sections = set(config_module._sections())
    out = set()
    for key, value in data.items():
        if key in sections:
            out |= _leaf_keys(value, f"{key}.")
        else:
            out.add(prefix + key)
    return out


def test_example_keys_and_parser_keys_match_both_ways() -> None:
    example_keys = _leaf_keys(yaml.safe_load(EXAMPLE.read_text(encoding="utf-8")))
    assert example_keys - known_keys() == set(), "keys in the example the parser does not know"
    assert known_keys() - example_keys == set(), "keys the parser knows that the example does not document"


def test_every_example_key_has_a_comment_with_its_default() -> None:
    lines = EXAMPLE.read_text(encoding="utf-8").splitlines()
    undocumented = []
    for i, line in enumerate(lines):
        match = re.match(r"^(\s*)([a-z_]+):(.*)$", line)
        if not match or (not match.group(1) and not match.group(3).strip()):
            continue  # not a key, or a section header
        comment: list[str] = []
        j = i - 1
        while j >= 0 and lines[j].strip().startswith("#"):
            comment.insert(0, lines[j])
            j -= 1
        if not re.search(r"\b(Default|Required)\b", " ".join(comment)):
            undocumented.append(match.group(2))
    assert undocumented == []


# -- sources and precedence -------------------------------------------------------------------------


def test_environment_alone_is_enough() -> None:
    config = load_config(
        None,
        {
            **REQUIRED,
            "GTS_BOT_DATA_DIR": "/var/lib/gts",
            "GTS_BOT_FEDIVERSE__ALLOW_HTTP": "true",
            "GTS_BOT_FEDIVERSE__ALLOW_PRIVATE_ADDRESSES": "No",
            "GTS_BOT_MATRIX__ALLOWED_USERS": "@*:a.org, @bob:b.org,",
            "GTS_BOT_RELAY__POLL_INTERVAL": "60",
            "GTS_BOT_OBSERVABILITY__PORT": "9000",
            "GTS_BOT_LOGGING__LEVEL": "debug",
            "UNRELATED": "ignored",
        },
    )
    assert config.matrix.homeserver == "https://matrix.test.org"
    assert config.matrix.password == "s3cret-pass"
    assert config.data_dir == Path("/var/lib/gts")
    assert config.database.url == "sqlite+aiosqlite:////var/lib/gts/gts-bot.sqlite3"
    assert config.encryption.key_file == Path("/var/lib/gts/keyring.json")
    assert config.fediverse.allow_http is True
    assert config.fediverse.allow_private_addresses is False
    assert config.matrix.allowed_users == ("@*:a.org", "@bob:b.org")
    assert config.relay.poll_interval == 60.0
    assert config.observability.port == 9000
    assert config.logging.level == "DEBUG"


def test_defaults() -> None:
    config = load_config(None, REQUIRED)
    assert config.data_dir == Path("data")
    assert config.database.url == "sqlite+aiosqlite:///data/gts-bot.sqlite3"
    assert config.encryption.key_file == Path("data/keyring.json")
    assert config.matrix.command_prefix == "!gts"
    assert config.matrix.device_name == "gts-bot"
    assert config.matrix.allowed_users == ()
    assert config.fediverse.default_scopes == ("read",)
    assert config.fediverse.allow_http is False
    assert config.relay.flow_ttl_seconds == 600.0
    assert config.logging.format == "text"


def test_environment_overrides_the_file(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "matrix:\n  homeserver: https://from-file.org\n  user_id: '@bot:file.org'\n  password: filepass\n"
        "fediverse:\n  allow_http: false\n  default_scopes: [read, write]\n",
    )
    config = load_config(
        path,
        {
            "GTS_BOT_MATRIX__HOMESERVER": "https://from-env.org",
            "GTS_BOT_FEDIVERSE__DEFAULT_SCOPES": "read,push",
        },
    )
    assert config.matrix.homeserver == "https://from-env.org"
    assert config.matrix.user_id == "@bot:file.org"
    assert config.fediverse.default_scopes == ("read", "push")


def test_least_privilege_scopes_are_accepted_with_streaming_on() -> None:
    """Mastodon streams notifications with `read:notifications` (GoToSocial then polls): not an error."""
    config = load_config(
        None, {**REQUIRED, "GTS_BOT_FEDIVERSE__DEFAULT_SCOPES": "read:notifications,profile"}
    )
    assert config.relay.streaming
    assert config.fediverse.default_scopes == ("read:notifications", "profile")


def test_empty_environment_value_is_unset_except_for_lists(tmp_path: Path) -> None:
    path = write(tmp_path, "matrix:\n  device_name: from-file\n  allowed_users: ['@a:b.org']\n")
    env = {**REQUIRED, "GTS_BOT_MATRIX__DEVICE_NAME": "", "GTS_BOT_MATRIX__ALLOWED_USERS": ""}
    config = load_config(path, env)
    assert config.matrix.device_name == "from-file"
    assert config.matrix.allowed_users == ()


def test_config_path_resolution(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert config_path(None, {}) is None  # default file absent: environment only
    assert config_path("other.yaml", {}) == Path("other.yaml")
    assert config_path(None, {"GTS_BOT_CONFIG": "/etc/gts.yaml"}) == Path("/etc/gts.yaml")
    assert config_path("cli.yaml", {"GTS_BOT_CONFIG": "/etc/gts.yaml"}) == Path("cli.yaml")
    write(tmp_path, "{}")
    assert config_path(None, {}) == Path("config.yaml")


def test_an_explicit_missing_file_is_an_error(tmp_path: Path) -> None:
    problems = problems_of(tmp_path / "nope.yaml", REQUIRED)
    assert problems == [f"{tmp_path / 'nope.yaml'}: config file not found"]


def test_gts_bot_config_is_not_an_unknown_setting() -> None:
    """GTS_BOT_CONFIG names the file (see config_path); as a setting it is neither refused nor read."""
    with_it = load_config(None, {**REQUIRED, "GTS_BOT_CONFIG": "whatever.yaml"})
    assert with_it == load_config(None, REQUIRED)
    # ...while a variable that only looks like it is an unknown setting
    assert any("GTS_BOT_CONFIGS" in p for p in problems_of(None, {**REQUIRED, "GTS_BOT_CONFIGS": "x"}))


# -- secrets from files -----------------------------------------------------------------------------


def test_secret_from_file_strips_the_trailing_newline(tmp_path: Path) -> None:
    secret_file = write(tmp_path, SECRET + "\n", "password")
    token_file = write(tmp_path, "syt_token_value\r\n", "token")
    path = write(tmp_path, f"matrix:\n  password_file: {secret_file}\n")
    env = {k: v for k, v in REQUIRED.items() if "PASSWORD" not in k}
    config = load_config(path, {**env, "GTS_BOT_MATRIX__ACCESS_TOKEN_FILE": str(token_file)})
    assert config.matrix.password == SECRET
    assert config.matrix.access_token == "syt_token_value"


def test_secret_file_from_environment_replaces_the_files_value(tmp_path: Path) -> None:
    secret_file = write(tmp_path, SECRET, "password")
    path = write(tmp_path, "matrix:\n  password: from-the-file\n")
    env = {k: v for k, v in REQUIRED.items() if "PASSWORD" not in k}
    config = load_config(path, {**env, "GTS_BOT_MATRIX__PASSWORD_FILE": str(secret_file)})
    assert config.matrix.password == SECRET


def test_secret_and_its_file_both_set_is_an_error(tmp_path: Path) -> None:
    secret_file = write(tmp_path, SECRET, "password")
    path = write(tmp_path, f"matrix:\n  password: {SECRET}\n  password_file: {secret_file}\n")
    env = {k: v for k, v in REQUIRED.items() if "PASSWORD" not in k}
    problems = problems_of(path, env)
    assert problems == ["both matrix.password and matrix.password_file are set; set only one"]


@pytest.mark.parametrize(
    ("content", "expected"),
    [(None, "No such file or directory"), ("", "is empty"), ("\n", "is empty")],
)
def test_unreadable_or_empty_secret_file(tmp_path: Path, content: str | None, expected: str) -> None:
    secret_file = tmp_path / "password"
    if content is not None:
        secret_file.write_text(content)
    env = {k: v for k, v in REQUIRED.items() if "PASSWORD" not in k}
    problems = problems_of(None, {**env, "GTS_BOT_MATRIX__PASSWORD_FILE": str(secret_file)})
    assert len(problems) == 1
    assert problems[0].startswith("matrix.password_file (from GTS_BOT_MATRIX__PASSWORD_FILE): ")
    assert expected in problems[0]


# -- validation -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("var", "value", "fragment"),
    [
        ("MATRIX__HOMESERVER", "matrix.org", "http(s) URL"),
        ("MATRIX__HOMESERVER", "ftp://matrix.org", "http(s) URL"),
        ("MATRIX__USER_ID", "bot:test.org", "Matrix user id"),
        ("MATRIX__USER_ID", "@bot", "Matrix user id"),
        ("MATRIX__COMMAND_PREFIX", "!g ts", "no whitespace"),
        ("MATRIX__ALLOWED_USERS", "@a:b.org,bob:b.org", "starting with '@'"),
        ("MATRIX__TRUST_POLICY", "never", "one of tofu, all"),
        ("DATABASE__URL", "mysql://db/x", "not supported"),
        ("DATABASE__URL", "data.sqlite3", "must be a URL"),
        ("FEDIVERSE__ALLOW_HTTP", "maybe", "true or false"),
        ("FEDIVERSE__DEFAULT_SCOPES", "", "at least one scope"),
        ("FEDIVERSE__DEFAULT_SCOPES", "read,admin", "admin"),
        ("FEDIVERSE__DEFAULT_SCOPES", "write", "notifications"),
        ("FEDIVERSE__DEFAULT_SCOPES", "read:notifications", "notifications and the account"),
        ("FEDIVERSE__CA_BUNDLE", "/nonexistent/ca.pem", "not a readable file"),
        ("FEDIVERSE__CONNECT_TIMEOUT", "0", "at least"),
        ("FEDIVERSE__INSTANCE_DENYLIST", "https://bad.org", "host names"),
        ("RELAY__POLL_INTERVAL", "1", "at least 10"),
        ("RELAY__POLL_INTERVAL", "nan", "finite"),
        ("RELAY__POLL_JITTER", "2", "between 0 and 1"),
        ("LIMITS__COMMANDS_PER_MINUTE", "1.5", "an integer"),
        ("OBSERVABILITY__PORT", "70000", "between 0 and 65535"),
        ("LOGGING__FORMAT", "xml", "one of text, json"),
        ("LOGGING__LEVEL", "loud", "one of DEBUG"),
        ("MATIRX__PASSWORD", "x", "did you mean GTS_BOT_MATRIX__PASSWORD"),
        ("MATRIX", "x", "is a section"),
    ],
)
def test_each_bad_value_names_its_key(var: str, value: str, fragment: str) -> None:
    problems = problems_of(None, {**REQUIRED, f"GTS_BOT_{var}": value})
    key = var.lower().replace("__", ".")
    expected_start = key if key in known_keys() else f"GTS_BOT_{var}: "
    assert len(problems) == 1, problems
    assert problems[0].startswith(expected_start), problems
    assert fragment in problems[0]


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("fediverse:\n  allow_http: 'yes'\n", "fediverse.allow_http: must be true or false, got 'yes'"),
        ("relay:\n  poll_interval: soon\n", "relay.poll_interval: must be a number, got 'soon'"),
        ("limits:\n  max_accounts_per_user: true\n", "limits.max_accounts_per_user: must be an integer"),
        ("matrix:\n  device_name: 42\n", "matrix.device_name: must be a string"),
        ("matrix:\n  allowed_users: '@a:b.org'\n", "matrix.allowed_users: must be a list of strings"),
        ("matrix:\n  pasword: x\n", "matrix.pasword: unknown key; did you mean matrix.password?"),
        ("matirx:\n  password: x\n", "matirx: unknown key; did you mean matrix?"),
        ("relay: 5\n", "relay: must be a mapping"),
        ("- a\n- b\n", "(top level): the file must be a mapping"),
    ],
)
def test_file_values_must_have_the_right_type(tmp_path: Path, text: str, fragment: str) -> None:
    problems = problems_of(write(tmp_path, text), REQUIRED)
    assert any(fragment in p for p in problems), problems


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "matrix:\n  homeserver: nope\n  command_prefix: ''\n  devise_name: x\n"
        "logging:\n  format: xml\nobservability:\n  port: -1\n",
    )
    problems = problems_of(path, {"GTS_BOT_RELAY__STREAMING": "sometimes"})
    keys = [p.split(":")[0].split(" ")[0] for p in problems]
    assert sorted(keys) == sorted(
        [
            "matrix.devise_name",
            "matrix.homeserver",
            "matrix.command_prefix",
            "relay.streaming",
            "observability.port",
            "logging.format",
            "matrix.user_id",
            "matrix.password",
        ]
    )


def test_invalid_yaml_names_the_line_but_not_its_content(tmp_path: Path) -> None:
    problems = problems_of(write(tmp_path, f"matrix:\n  password: {SECRET}\n  bad: [unclosed\n"), {})
    assert len(problems) == 1
    assert "not valid YAML at line" in problems[0]
    assert SECRET not in problems[0]


@pytest.mark.parametrize(
    "text",
    [
        f"matrix:\n  password: [{SECRET}]\n",
        f"matrix:\n  access_token: {{x: {SECRET}}}\n",
        f"database:\n  url: 'mysql://user:{SECRET}@db/x'\n",
        f"database:\n  url: 'no-scheme-{SECRET}'\n",
        f"matrix:\n  password: {SECRET}\n  password_file: /nonexistent/{SECRET}x\n",
    ],
)
def test_no_problem_ever_contains_a_secret(tmp_path: Path, text: str) -> None:
    env = {k: v for k, v in REQUIRED.items() if "PASSWORD" not in k}
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text), env)
    assert SECRET not in str(info.value)


def test_secrets_stay_out_of_repr() -> None:
    config = load_config(
        None,
        {
            **REQUIRED,
            "GTS_BOT_MATRIX__PASSWORD": SECRET,
            "GTS_BOT_MATRIX__ACCESS_TOKEN": SECRET + "-token",
            "GTS_BOT_DATABASE__URL": f"postgresql+asyncpg://bot:{SECRET}@db/gts",
        },
    )
    assert config.matrix.access_token == SECRET + "-token"
    assert SECRET not in repr(config)


def test_secret_fields_are_exactly_those_hidden_from_repr() -> None:
    for cls in (Config, *config_module._sections().values()):
        for f in dataclasses.fields(cls):
            assert f.repr is not bool(f.metadata.get("secret")), f"{cls.__name__}.{f.name}"


def test_config_is_frozen() -> None:
    config = load_config(None, REQUIRED)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.matrix.password = "other"  # type: ignore[misc]


def test_env_names() -> None:
    assert env_name("matrix.password_file") == "GTS_BOT_MATRIX__PASSWORD_FILE"
    assert env_name("data_dir") == "GTS_BOT_DATA_DIR"


# -- allowed users ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("patterns", "user", "allowed"),
    [
        ((), "@anyone:anywhere.org", False),  # none configured: the bot's own homeserver only
        ((), "@alice:m.org", True),
        ((), "@alice:evil-m.org", False),
        (("*",), "@anyone:anywhere.org", True),
        (("@*:a.org",), "@alice:a.org", True),
        (("@*:a.org",), "@alice:b.org", False),
        (("@*:a.org",), "@alice:evil-a.org", False),
        (("@*:a.org",), "@alice:a.org.evil.com", False),
        (("@*:a.org", "@bob:b.org"), "@bob:b.org", True),
        (("@bob:b.org",), "@bobby:b.org", False),
        (("@bob:b.org",), "@BOB:b.org", False),
    ],
)
def test_is_user_allowed(patterns: tuple[str, ...], user: str, allowed: bool) -> None:
    matrix = MatrixConfig(homeserver="https://m.org", user_id="@bot:m.org", allowed_users=patterns)
    assert is_user_allowed(matrix, user) is allowed


def test_unicode_instance_list_entries_are_stored_as_punycode() -> None:
    env = {
        **REQUIRED,
        "GTS_BOT_FEDIVERSE__INSTANCE_DENYLIST": "Bücher.example,*.bücher.example",
        "GTS_BOT_FEDIVERSE__INSTANCE_ALLOWLIST": "xn--bcher-kva.example",
    }
    config = load_config(None, env)
    assert config.fediverse.instance_denylist == ("xn--bcher-kva.example", "*.xn--bcher-kva.example")
    assert config.fediverse.instance_allowlist == ("xn--bcher-kva.example",)


def test_an_instance_pattern_that_cannot_match_any_host_is_refused() -> None:
    problems = problems_of(None, {**REQUIRED, "GTS_BOT_FEDIVERSE__INSTANCE_DENYLIST": "*ü.example"})
    assert any("fediverse.instance_denylist" in p and "ASCII" in p for p in problems)


@pytest.mark.parametrize(
    ("value", "ok"), [("4096", True), ("60000", True), ("4095", False), ("70000", False)]
)
def test_max_message_bytes_stays_within_what_a_matrix_event_can_carry(value: str, ok: bool) -> None:
    environ = {**REQUIRED, "GTS_BOT_LIMITS__MAX_MESSAGE_BYTES": value}
    if ok:
        assert load_config(None, environ).limits.max_message_bytes == int(value)
    else:
        [problem] = problems_of(None, environ)
        assert problem.startswith("limits.max_message_bytes")
        assert "between 4096 and 60000" in problem


def test_reaction_keys_are_configurable_and_checked(tmp_path: Path) -> None:
    env = {
        "GTS_BOT_MATRIX__HOMESERVER": "https://hs.test",
        "GTS_BOT_MATRIX__USER_ID": "@bot:hs.test",
        "GTS_BOT_MATRIX__PASSWORD": "pw-for-tests",
        "GTS_BOT_DATA_DIR": str(tmp_path),
        "GTS_BOT_ACTIONS__FAVOURITE_REACTIONS": "🌟,💯",
    }
    config = load_config(None, env)
    assert config.actions.favourite_reactions == ("🌟", "💯")
    assert config.actions.boost_reactions == ("🔁",)
    with pytest.raises(ConfigError, match=r"actions\.boost_reactions"):
        load_config(None, {**env, "GTS_BOT_ACTIONS__BOOST_REACTIONS": "a b"})
