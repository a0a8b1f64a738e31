"""Files only the bot's user may read: the data directory, the SQLite database and its -wal/-shm files.

Every path that creates them goes through here (the engine for any SQLite file, `run` for the data
directory and the Matrix store), so `gts-bot migrate` before the first `run` leaves the same modes:
directories 0700, database files 0600. SQLite creates -wal and -shm with the database file's mode, so
creating the database file 0600 before SQLite opens it is what keeps them private. Existing database
files with group/world bits are tightened (they are the bot's own); existing directories are left as
the operator made them.
"""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path

__all__ = ["PRIVATE_DIR_MODE", "PRIVATE_FILE_MODE", "ensure_private_dir", "ensure_private_sqlite_file"]

PRIVATE_DIR_MODE = 0o700
PRIVATE_FILE_MODE = 0o600
_SQLITE_COMPANIONS = ("-wal", "-shm", "-journal")


def ensure_private_dir(path: Path) -> None:
    """Create `path` (and missing parents) with mode 0700; an existing directory is left alone."""
    missing = [p for p in (path, *path.parents) if not p.exists()]
    for directory in reversed(missing):
        with contextlib.suppress(FileExistsError):
            directory.mkdir(mode=PRIVATE_DIR_MODE)
            os.chmod(directory, PRIVATE_DIR_MODE)  # mkdir's mode is narrowed by the umask, never widened


def ensure_private_sqlite_file(path: Path) -> None:
    """Make sure the database file exists with mode 0600 before SQLite opens it; tighten wider modes."""
    ensure_private_dir(path.parent)
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE_MODE))
    for file in (path, *(path.with_name(path.name + suffix) for suffix in _SQLITE_COMPANIONS)):
        with contextlib.suppress(FileNotFoundError):
            if stat.S_IMODE(file.stat().st_mode) & 0o077:
                os.chmod(file, PRIVATE_FILE_MODE)
