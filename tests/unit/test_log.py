from __future__ import annotations

import base64
import io
import json
import logging
from collections.abc import Iterator

import pytest

from bot.config import LoggingConfig
from bot.log import MAX_REMOTE_SECRETS, REDACTED, RedactingFilter, installed_redactor, redact, setup_logging
from bot.store.keyring import KeyRing

GTS_TOKEN = "ZJJHNDQ0ZTYTNME0OS0ZYZI4LTLMZTKTZTY4OWZKMTYZMJA1"  # reference §2.6 format
GTS_CODE = "ZGM2OGI4NDYTY2FJZS0ZMTM5LWI0YWYTZDMWNDCZZTC3NZJK"
CLIENT_SECRET = "d0d32e30-7bb2-48e7-a8a9-e44c75066fbd"
MATRIX_TOKEN = "syt_Z3RzLWJvdA_aBcDeFgHiJkLmNoPqRsT_1x2Y3z"
ULID = "01M8G1ZZGG5MNJZ5V0EA1WQ872"
OPAQUE = "short.opaque-value"  # not token-shaped: only its name gives it away


@pytest.fixture
def root_state() -> Iterator[None]:
    """setup_logging changes process-wide logging: put it back afterwards."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    noisy = {name: logging.getLogger(name).level for name in ("nio", "httpx", "aiosqlite")}
    yield
    for handler in list(root.handlers):
        if handler not in handlers:
            root.removeHandler(handler)
    root.setLevel(level)
    for name, lvl in noisy.items():
        logging.getLogger(name).setLevel(lvl)


@pytest.fixture
def text_log(root_state: None) -> tuple[io.StringIO, RedactingFilter]:
    stream = io.StringIO()
    return stream, setup_logging(LoggingConfig(level="DEBUG", format="text"), stream=stream)


@pytest.fixture
def json_log(root_state: None) -> io.StringIO:
    stream = io.StringIO()
    setup_logging(LoggingConfig(level="INFO", format="json"), stream=stream)
    return stream


STD_KEY = base64.b64encode(b"\xfb\xff" + bytes(range(7, 37))).decode()  # has "+" and "/", ends in "="
URLSAFE_KEY = base64.urlsafe_b64encode(b"\xfb\xff" + bytes(range(100, 130))).decode().rstrip("=")


@pytest.mark.parametrize(
    ("text", "secret", "kept"),
    [
        (f"headers: Authorization: Bearer {GTS_TOKEN}", GTS_TOKEN, "Authorization: Bearer"),
        (f"'Authorization': 'Bearer {MATRIX_TOKEN}'", MATRIX_TOKEN, "'Authorization': 'Bearer"),
        (f"GET wss://gts.example/api/v1/streaming?stream=user&access_token={OPAQUE}", OPAQUE, "stream=user"),
        (f"body grant_type=authorization_code&code={OPAQUE}&redirect_uri=urn", OPAQUE, "&redirect_uri="),
        (f"client_secret=abc.def-{ULID}&client_id={ULID}", f"abc.def-{ULID}", f"client_id={ULID}"),
        ("form password=hunter2 user=bob", "hunter2", "user=bob"),
        (f"revoke token={GTS_TOKEN.lower()}", GTS_TOKEN.lower(), "revoke token="),
        (f'{{"access_token":"{OPAQUE}","created_at":1795835234,"scope":"read"}}', OPAQUE, '"scope":"read"'),
        (f'{{"client_secret": "s3cr3t", "client_id": "{ULID}"}}', "s3cr3t", f'"client_id": "{ULID}"'),
        ("{'code': 'abc\\'def', 'state': 'x'}", "abc\\'def", "'state': 'x'"),
        (f"user pasted {GTS_CODE} in the room", GTS_CODE, "user pasted"),
        (f"client secret {CLIENT_SECRET}.", CLIENT_SECRET, "client secret"),
        (f"client secret {CLIENT_SECRET.upper()}", CLIENT_SECRET.upper(), "client secret"),
        (f"restored session {MATRIX_TOKEN} for @bot:example.org", MATRIX_TOKEN, "for @bot:example.org"),
        (f"key {STD_KEY} loaded", STD_KEY, "loaded"),
        (f"key={URLSAFE_KEY}", URLSAFE_KEY, "key="),
        (f"e2ee passphrase {URLSAFE_KEY}", URLSAFE_KEY, "e2ee passphrase"),
    ],
)
def test_redact_masks_token_like_text(text: str, secret: str, kept: str) -> None:
    out = redact(text)
    assert secret not in out
    assert REDACTED in out
    assert kept in out


@pytest.mark.parametrize(
    "text",
    [
        f"GET https://gts.example/api/v1/notifications/{ULID} 200",
        f"client_id {ULID} registered for @alice:example.org in !room:example.org",
        'File "/work/main/.venv/lib/python3.11/site-packages/httpx/_transports/default.py", line 72',
        "process finished exit_code=78 status_code=200",
        "sha256 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
        "ValueError: invalid literal for int() with base 10: 'abc'",
        "relay_notification_for_account_with_a_rather_long_function_name()",
        "sent to !y5dvFWKjoT9gbwuSOf2b1Kz0B40oPdxN8xSxh0828pc as "
        "$rJgH6K01XgAA-w_dKBkDxs8PAGkSJsa507IAcn6bWz0",
    ],
)
def test_redact_leaves_ordinary_text_alone(text: str) -> None:
    assert redact(text) == text


def test_registered_secrets_are_masked() -> None:
    flt = RedactingFilter()
    flt.add_secret("correct horse battery staple")
    flt.add_secret("abc")  # too short to mask safely: ignored
    flt.add_secret(None)
    out = flt.redact("password is correct horse battery staple, abc")
    assert out == f"password is {REDACTED}, abc"
    assert "correct horse" not in repr(flt)


def test_messages_and_args_are_redacted(text_log: tuple[io.StringIO, RedactingFilter]) -> None:
    stream, redactor = text_log
    redactor.add_secret("my-matrix-password")
    log = logging.getLogger("bot.test")
    log.info("exchanged code %s for token %s", GTS_CODE, GTS_TOKEN)
    log.warning("login with %r failed", "my-matrix-password")
    log.info("token response %s", {"access_token": "plain-but-named", "scope": "read"})
    out = stream.getvalue()
    for secret in (GTS_CODE, GTS_TOKEN, "my-matrix-password", "plain-but-named"):
        assert secret not in out
    assert "exchanged code [REDACTED] for token [REDACTED]" in out
    assert "'scope': 'read'" in out
    assert " INFO    bot.test: " in out


def _raise_with(secret: str) -> None:
    try:
        raise KeyError(f"no app for secret {secret}")
    except KeyError as inner:
        raise RuntimeError("token exchange failed: Bearer " + secret) from inner


@pytest.mark.parametrize("secret", [GTS_TOKEN, CLIENT_SECRET, MATRIX_TOKEN, STD_KEY, "registered-only"])
@pytest.mark.parametrize("fmt", ["text", "json"])
def test_tracebacks_are_redacted(root_state: None, secret: str, fmt: str) -> None:
    stream = io.StringIO()
    redactor = setup_logging(LoggingConfig(format=fmt), stream=stream)
    redactor.add_secret("registered-only")
    log = logging.getLogger("bot.test")
    try:
        _raise_with(secret)
    except RuntimeError:
        log.exception("connect failed for %s", secret)
    out = stream.getvalue()
    assert secret not in out
    assert "Traceback (most recent call last)" in out
    assert "RuntimeError: token exchange failed: Bearer [REDACTED]" in out.replace("\\n", "\n")
    assert "The above exception was the direct cause" in out


def test_later_handlers_get_the_redacted_traceback(text_log: tuple[io.StringIO, RedactingFilter]) -> None:
    # A handler added after ours (e.g. an error reporter) must not re-render the unredacted traceback.
    later = io.StringIO()
    late_handler = logging.StreamHandler(later)
    logging.getLogger().addHandler(late_handler)
    try:
        try:
            raise ValueError(f"bad {GTS_TOKEN}")
        except ValueError:
            logging.getLogger("bot.test").exception("oops")
    finally:
        logging.getLogger().removeHandler(late_handler)
    assert GTS_TOKEN not in later.getvalue()
    assert f"ValueError: bad {REDACTED}" in later.getvalue()


def test_json_lines(json_log: io.StringIO) -> None:
    log = logging.getLogger("bot.relay")
    log.info("relayed %d notifications", 3, extra={"instance": "gts.example", "token": GTS_TOKEN, "n": 3})
    log.debug("not shown at INFO")
    try:
        raise OSError("connection reset")
    except OSError:
        log.error("stream dropped", exc_info=True, extra={"url": f"wss://x/?access_token={GTS_TOKEN}"})
    lines = json_log.getvalue().splitlines()
    assert len(lines) == 2
    first, second = (json.loads(line) for line in lines)
    assert first["level"] == "INFO"
    assert first["logger"] == "bot.relay"
    assert first["message"] == "relayed 3 notifications"
    assert first["instance"] == "gts.example"
    assert first["n"] == 3
    assert first["token"] == REDACTED
    assert first["time"].endswith("+00:00")
    assert second["url"] == f"wss://x/?access_token={REDACTED}"
    assert "OSError: connection reset" in second["exception"]
    assert GTS_TOKEN not in json_log.getvalue()


def test_text_format_appends_extra_fields(text_log: tuple[io.StringIO, RedactingFilter]) -> None:
    stream, _ = text_log
    logging.getLogger("bot.test").info("sent", extra={"room": "!r:example.org", "secret_key": STD_KEY})
    line = stream.getvalue().strip()
    assert line.endswith(f"bot.test: sent room=!r:example.org secret_key={REDACTED}")


@pytest.mark.parametrize(("level", "noisy_level"), [("INFO", logging.WARNING), ("DEBUG", logging.NOTSET)])
def test_noisy_libraries_are_quiet_unless_debugging(root_state: None, level: str, noisy_level: int) -> None:
    stream = io.StringIO()
    setup_logging(LoggingConfig(level=level), stream=stream)
    for name in ("nio", "httpx", "aiosqlite"):
        assert logging.getLogger(name).level == noisy_level
    logging.getLogger("httpx").info("HTTP Request: GET https://gts.example/ 200")
    assert ("HTTP Request" in stream.getvalue()) is (level == "DEBUG")


def test_setup_again_replaces_its_handler_and_keeps_secrets(root_state: None) -> None:
    first = setup_logging(LoggingConfig(), stream=io.StringIO())
    first.add_secret("kept-across-setups")
    stream = io.StringIO()
    second = setup_logging(LoggingConfig(format="json"), stream=stream)
    assert installed_redactor() is second
    assert "kept-across-setups" in second.secrets
    ours = [h for h in logging.getLogger().handlers if any(isinstance(f, RedactingFilter) for f in h.filters)]
    assert len(ours) == 1
    logging.getLogger("bot.test").warning("value kept-across-setups")
    assert json.loads(stream.getvalue())["message"] == f"value {REDACTED}"


# -- secrets an instance returns (issue 10, item 4) --------------------------------------------------------

MASTODON_TOKEN = "Qx7bN2kPz9Lw4Rt6Yc1Vd8Hf3Jg5Ms0Ae2Ui7Oo9Pp4"  # 43 characters, base64url


@pytest.mark.parametrize(
    "value",
    ["Traceback", "@attacker:example.org", "abcd", "error", "x" * 40, "a b" * 20, "ab\ncd" * 10],
)
def test_an_instance_cannot_choose_words_to_erase_from_the_log(value: str) -> None:
    flt = RedactingFilter()
    flt.add_remote_secret(value)
    assert flt.remote_secrets == frozenset()
    line = f"Traceback (most recent call last): {value} said hi to @attacker:example.org"
    assert flt.redact(line) == line


@pytest.mark.parametrize("token", [GTS_TOKEN, MASTODON_TOKEN, CLIENT_SECRET + "-0123"])
def test_real_tokens_are_registered_and_masked_wherever_they_appear(token: str) -> None:
    flt = RedactingFilter()
    flt.add_remote_secret(token)
    assert flt.remote_secrets == {token}
    for line in (f"got {token}.", f"x{token}y", f"url?t={token}&a=1", f"({token})"):
        assert token not in flt.redact(line)


def test_a_forgotten_secret_is_no_longer_tracked() -> None:
    flt = RedactingFilter()
    flt.add_remote_secret(MASTODON_TOKEN)
    flt.forget_secret(MASTODON_TOKEN)
    assert flt.remote_secrets == frozenset()


def test_remote_secrets_are_bounded_in_number() -> None:
    flt = RedactingFilter()
    for i in range(MAX_REMOTE_SECRETS + 50):
        flt.add_remote_secret(f"{i:08d}AbCdEfGhIjKlMnOpQrStUvWxYz0123")
    assert len(flt.remote_secrets) == MAX_REMOTE_SECRETS
    newest = f"{MAX_REMOTE_SECRETS + 49:08d}AbCdEfGhIjKlMnOpQrStUvWxYz0123"
    assert newest in flt.remote_secrets


def test_matching_cost_does_not_grow_with_the_number_of_secrets() -> None:
    few, many = RedactingFilter(), RedactingFilter()
    few.add_remote_secret(MASTODON_TOKEN)
    for i in range(5_000):
        many.add_remote_secret(f"{i:08d}AbCdEfGhIjKlMnOpQrStUvWxYz0123")
    many.add_remote_secret(MASTODON_TOKEN)
    line = f"relay of account 7 uses {MASTODON_TOKEN} and {'Zz9' * 30} " + "word " * 200
    assert few.redact(line) == many.redact(line)
    assert MASTODON_TOKEN not in many.redact(line)
    # Look-ups are bounded by the length of the token-like runs in the line, whatever the count of secrets.
    assert many._remote.lookups == few._remote.lookups <= len(line)


def test_the_keyring_feeds_remote_secrets_and_a_revoke_drops_them() -> None:
    ring = KeyRing.generate()
    flt = RedactingFilter()
    ring.on_secret(flt.add_remote_secret)
    ring.on_forget(flt.forget_secret)
    ring.decrypt(ring.encrypt(MASTODON_TOKEN, b"account:1"), b"account:1")
    ring.decrypt(ring.encrypt("Traceback", b"account:2"), b"account:2")
    assert flt.remote_secrets == {MASTODON_TOKEN}
    ring.forget(MASTODON_TOKEN)
    assert flt.remote_secrets == frozenset()


def test_remote_secrets_survive_a_second_setup(root_state: None) -> None:
    first = setup_logging(LoggingConfig(level="INFO", format="text"), stream=io.StringIO())
    first.add_remote_secret(MASTODON_TOKEN)
    second = setup_logging(LoggingConfig(level="INFO", format="text"), stream=io.StringIO())
    assert second.remote_secrets == {MASTODON_TOKEN}
    assert second.secrets == frozenset()
