"""Cheap structural checks on the deployment files, so a deleted safeguard fails the build."""

from __future__ import annotations

import configparser
import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "deploy" / "gts-bot.service"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"


class _RepeatedKeys(dict[str, list[str]]):
    """configparser section storage that keeps every value of a repeated key, as systemd does."""

    def __setitem__(self, key: str, value: list[str]) -> None:
        if key in self and isinstance(value, list):
            self[key].extend(value)
        else:
            super().__setitem__(key, value)


def unit_service() -> dict[str, list[str]]:
    """The [Service] section, each key mapped to all its values in order."""
    parser = configparser.RawConfigParser(strict=False, dict_type=_RepeatedKeys, interpolation=None)  # type: ignore[arg-type]
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # systemd keys are case-sensitive
    parser.read(UNIT, encoding="utf-8")
    return {key: raw.split("\n") for key, raw in parser.items("Service")}


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile, continuation lines joined, comments dropped."""
    text = DOCKERFILE.read_text(encoding="utf-8")
    logical: list[str] = []
    current = ""
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        logical.append(current + stripped)
        current = ""
    out = []
    for entry in logical:
        instruction, _, args = entry.partition(" ")
        out.append((instruction.upper(), args.strip()))
    return out


def final_stage(instructions: list[tuple[str, str]]) -> list[tuple[str, str]]:
    last_from = max(i for i, (name, _) in enumerate(instructions) if name == "FROM")
    return instructions[last_from:]


# --- systemd unit ------------------------------------------------------------------------------------

SANDBOX = {
    "NoNewPrivileges": "yes",
    "ProtectSystem": "strict",
    "ProtectHome": "yes",
    "PrivateTmp": "yes",
    "PrivateDevices": "yes",
    "ProtectKernelTunables": "yes",
    "ProtectKernelModules": "yes",
    "ProtectKernelLogs": "yes",
    "ProtectControlGroups": "yes",
    "RestrictNamespaces": "yes",
    "LockPersonality": "yes",
    "MemoryDenyWriteExecute": "yes",
    "SystemCallArchitectures": "native",
    "UMask": "0077",
    "StateDirectory": "gts-bot",
    "Restart": "on-failure",
}


@pytest.mark.parametrize(("key", "expected"), sorted(SANDBOX.items()))
def test_unit_keeps_its_sandbox(key: str, expected: str) -> None:
    assert unit_service().get(key) == [expected]


def test_unit_restricts_address_families_syscalls_and_capabilities() -> None:
    service = unit_service()
    assert set(service["RestrictAddressFamilies"][0].split()) == {"AF_INET", "AF_INET6", "AF_UNIX"}
    assert "@system-service" in service["SystemCallFilter"]
    assert service["CapabilityBoundingSet"] == [""], "an empty bounding set drops every capability"


def test_unit_runs_as_a_dedicated_user_with_its_state_dir_writable() -> None:
    service = unit_service()
    assert service["User"] == ["gts-bot"]
    assert "/var/lib/gts-bot" in service["ReadWritePaths"][0].split()
    assert "GTS_BOT_CONFIG=/etc/gts-bot/config.yaml" in service["Environment"]
    assert service["ExecStart"] == ["/opt/gts-bot/.venv/bin/gts-bot run"]


# --- Dockerfile --------------------------------------------------------------------------------------


def test_dockerfile_runs_as_a_non_root_user() -> None:
    users = [args for name, args in final_stage(dockerfile_instructions()) if name == "USER"]
    assert users, "the final stage has no USER"
    user = users[-1].split(":")[0]
    assert user not in {"root", "0"}


def test_dockerfile_declares_the_data_volume_and_env() -> None:
    stage = final_stage(dockerfile_instructions())
    volumes = [args for name, args in stage if name == "VOLUME"]
    assert any("/data" in v for v in volumes)
    env = " ".join(args for name, args in stage if name == "ENV")
    assert "GTS_BOT_DATA_DIR=/data" in env
    assert "GTS_BOT_OBSERVABILITY__ENABLED=true" in env


def test_dockerfile_has_a_healthcheck_on_healthz_and_runs_the_bot() -> None:
    stage = final_stage(dockerfile_instructions())
    checks = [args for name, args in stage if name == "HEALTHCHECK"]
    assert len(checks) == 1
    assert "/healthz" in checks[0]
    assert not checks[0].upper().startswith("NONE")
    assert ("ENTRYPOINT", '["gts-bot"]') in stage
    assert ("CMD", '["run"]') in stage
    exec_form = re.search(r"CMD (\[.*\])$", checks[0])
    assert exec_form is not None
    assert json.loads(exec_form.group(1))[0] == "python"  # slim has no curl


def test_dockerfile_installs_without_the_test_extra() -> None:
    runs = " ".join(args for name, args in dockerfile_instructions() if name == "RUN")
    assert "pip install ." in runs
    assert "[test]" not in runs


def test_dockerignore_keeps_secrets_and_local_state_out_of_the_context() -> None:
    ignored = {line.strip() for line in DOCKERIGNORE.read_text(encoding="utf-8").splitlines()}
    assert {".git", ".venv", "data", "keyring.json", "config.yaml"} <= ignored
