"""The demo as a newcomer runs it from a checkout: a real process, its own Synapse and fake GoToSocial."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.demo.runner import CHECKOUT_HINT, missing_requirement

pytestmark = pytest.mark.e2e

CHECKOUT = Path(__file__).resolve().parents[2]

# The fake GoToSocial's codes and tokens: 48 characters of uppercase unpadded base64url.
CODE_OR_TOKEN = re.compile(r"[A-Z0-9_-]{48}")


def test_demo_plays_the_whole_conversation_without_printing_secrets(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GTS_BOT_")}
    env["TMPDIR"] = str(tmp_path)
    result = subprocess.run(
        [sys.executable, "-m", "tests.demo"],
        cwd=CHECKOUT,
        env=env,
        capture_output=True,
        text=True,
        timeout=480,  # bounds a hang, below pytest-timeout's 600 s
        check=False,
    )
    out = result.stdout
    assert result.returncode == 0, f"{out}\n--- stderr ---\n{result.stderr}"
    for line in (
        "alice → bot:  !gts connect http://127.0.0.1:",
        "/oauth/authorize?client_id=",
        "alice → bot:  [the 48-character code from that page]",
        "bot → alice:  Connected as @alice@127.0.0.1:",
        "mentioned you:",
        "carol (@carol@social.example) favourited your post",
        "asked to follow you",
        "Relaying mention for @alice@",
        "Relaying again for @alice@",
        "bot → alice:  Revoked @alice@127.0.0.1:",
        "alice has no active token left",
    ):
        assert line in out
    assert "dave" not in out.split("(bob mentions alice again)")[1]  # the favourite after `notify mention`
    assert CODE_OR_TOKEN.search(out) is None
    assert CODE_OR_TOKEN.search(result.stderr) is None
    assert "Traceback" not in result.stderr
    assert list(tmp_path.glob("gts-bot-demo-*")) == []  # the temporary directory is gone without --keep


def test_without_synapse_the_demo_says_how_to_get_it() -> None:
    assert missing_requirement() is None  # this suite runs with the test extra
    problem = missing_requirement(lambda name: None)
    assert problem is not None
    assert "matrix-synapse is not installed" in problem
    assert problem.endswith(CHECKOUT_HINT)
