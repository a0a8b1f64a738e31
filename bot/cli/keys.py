"""`gts-bot keys generate|rotate|retire`: the key file that encrypts the secrets stored in the database."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING

from bot.cli.common import EXIT_OK, start_logging

if TYPE_CHECKING:
    from bot.cli import Invocation

__all__ = ["generate", "retire", "rotate"]


def generate(invocation: Invocation) -> int:
    from bot.store.keyring import KeyRing

    path: Path = invocation.args.key_file or invocation.load_config().encryption.key_file
    KeyRing.generate_file(path)
    print(f"wrote a new key file to {path} (readable only by its owner)")
    print(
        "Back it up now, somewhere other than the database backups: without it the stored tokens "
        "cannot be decrypted, and anyone who has both can read them."
    )
    return EXIT_OK


def rotate(invocation: Invocation) -> int:
    from bot.store.key_rotation import rotate_keys

    config = invocation.load_config()
    start_logging(config)
    count = asyncio.run(rotate_keys(config))
    print(f"re-encrypted {count} stored secrets with a new key in {config.encryption.key_file}")
    print(
        "The old keys remain in the key file, so older database backups stay readable; remove them "
        "by hand once no backup needs them."
    )
    return EXIT_OK


def retire(invocation: Invocation) -> int:
    from bot.store.key_rotation import retire_old_keys

    config = invocation.load_config()
    start_logging(config)
    key_file = config.encryption.key_file
    dropped = asyncio.run(retire_old_keys(config))
    if dropped == 0:
        print(f"nothing to retire: {key_file} holds only its current key")
        return EXIT_OK
    print(
        f"removed {dropped} old key{'s' if dropped != 1 else ''} from {key_file}; every stored secret "
        "decrypts with the current key alone"
    )
    print(
        "Database backups made before the last `keys rotate` need the previous key file; keep a copy of it "
        "with those backups, or discard them together."
    )
    return EXIT_OK
