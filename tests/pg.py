"""A throwaway PostgreSQL server for the test session, on loopback, with trust auth.

Uses the server binaries of the system packages (``/usr/lib/postgresql/<major>/bin``, or the directory in
``GTS_TEST_PG_BIN``). PostgreSQL refuses to run as root, so as root the server runs as the ``postgres``
system user. Missing binaries fail the tests loudly: CI installs them (see .ci/run).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

PREFERRED_MAJOR = 15


@dataclass(frozen=True)
class PostgresServer:
    host: str
    port: int
    user: str = "postgres"

    def url(self, database: str, driver: str = "asyncpg") -> str:
        return f"postgresql+{driver}://{self.user}@{self.host}:{self.port}/{database}"

    def dsn(self, database: str = "postgres") -> str:
        """A plain libpq/asyncpg DSN."""
        return f"postgresql://{self.user}@{self.host}:{self.port}/{database}"


def find_bin_dir() -> Path:
    override = os.environ.get("GTS_TEST_PG_BIN")
    if override:
        candidates = [Path(override)]
    else:
        found = sorted(
            Path("/usr/lib/postgresql").glob("*/bin"),
            key=lambda p: (p.parent.name != str(PREFERRED_MAJOR), -_major(p)),
        )
        candidates = found
    for candidate in candidates:
        if (candidate / "initdb").is_file() and (candidate / "pg_ctl").is_file():
            return candidate
    pytest.fail(
        "PostgreSQL server binaries (initdb, pg_ctl) not found under /usr/lib/postgresql/*/bin "
        "(or GTS_TEST_PG_BIN); install the `postgresql` package — the store tests run on PostgreSQL too",
        pytrace=False,
    )


def _major(path: Path) -> int:
    match = re.fullmatch(r"\d+", path.parent.name)
    return int(match.group()) if match else 0


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _as_server_user(argv: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return argv
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        pytest.fail(
            "running as root but there is no `postgres` system user to run PostgreSQL as", pytrace=False
        )
    return ["runuser", "-u", "postgres", "--", *argv]


def _run(argv: list[str], what: str) -> None:
    proc = subprocess.run(_as_server_user(argv), capture_output=True, text=True, check=False, timeout=120)
    if proc.returncode != 0:
        pytest.fail(f"{what} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}", pytrace=False)


@contextlib.contextmanager
def running_postgres() -> Iterator[PostgresServer]:
    bin_dir = find_bin_dir()
    # Not under pytest's tmp dir: that is root-only (0700) and the server user could not reach it.
    root = Path(tempfile.mkdtemp(prefix="gts-bot-pg-"))
    data, sockets, log = root / "data", root / "sockets", root / "server.log"
    sockets.mkdir()
    if os.geteuid() == 0:
        entry = pwd.getpwnam("postgres")
        for path in (root, sockets):
            os.chown(path, entry.pw_uid, entry.pw_gid)
    started = False
    try:
        _run(
            [
                str(bin_dir / "initdb"),
                "-D",
                str(data),
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-sync",
                "--locale=C",
            ],
            "initdb",
        )
        for _attempt in range(5):  # another process may grab the free port between probe and bind
            port = _free_port()
            options = (
                f"-c listen_addresses=127.0.0.1 -p {port} -k {sockets} "
                "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
            )
            argv = [
                str(bin_dir / "pg_ctl"),
                "-D",
                str(data),
                "-l",
                str(log),
                "-o",
                options,
                "-w",
                "-t",
                "60",
                "start",
            ]
            proc = subprocess.run(
                _as_server_user(argv), capture_output=True, text=True, check=False, timeout=120
            )
            if proc.returncode == 0:
                started = True
                break
        if not started:
            server_log = log.read_text(errors="replace") if log.exists() else ""
            pytest.fail(
                f"PostgreSQL did not start:\n{proc.stdout}\n{proc.stderr}\n{server_log}", pytrace=False
            )
        yield PostgresServer("127.0.0.1", port)
    finally:
        if started:
            _run([str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"], "pg_ctl stop")
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    with running_postgres() as server:
        yield server
