"""Files that hold secrets or the cluster's state: mode 0600, in directories of mode 0700, whatever the umask.

The Raft journal and snapshot carry the whole state (ticket key, CSRF secret, password hashes); `priv/`,
`ssl/` and `root-password` hold keys. Every such file is created through `open_private` (or a function
here built on it), which sets the mode with `fchmod` after opening, so neither the umask nor an older
file's mode decides it. Directories are made, or brought back, to 0700 by `private_dir`.
"""

from __future__ import annotations

import os
from collections.abc import Callable

FILE_MODE = 0o600
DIR_MODE = 0o700


def private_dir(path: str, files: bool = False) -> str:
    """Make `path` (and missing parents) if needed and set its mode to 0700; with `files`, also set the
    regular files directly in it to 0600 (those an older version left readable). Returns `path`."""
    os.makedirs(path, mode=DIR_MODE, exist_ok=True)
    os.chmod(path, DIR_MODE)
    if files:
        for entry in os.scandir(path):
            if entry.is_file(follow_symlinks=False):
                os.chmod(entry.path, FILE_MODE)
    return path


def open_private(path: str, flags: int) -> int:
    """`os.open(path, flags | O_CREAT)` with the file's mode set to 0600 (also when it existed)."""
    fd = os.open(path, flags | os.O_CREAT, FILE_MODE)
    try:
        os.fchmod(fd, FILE_MODE)
    except BaseException:
        os.close(fd)
        raise
    return fd


def fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_private(path: str, data: bytes) -> None:
    """Replace `path` with `data` atomically and durably (a 0600 temporary file, fsync, rename, fsync dir)."""
    tmp = path + ".tmp"
    with os.fdopen(open_private(tmp, os.O_WRONLY | os.O_TRUNC), "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_dir(os.path.dirname(path) or ".")


def read_or_create(path: str, make: Callable[[], str]) -> str:
    """The stripped text of `path`; on first use, `make()` is written there first (0600, in a 0700 dir)."""
    if not os.path.exists(path):
        private_dir(os.path.dirname(path))
        write_private(path, make().encode())
    else:
        os.chmod(path, FILE_MODE)
    with open(path) as f:
        return f.read().strip()
