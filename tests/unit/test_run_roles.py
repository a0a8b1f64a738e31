"""`gts-bot run --role …`: the split roles refuse SQLite before touching anything; a split process labels
its metrics with its worker name."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from bot.cli import main
from bot.observability.metrics import Metrics

ROOT = Path(__file__).resolve().parents[2]


def _env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GTS_BOT_")}
    env.update(
        {
            "GTS_BOT_CONFIG": "",
            "GTS_BOT_MATRIX__HOMESERVER": "https://matrix.test.org",
            "GTS_BOT_MATRIX__USER_ID": "@bot:test.org",
            "GTS_BOT_MATRIX__PASSWORD": "pw-never-printed",
            "GTS_BOT_DATA_DIR": str(tmp_path / "data"),
        }
    )
    return env


@pytest.mark.parametrize("role", ["relay", "matrix"])
def test_a_split_role_refuses_sqlite_before_touching_anything(tmp_path: Path, role: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "bot", "run", "--role", role],
        cwd=ROOT,
        env=_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 78, proc.stderr
    assert f"`run --role {role}` needs PostgreSQL" in proc.stderr
    assert not (tmp_path / "data").exists()  # no database, no key file was created


def test_an_unknown_role_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "--role", "everything"]) == 2
    assert "invalid choice" in capsys.readouterr().err


def _labels(metrics: Metrics) -> list[dict[str, str]]:
    body, _ = metrics.render()
    return [s.labels for f in text_string_to_metric_families(body.decode()) for s in f.samples]


def test_a_split_process_puts_its_worker_name_on_every_series() -> None:
    metrics = Metrics("1.0", worker="relay-2")
    metrics.notification_relayed("mention", 0.5)
    metrics.instance_request("social.example", 429)
    labels = _labels(metrics)
    assert labels
    assert all(sample["worker"] == "relay-2" for sample in labels)
    assert {"type": "mention", "worker": "relay-2"} in labels
    assert {"instance": "social.example", "worker": "relay-2"} in labels


def test_a_single_process_bot_has_no_worker_label() -> None:
    assert not any("worker" in sample for sample in _labels(Metrics("1.0")))
