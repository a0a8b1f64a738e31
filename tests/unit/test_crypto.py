from __future__ import annotations

import base64
import json
import os
import stat
from pathlib import Path

import pytest

from bot.errors import DecryptionError, KeyFileExposedError, KeyRingError
from bot.store.keyring import KeyRing, aad_for

AAD = aad_for("account-token", "@alice:example.org", "https://example.org", "01ABC")
SECRET = "tok-3f9a-very-secret"


def _key_b64(n: int = 32) -> str:
    return base64.b64encode(os.urandom(n)).decode()


def _write(path: Path, data: object) -> Path:
    path.write_text(json.dumps(data))
    path.chmod(0o600)
    return path


def test_round_trip_and_format() -> None:
    ring = KeyRing.generate()
    ct = ring.encrypt(SECRET, AAD)
    version, kid, body = ct.split(".")
    assert (version, kid) == ("v1", ring.current_key_id)
    assert SECRET not in ct
    assert "=" not in body
    assert ring.decrypt(ct, AAD) == SECRET


def test_unicode_and_empty_round_trip() -> None:
    ring = KeyRing.generate()
    for text in ("", "ünïcødé ✓", "x" * 10_000):
        assert ring.decrypt(ring.encrypt(text, AAD), AAD) == text


def test_fresh_nonce_per_value() -> None:
    ring = KeyRing.generate()
    values = {ring.encrypt(SECRET, AAD) for _ in range(50)}
    assert len(values) == 50
    nonces = {base64.urlsafe_b64decode(v.split(".")[2] + "==")[:12] for v in values}
    assert len(nonces) == 50


def test_other_associated_data_fails() -> None:
    ring = KeyRing.generate()
    ct = ring.encrypt(SECRET, AAD)
    other_row = aad_for("account-token", "@bob:example.org", "https://example.org", "01ABC")
    other_purpose = aad_for("app-secret", "@alice:example.org", "https://example.org", "01ABC")
    for aad in (other_row, other_purpose, b""):
        with pytest.raises(DecryptionError) as info:
            ring.decrypt(ct, aad)
        assert SECRET not in str(info.value)


def test_aad_encoding_is_unambiguous() -> None:
    assert aad_for("p", "a", "bc") != aad_for("p", "ab", "c")
    assert aad_for("p", "a") != aad_for("p", "a", "")
    assert aad_for("p", "a b") != aad_for("p", "a", "b")
    assert aad_for("p", "x") == aad_for("p", "x")


@pytest.mark.parametrize("position", [0, 5, 20, -1])
def test_tampered_ciphertext_fails(position: int) -> None:
    ring = KeyRing.generate()
    ct = ring.encrypt(SECRET, AAD)
    head, body = ct.rsplit(".", 1)
    raw = bytearray(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    raw[position] ^= 0x01
    tampered = head + "." + base64.urlsafe_b64encode(bytes(raw)).decode().rstrip("=")
    with pytest.raises(DecryptionError):
        ring.decrypt(tampered, AAD)


@pytest.mark.parametrize(
    "bad",
    ["", "v1", "v1.abc", "v2.abcd1234.AAAA", "v1..AAAA", "v1.abcd1234.!!!!", "v1.abcd1234.AAAA", "a.b.c.d"],
)
def test_malformed_ciphertext_fails(bad: str) -> None:
    ring = KeyRing(current="abcd1234", keys={"abcd1234": os.urandom(32)}, e2ee_store_key=os.urandom(32))
    with pytest.raises(DecryptionError):
        ring.decrypt(bad, AAD)


def test_unknown_key_id_fails() -> None:
    ring, stranger = KeyRing.generate(), KeyRing.generate()
    ct = stranger.encrypt(SECRET, AAD)
    with pytest.raises(DecryptionError, match="not in the key ring"):
        ring.decrypt(ct, AAD)


def test_swapping_the_key_id_header_fails() -> None:
    old = KeyRing.generate()
    ring = old.with_new_current_key()
    ct = ring.encrypt(SECRET, AAD)
    _, _, body = ct.split(".")
    with pytest.raises(DecryptionError):
        ring.decrypt(f"v1.{old.current_key_id}.{body}", AAD)


def test_rotation_keeps_old_keys_for_decryption() -> None:
    old = KeyRing.generate()
    old_ct = old.encrypt(SECRET, AAD)
    new = old.with_new_current_key()
    assert new.current_key_id != old.current_key_id
    assert new.key_ids == {old.current_key_id, new.current_key_id}
    assert new.decrypt(old_ct, AAD) == SECRET
    new_ct = new.encrypt(SECRET, AAD)
    assert new.key_id_of(new_ct) == new.current_key_id
    slim = new.only_current()
    assert slim.key_ids == {new.current_key_id}
    assert slim.decrypt(new_ct, AAD) == SECRET
    with pytest.raises(DecryptionError):
        slim.decrypt(old_ct, AAD)
    with pytest.raises(DecryptionError):
        old.decrypt(new_ct, AAD)


def test_e2ee_store_key_survives_rotation_and_save(tmp_path: Path) -> None:
    ring = KeyRing.generate()
    rotated = ring.with_new_current_key().with_new_current_key()
    assert rotated.e2ee_store_key() == ring.e2ee_store_key()
    assert len(ring.e2ee_store_key()) >= 40
    assert KeyRing.generate().e2ee_store_key() != ring.e2ee_store_key()
    rotated.save(tmp_path / "k.json")
    assert KeyRing.load(tmp_path / "k.json").e2ee_store_key() == ring.e2ee_store_key()


def test_repr_shows_no_key_material(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    ring = KeyRing.generate_file(path).with_new_current_key()
    data = json.loads(path.read_text())
    text = repr(ring) + str(ring)
    assert ring.current_key_id in text
    for value in [*data["keys"].values(), data["e2ee_store_key"], ring.e2ee_store_key()]:
        assert value not in text
        assert value[:12] not in text


def test_generate_file_is_0600_and_loads(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "keyring.json"
    old_umask = os.umask(0)  # even a permissive umask must not widen the mode
    try:
        ring = KeyRing.generate_file(path)
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    data = json.loads(path.read_text())
    assert data["version"] == 1
    assert data["current"] == ring.current_key_id
    loaded = KeyRing.load(path)
    assert loaded.decrypt(ring.encrypt(SECRET, AAD), AAD) == SECRET


def test_generate_file_refuses_to_overwrite(tmp_path: Path) -> None:
    path = tmp_path / "keyring.json"
    first = KeyRing.generate_file(path)
    before = path.read_bytes()
    with pytest.raises(KeyRingError, match="already exists"):
        KeyRing.generate_file(path)
    assert path.read_bytes() == before
    assert KeyRing.load(path).current_key_id == first.current_key_id


def test_save_is_atomic_0600_and_replaces(tmp_path: Path) -> None:
    path = tmp_path / "keyring.json"
    ring = KeyRing.generate_file(path)
    path.chmod(0o644)
    rotated = ring.with_new_current_key()
    rotated.save(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert KeyRing.load(path).key_ids == rotated.key_ids
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keyring.json"]  # no temp file left behind


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o620])
def test_load_refuses_a_key_file_others_can_read(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "keyring.json"
    KeyRing.generate_file(path)
    KeyRing.load(path)  # 0600 as generated: fine
    path.chmod(mode)
    with pytest.raises(KeyFileExposedError, match=f"chmod 600 {path}") as caught:
        KeyRing.load(path)
    assert caught.value.exit_code == 72
    assert path.read_bytes().decode() not in str(caught.value)


def test_load_missing(tmp_path: Path) -> None:
    with pytest.raises(KeyRingError, match="does not exist"):
        KeyRing.load(tmp_path / "nope.json")


def test_load_unreadable(tmp_path: Path) -> None:
    (tmp_path / "dir.json").mkdir()  # reading a directory fails even as root
    with pytest.raises(KeyRingError, match="cannot read"):
        KeyRing.load(tmp_path / "dir.json")


def test_load_not_json(tmp_path: Path) -> None:
    path = tmp_path / "k.json"
    path.write_bytes(b"\xff\xfe not json")
    path.chmod(0o600)
    with pytest.raises(KeyRingError, match="not valid JSON"):
        KeyRing.load(path)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ([], "JSON object"),
        ({"version": 2, "current": "a", "keys": {"a": "x"}}, "unsupported version"),
        ({"version": 1, "keys": {"a": "KEY"}, "e2ee_store_key": "KEY"}, "'current'"),
        ({"version": 1, "current": "a", "keys": {}, "e2ee_store_key": "KEY"}, "'keys'"),
        ({"version": 1, "current": "a", "keys": ["KEY"], "e2ee_store_key": "KEY"}, "'keys'"),
        ({"version": 1, "current": "a", "keys": {"a": "not base64!"}, "e2ee_store_key": "KEY"}, "base64"),
        ({"version": 1, "current": "a", "keys": {"a": 5}, "e2ee_store_key": "KEY"}, "base64 string"),
        ({"version": 1, "current": "a", "keys": {"a": "SHORT"}, "e2ee_store_key": "KEY"}, "32 bytes"),
        ({"version": 1, "current": "b", "keys": {"a": "KEY"}, "e2ee_store_key": "KEY"}, "not among"),
        ({"version": 1, "current": "a", "keys": {"a": "KEY"}}, "e2ee_store_key"),
        ({"version": 1, "current": "a", "keys": {"a": "KEY"}, "e2ee_store_key": "SHORT"}, "32 bytes"),
        ({"version": 1, "current": "a.b", "keys": {"a.b": "KEY"}, "e2ee_store_key": "KEY"}, "not valid"),
    ],
)
def test_load_wrong_shape(tmp_path: Path, data: object, message: str) -> None:
    text = (
        json.dumps(data).replace('"KEY"', json.dumps(_key_b64())).replace('"SHORT"', json.dumps(_key_b64(16)))
    )
    path = tmp_path / "k.json"
    path.write_text(text)
    path.chmod(0o600)
    with pytest.raises(KeyRingError, match=message) as info:
        KeyRing.load(path)
    assert str(path) in str(info.value)


def test_load_valid_hand_written_file(tmp_path: Path) -> None:
    key = os.urandom(32)
    path = _write(
        tmp_path / "k.json",
        {
            "version": 1,
            "current": "k1",
            "keys": {"k1": base64.b64encode(key).decode()},
            "e2ee_store_key": _key_b64(),
        },
    )
    ring = KeyRing.load(path)
    assert ring.current_key_id == "k1"
    same = KeyRing(current="k1", keys={"k1": key}, e2ee_store_key=os.urandom(32))
    assert same.decrypt(ring.encrypt(SECRET, AAD), AAD) == SECRET


def test_generate_file_where_the_directory_cannot_be_made(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("")
    with pytest.raises(KeyRingError, match="cannot create the directory"):
        KeyRing.generate_file(tmp_path / "a-file" / "keyring.json")


def test_secrets_passing_through_the_ring_are_reported_for_redaction() -> None:
    ring = KeyRing.generate()
    seen: list[str] = []
    ring.on_secret(seen.append)
    sealed = ring.encrypt("token-one", b"aad")
    assert seen == ["token-one"]
    assert ring.decrypt(sealed, b"aad") == "token-one"
    assert seen == ["token-one", "token-one"]
