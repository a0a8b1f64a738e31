"""Secrets at rest: a key ring of AES-256-GCM keys and the ciphertext text format.

A ciphertext is the text ``v1.<key id>.<base64url(nonce || ciphertext+tag)>``. Every value gets a fresh
12-byte random nonce. The associated data (``aad``) binds a ciphertext to the row and purpose it was made
for, so a value copied into another row (or used for another purpose) fails to decrypt; build it with
:func:`aad_for`. The version and key id are authenticated too.

The key file is JSON, readable only by its owner::

    {"version": 1, "current": "<kid>", "keys": {"<kid>": "<base64 32 bytes>", ...},
     "e2ee_store_key": "<base64 32 bytes>"}

``current`` encrypts; every key in ``keys`` can still decrypt (older keys stay after a rotation until
retired). ``e2ee_store_key`` is the passphrase for matrix-nio's olm/megolm pickles; see
:meth:`KeyRing.e2ee_store_key` for why rotation leaves it alone.

Nothing here logs or raises with key material or plaintext in the message.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import hmac
import json
import logging
import os
import secrets
import stat
from collections.abc import Callable, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from bot.errors import DecryptionError, KeyFileExposedError, KeyRingError

__all__ = ["KeyRing", "aad_for"]

log = logging.getLogger(__name__)

_FORMAT_VERSION = "v1"
_FILE_VERSION = 1
_KEY_BYTES = 32
_NONCE_BYTES = 12
_TAG_BYTES = 16


def aad_for(purpose: str, *parts: str) -> bytes:
    """Associated data for one secret: each part length-prefixed, so ("a", "bc") != ("ab", "c")."""
    out = bytearray()
    for part in (purpose, *parts):
        raw = part.encode("utf-8")
        out += len(raw).to_bytes(4, "big")
        out += raw
    return bytes(out)


def _b64encode(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def _b64decode_key(value: object, what: str) -> bytes:
    if not isinstance(value, str):
        raise KeyRingError(f"{what} must be a base64 string")
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise KeyRingError(f"{what} is not valid base64") from None
    if len(raw) != _KEY_BYTES:
        raise KeyRingError(f"{what} must be {_KEY_BYTES} bytes, found {len(raw)}")
    return raw


def _new_key_id(existing: Mapping[str, bytes]) -> str:
    while True:
        kid = secrets.token_hex(4)
        if kid not in existing:
            return kid


def _full_aad(key_id: str, aad: bytes) -> bytes:
    # The header is authenticated as well, so the key id cannot be swapped without detection.
    return aad_for("gts-bot-secret", _FORMAT_VERSION, key_id) + aad


class KeyRing:
    """One current key that encrypts, older keys that still decrypt, and the e2ee store passphrase."""

    __slots__ = ("_current", "_e2ee_store_key", "_forget_observers", "_keys", "_secret_observers")

    def __init__(self, current: str, keys: Mapping[str, bytes], e2ee_store_key: bytes) -> None:
        if current not in keys:
            raise KeyRingError(f"the current key id {current!r} is not among the keys")
        for kid, key in keys.items():
            if len(key) != _KEY_BYTES:
                raise KeyRingError(f"key {kid!r} must be {_KEY_BYTES} bytes")
            if not kid or "." in kid:
                raise KeyRingError(f"key id {kid!r} is not valid")
        if len(e2ee_store_key) != _KEY_BYTES:
            raise KeyRingError(f"e2ee_store_key must be {_KEY_BYTES} bytes")
        self._current = current
        self._keys: Mapping[str, bytes] = MappingProxyType(dict(keys))
        self._e2ee_store_key = e2ee_store_key
        self._secret_observers: list[Callable[[str], None]] = []
        self._forget_observers: list[Callable[[str], None]] = []

    def on_secret(self, observer: Callable[[str], None]) -> None:
        """Tell `observer` every secret this ring encrypts or decrypts (the log redactor registers them)."""
        self._secret_observers.append(observer)

    def on_forget(self, observer: Callable[[str], None]) -> None:
        """Tell `observer` of secrets that are gone for good (`forget`): the redactor drops them."""
        self._forget_observers.append(observer)

    def forget(self, secret: str) -> None:
        """`secret` (a revoked account's token) will not be seen again."""
        for observer in self._forget_observers:
            observer(secret)

    def _seen(self, secret: str) -> None:
        for observer in self._secret_observers:
            observer(secret)

    def __repr__(self) -> str:
        return f"KeyRing(current={self._current!r}, key_ids={sorted(self._keys)!r})"

    # -- construction -----------------------------------------------------------------------------

    @classmethod
    def generate(cls) -> KeyRing:
        """A fresh ring in memory: one random key and a random e2ee store key."""
        kid = secrets.token_hex(4)
        return cls(kid, {kid: AESGCM.generate_key(bit_length=256)}, secrets.token_bytes(_KEY_BYTES))

    @classmethod
    def generate_file(cls, path: Path) -> KeyRing:
        """Create a new key file at `path` (mode 0600 from the start). Refuses to overwrite one."""
        ring = cls.generate()
        try:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as exc:
            raise KeyRingError(f"cannot create the directory for key file {path}: {exc.strerror}") from None
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            raise KeyRingError(f"key file {path} already exists; refusing to overwrite it") from None
        except OSError as exc:
            raise KeyRingError(f"cannot create key file {path}: {exc.strerror}") from None
        try:
            with os.fdopen(fd, "wb") as f:
                os.fchmod(f.fileno(), 0o600)  # in case the umask or file system widened it
                f.write(ring._to_json())
                f.flush()
                os.fsync(f.fileno())
        except OSError as exc:
            with contextlib.suppress(OSError):
                path.unlink()  # a half-written file would block the next attempt
            raise KeyRingError(f"cannot write key file {path}: {exc.strerror}") from None
        _fsync_dir(path.parent)
        return ring

    @classmethod
    def load(cls, path: Path) -> KeyRing:
        """Read a key file; any problem is a KeyRingError that says what is wrong (never the key)."""
        try:
            mode = path.stat().st_mode
            raw = path.read_bytes()
        except FileNotFoundError:
            raise KeyRingError(f"key file {path} does not exist") from None
        except OSError as exc:
            raise KeyRingError(f"cannot read key file {path}: {exc.strerror}") from None
        if stat.S_IMODE(mode) & 0o077:
            # Refuse rather than warn: a warning scrolls by while every token stays readable to others.
            raise KeyFileExposedError(
                f"key file {path} can be read or written by other users (mode {stat.S_IMODE(mode):o}); "
                f"the bot refuses to use it. Fix it with: chmod 600 {path}"
            )
        try:
            data = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise KeyRingError(f"key file {path} is not valid JSON") from None
        try:
            return cls._from_dict(data)
        except KeyRingError as exc:
            raise KeyRingError(f"key file {path}: {exc}") from None

    @classmethod
    def _from_dict(cls, data: Any) -> KeyRing:
        if not isinstance(data, dict):
            raise KeyRingError("expected a JSON object")
        if data.get("version") != _FILE_VERSION:
            raise KeyRingError(f"unsupported version {data.get('version')!r} (expected {_FILE_VERSION})")
        current = data.get("current")
        keys = data.get("keys")
        if not isinstance(current, str):
            raise KeyRingError("'current' must be a key id string")
        if not isinstance(keys, dict) or not keys:
            raise KeyRingError("'keys' must be a non-empty object of key id to base64 key")
        decoded = {str(kid): _b64decode_key(value, f"key {kid!r}") for kid, value in keys.items()}
        if "e2ee_store_key" not in data:
            raise KeyRingError("'e2ee_store_key' is missing")
        e2ee = _b64decode_key(data["e2ee_store_key"], "'e2ee_store_key'")
        return cls(current, decoded, e2ee)

    def _to_json(self) -> bytes:
        data = {
            "version": _FILE_VERSION,
            "current": self._current,
            "keys": {kid: _b64encode(key) for kid, key in self._keys.items()},
            "e2ee_store_key": _b64encode(self._e2ee_store_key),
        }
        return (json.dumps(data, indent=2, sort_keys=True) + "\n").encode("utf-8")

    def save(self, path: Path) -> None:
        """Write the ring to `path` atomically (temp file, fsync, rename), mode 0600."""
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as f:
                os.fchmod(f.fileno(), 0o600)
                f.write(self._to_json())
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except OSError as exc:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise KeyRingError(f"cannot write key file {path}: {exc.strerror}") from None
        _fsync_dir(path.parent)

    # -- key management ---------------------------------------------------------------------------

    def with_new_current_key(self) -> KeyRing:
        """A ring with a new random current key; the old keys stay so existing data still decrypts."""
        kid = _new_key_id(self._keys)
        keys = dict(self._keys)
        keys[kid] = AESGCM.generate_key(bit_length=256)
        return KeyRing(kid, keys, self._e2ee_store_key)

    def only_current(self) -> KeyRing:
        """A ring holding just the current key (for retiring old keys once nothing needs them)."""
        return KeyRing(self._current, {self._current: self._keys[self._current]}, self._e2ee_store_key)

    @property
    def current_key_id(self) -> str:
        return self._current

    @property
    def key_ids(self) -> frozenset[str]:
        return frozenset(self._keys)

    def e2ee_store_key(self) -> str:
        """The passphrase matrix-nio uses to pickle its olm account and megolm sessions.

        Rotation does not change it: nio has no way to re-encrypt its store under a new passphrase, and a
        store that cannot be opened means a new device and lost room keys. It lives in the key file so
        one backup covers every secret the bot needs.
        """
        return base64.urlsafe_b64encode(self._e2ee_store_key).decode("ascii").rstrip("=")

    def fingerprint(self, purpose: str, value: str) -> str:
        """A keyed digest of `value` (HMAC-SHA256), to find equal secrets without decrypting them.

        Keyed with a key derived from the e2ee store key, which rotation keeps: a fingerprint stored
        before `keys rotate` must still match the same secret afterwards. Without the key file a
        fingerprint says nothing about the secret.
        """
        key = hmac.new(self._e2ee_store_key, b"gts-bot fingerprint key v1", hashlib.sha256).digest()
        return hmac.new(key, aad_for(purpose, value), hashlib.sha256).hexdigest()

    # -- encryption -------------------------------------------------------------------------------

    def encrypt(self, plaintext: str, aad: bytes) -> str:
        self._seen(plaintext)
        nonce = secrets.token_bytes(_NONCE_BYTES)
        sealed = AESGCM(self._keys[self._current]).encrypt(
            nonce, plaintext.encode("utf-8"), _full_aad(self._current, aad)
        )
        body = base64.urlsafe_b64encode(nonce + sealed).decode("ascii").rstrip("=")
        return f"{_FORMAT_VERSION}.{self._current}.{body}"

    def key_id_of(self, ciphertext: str) -> str:
        """The key id a ciphertext says it was made with (not yet authenticated)."""
        return _split(ciphertext)[0]

    def decrypt(self, ciphertext: str, aad: bytes) -> str:
        kid, body = _split(ciphertext)
        key = self._keys.get(kid)
        if key is None:
            raise DecryptionError(
                f"the stored secret was encrypted with key {kid!r}, which is not in the key ring"
            )
        try:
            raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
        except (binascii.Error, ValueError):
            raise DecryptionError("the stored secret is not valid base64") from None
        if len(raw) < _NONCE_BYTES + _TAG_BYTES:
            raise DecryptionError("the stored secret is too short")
        try:
            plain = AESGCM(key).decrypt(raw[:_NONCE_BYTES], raw[_NONCE_BYTES:], _full_aad(kid, aad))
        except InvalidTag:
            raise DecryptionError(
                "the stored secret did not authenticate (tampered, copied from another row, or wrong key)"
            ) from None
        try:
            secret = plain.decode("utf-8")
        except UnicodeDecodeError:
            raise DecryptionError("the stored secret is not UTF-8") from None
        self._seen(secret)
        return secret


def _split(ciphertext: str) -> tuple[str, str]:
    parts = ciphertext.split(".")
    if len(parts) != 3 or parts[0] != _FORMAT_VERSION or not parts[1]:
        raise DecryptionError("the stored secret is not in the expected format")
    return parts[1], parts[2]


def _fsync_dir(directory: Path) -> None:
    # Makes the create/rename durable; not all platforms allow opening a directory.
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
