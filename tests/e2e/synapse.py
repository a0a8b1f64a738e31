"""A real Synapse homeserver for end-to-end tests.

`start_synapse(workdir)` writes a minimal homeserver.yaml (SQLite, one client listener on 127.0.0.1,
no federation, registration only through the shared-secret admin API), starts
`python -m synapse.app.homeserver` as a subprocess and waits until `/_matrix/client/versions` answers.
The server's log goes to `<workdir>/homeserver.log`; `SynapseProcess.log_tail()` shows its end.

Rate limits: logins, registrations, joins, invites and room creation are relaxed so tests can create many
users and rooms. `rc_message` is left at Synapse's default (0.2/s, burst 10) on purpose: the bot must cope
with it. `Synapse.override_ratelimit(user_id)` lifts it for one user through the admin API.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml

from tests.waiting import WaitTimeout, wait_until_sync

SERVER_NAME = "localhost"
STARTUP_TIMEOUT = 180.0  # bounds a failure only; a busy 2-core machine can take a minute

_RELAXED = {"per_second": 1000, "burst_count": 1000}


def free_port() -> int:
    """A port that was free a moment ago (Synapse cannot bind port 0 and report it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _write_signing_key(path: Path) -> None:
    import signedjson.key

    key = signedjson.key.generate_signing_key("a_" + secrets.token_hex(2))
    with path.open("w") as f:
        signedjson.key.write_signing_keys(f, [key])


def write_config(workdir: Path, port: int, shared_secret: str) -> Path:
    """Write homeserver.yaml + log config into `workdir`; return the homeserver.yaml path."""
    log_config = workdir / "log.config.yaml"
    log_config.write_text(
        yaml.safe_dump(
            {
                "version": 1,
                "formatters": {
                    "precise": {
                        "format": "%(asctime)s - %(name)s - %(lineno)d - %(levelname)s - %(request)s"
                        " - %(message)s"
                    }
                },
                "handlers": {
                    "file": {
                        "class": "logging.FileHandler",
                        "formatter": "precise",
                        "filename": str(workdir / "homeserver.log"),
                        "encoding": "utf8",
                    }
                },
                # Never DEBUG for synapse.storage.SQL: it would log access tokens.
                "loggers": {"synapse.storage.SQL": {"level": "INFO"}},
                "root": {"level": "INFO", "handlers": ["file"]},
                "disable_existing_loggers": False,
            }
        )
    )
    signing_key = workdir / "signing.key"
    if not signing_key.exists():
        _write_signing_key(signing_key)
    config: dict[str, Any] = {
        "server_name": SERVER_NAME,
        "pid_file": str(workdir / "homeserver.pid"),
        "public_baseurl": f"http://127.0.0.1:{port}/",
        "listeners": [
            {
                "port": port,
                "bind_addresses": ["127.0.0.1"],
                "type": "http",
                "tls": False,
                "x_forwarded": False,
                "resources": [{"names": ["client"], "compress": False}],
            }
        ],
        "database": {"name": "sqlite3", "args": {"database": str(workdir / "homeserver.db")}},
        "log_config": str(log_config),
        "media_store_path": str(workdir / "media_store"),
        "signing_key_path": str(signing_key),
        "registration_shared_secret": shared_secret,
        "macaroon_secret_key": secrets.token_hex(32),
        "form_secret": secrets.token_hex(32),
        "report_stats": False,
        "enable_registration": False,
        "bcrypt_rounds": 4,  # fast password hashing: tests register many users
        "enable_metrics": False,
        "trusted_key_servers": [],
        "suppress_key_server_warning": True,
        "presence": {"enabled": False},
        "url_preview_enabled": False,
        "rc_login": {"address": _RELAXED, "account": _RELAXED, "failed_attempts": _RELAXED},
        "rc_registration": _RELAXED,
        "rc_joins": {"local": _RELAXED, "remote": _RELAXED},
        "rc_joins_per_room": _RELAXED,
        "rc_invites": {"per_room": _RELAXED, "per_user": _RELAXED, "per_issuer": _RELAXED},
        "rc_room_creation": _RELAXED,
        # rc_message deliberately absent: Synapse's default applies.
    }
    path = workdir / "homeserver.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@dataclass
class Synapse:
    """Handle on a running homeserver. Every call opens its own HTTP client (tests use many event loops)."""

    base_url: str
    server_name: str
    log_path: Path
    shared_secret: str = field(repr=False)
    _admin_token: str | None = field(default=None, repr=False)

    def user_id(self, localpart: str) -> str:
        return f"@{localpart}:{self.server_name}"

    def _client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.base_url, trust_env=False, timeout=30.0)

    async def _register(self, localpart: str, password: str, *, admin: bool, login: bool) -> dict[str, Any]:
        async with self._client() as http:
            nonce = (await http.get("/_synapse/admin/v1/register")).raise_for_status().json()["nonce"]
            mac = hmac.new(self.shared_secret.encode(), digestmod=hashlib.sha1)
            for part in (nonce.encode(), localpart.encode(), password.encode()):
                mac.update(part)
                mac.update(b"\x00")
            mac.update(b"admin" if admin else b"notadmin")
            body = {
                "nonce": nonce,
                "username": localpart,
                "password": password,
                "admin": admin,
                "mac": mac.hexdigest(),
                "inhibit_login": not login,
            }
            resp = await http.post("/_synapse/admin/v1/register", json=body)
            resp.raise_for_status()
            result: dict[str, Any] = resp.json()
            return result

    async def register_user(self, localpart: str, password: str, admin: bool = False) -> tuple[str, str]:
        """Register an account and log it in once: (user_id, access_token)."""
        result = await self._register(localpart, password, admin=admin, login=True)
        return result["user_id"], result["access_token"]

    async def create_account(self, localpart: str, password: str, admin: bool = False) -> str:
        """Register an account without any device (for the bot, whose first login must be its own)."""
        result = await self._register(localpart, password, admin=admin, login=False)
        user_id: str = result["user_id"]
        return user_id

    async def login(self, user_id: str, password: str) -> tuple[str, str]:
        """Password login: (access_token, device_id)."""
        async with self._client() as http:
            resp = await http.post(
                "/_matrix/client/v3/login",
                json={
                    "type": "m.login.password",
                    "identifier": {"type": "m.id.user", "user": user_id},
                    "password": password,
                },
            )
            resp.raise_for_status()
            data = resp.json()
            return data["access_token"], data["device_id"]

    async def admin_token(self) -> str:
        if self._admin_token is None:
            localpart = "admin-" + secrets.token_hex(4)
            _, self._admin_token = await self.register_user(localpart, secrets.token_hex(16), admin=True)
        return self._admin_token

    async def admin_request(self, method: str, path: str, json: Any = None) -> Any:
        token = await self.admin_token()
        async with self._client() as http:
            resp = await http.request(method, path, json=json, headers={"Authorization": f"Bearer {token}"})
            resp.raise_for_status()
            return resp.json()

    async def override_ratelimit(
        self, user_id: str, messages_per_second: int = 0, burst_count: int = 0
    ) -> None:
        """Lift (0/0) or set the message rate limit for one user."""
        quoted = urllib.parse.quote(user_id)
        await self.admin_request(
            "POST",
            f"/_synapse/admin/v1/users/{quoted}/override_ratelimit",
            {"messages_per_second": messages_per_second, "burst_count": burst_count},
        )

    async def devices(self, user_id: str) -> list[str]:
        """Device ids the server knows for a user."""
        data = await self.admin_request(
            "GET", f"/_synapse/admin/v2/users/{urllib.parse.quote(user_id)}/devices"
        )
        return sorted(d["device_id"] for d in data["devices"])

    async def client_request(self, token: str, method: str, path: str, json: Any = None) -> httpx.Response:
        """A raw client-server API request as some user (for facts the adapter must not be trusted with)."""
        async with self._client() as http:
            return await http.request(method, path, json=json, headers={"Authorization": f"Bearer {token}"})

    def log_tail(self, lines: int = 60) -> str:
        return _tail(self.log_path, lines)


def _tail(path: Path, lines: int) -> str:
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return f"(no log at {path})"
    return "\n".join(text.splitlines()[-lines:])


class SynapseProcess:
    """Start and stop one Synapse subprocess rooted in `workdir`."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.proc: subprocess.Popen[bytes] | None = None
        self.synapse: Synapse | None = None
        self.startup_seconds: float = 0.0

    def start(self, attempts: int = 3) -> Synapse:
        shared_secret = secrets.token_hex(24)
        last_error = ""
        for _ in range(attempts):
            port = free_port()
            config = write_config(self.workdir, port, shared_secret)
            started = time.monotonic()
            self._spawn(config)
            base_url = f"http://127.0.0.1:{port}"
            error = self._wait_ready(base_url)
            if error is None:
                self.startup_seconds = time.monotonic() - started
                self.synapse = Synapse(base_url, SERVER_NAME, self.workdir / "homeserver.log", shared_secret)
                return self.synapse
            last_error = error
            self.stop()
            if "Address already in use" not in self.log_tail():
                break
        raise RuntimeError(f"Synapse did not start: {last_error}\n--- log tail ---\n{self.log_tail()}")

    def restart(self) -> Synapse:
        """Start again after `stop()`: same port, configuration, secrets and database (a server restart)."""
        if self.synapse is None:
            raise RuntimeError("restart() needs an earlier successful start()")
        self.stop()
        started = time.monotonic()
        self._spawn(self.workdir / "homeserver.yaml")
        error = self._wait_ready(self.synapse.base_url)
        if error is not None:
            self.stop()
            raise RuntimeError(f"Synapse did not restart: {error}\n--- log tail ---\n{self.log_tail()}")
        self.startup_seconds = time.monotonic() - started
        return self.synapse

    def _spawn(self, config: Path) -> None:
        stdout = (self.workdir / "stdout.log").open("ab")
        env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "synapse.app.homeserver", "-c", str(config)],
            cwd=self.workdir,
            stdout=stdout,
            stderr=subprocess.STDOUT,
            env=env,
        )
        stdout.close()

    def _wait_ready(self, base_url: str) -> str | None:
        """None once Synapse answers; otherwise why it never will."""
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        proc = self.proc
        assert proc is not None

        def answered_or_exited() -> bool:
            if proc.poll() is not None:
                return True
            try:
                with opener.open(f"{base_url}/_matrix/client/versions", timeout=10) as resp:
                    return bool(resp.status == 200)
            except (urllib.error.URLError, OSError):
                return False

        try:
            wait_until_sync(answered_or_exited, timeout=STARTUP_TIMEOUT, interval=0.1, what="Synapse")
        except WaitTimeout:
            return f"no answer within {STARTUP_TIMEOUT:.0f} s"
        return None if proc.returncode is None else f"process exited with {proc.returncode}"

    def log_tail(self, lines: int = 60) -> str:
        out = _tail(self.workdir / "homeserver.log", lines)
        stdout = _tail(self.workdir / "stdout.log", 20)
        return f"{out}\n--- stdout/stderr ---\n{stdout}"

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self.proc = None
