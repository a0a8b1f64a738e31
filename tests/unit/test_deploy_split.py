"""The split-deployment files: the relay worker template keeps the main unit's sandbox and runs the relay
role; the compose example runs one Matrix process and relay workers on one PostgreSQL database."""

from __future__ import annotations

import configparser
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"


def _service(path: Path) -> dict[str, str]:
    parser = configparser.RawConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # systemd keys are case-sensitive
    parser.read(path, encoding="utf-8")
    return dict(parser.items("Service"))


def test_the_relay_template_keeps_the_sandbox_of_the_main_unit() -> None:
    main = _service(DEPLOY / "gts-bot.service")
    relay = _service(DEPLOY / "gts-bot-relay@.service")
    assert {k: v for k, v in relay.items() if k != "ExecStart"} == {
        k: v for k, v in main.items() if k != "ExecStart"
    }
    assert relay["ExecStart"] == main["ExecStart"] + " --role relay --worker-id %H-relay-%i"


def test_the_compose_example_runs_one_matrix_process_and_relay_workers_on_one_database() -> None:
    compose = yaml.safe_load((DEPLOY / "compose.split.yaml").read_text(encoding="utf-8"))
    services = compose["services"]
    assert services["matrix"]["command"] == ["run", "--role", "matrix"]
    assert services["relay"]["command"] == ["run", "--role", "relay"]
    urls = {services[name]["environment"]["GTS_BOT_DATABASE__URL"] for name in ("matrix", "relay")}
    assert len(urls) == 1
    assert urls.pop().startswith("postgresql+asyncpg://")
    assert "gts-bot-data:/data" in services["matrix"]["volumes"]
    envs = [services[name]["environment"] for name in ("matrix", "relay")]
    key_files = {env["GTS_BOT_ENCRYPTION__KEY_FILE"] for env in envs}
    assert key_files == {"/data/keys/keyring.json"}
    # Workers get the key file's directory of the Matrix process's volume, read-only, and nothing else of it.
    [keys] = [v for v in services["relay"]["volumes"] if isinstance(v, dict)]
    assert keys == {
        "type": "volume",
        "source": "gts-bot-data",
        "target": "/data/keys",
        "read_only": True,
        "volume": {"subpath": "keys"},
    }
    assert not any(str(v).startswith("gts-bot-data:") for v in services["relay"]["volumes"])
