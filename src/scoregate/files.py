"""Files only their owner can read, and the fsyncs that make a rename or a new file durable.

What the registry and the server write (the metadata database, artifacts, the prediction
log and its journal) holds customers' data and model internals: it is created 0600 in
folders created 0700, whatever the process umask, so a shared machine's other users
cannot read it.
"""

from __future__ import annotations

import os
from pathlib import Path

FILE_MODE = 0o600
DIR_MODE = 0o700


def private_dir(path: Path | str) -> list[Path]:
    """Create ``path`` and its missing parents as 0700 folders (existing ones are left as they
    are); returns the folders it created, outermost first."""
    path = Path(path)
    missing = []
    probe = path
    while not probe.exists():
        missing.append(probe)
        if probe.parent == probe:
            break
        probe = probe.parent
    created = []
    for folder in reversed(missing):
        try:
            folder.mkdir(mode=DIR_MODE)
        except FileExistsError:  # another process made it meanwhile
            continue
        os.chmod(folder, DIR_MODE)  # mkdir's mode is masked by the umask; this is exact
        created.append(folder)
    return created


def open_private(path: Path | str, flags: int = os.O_WRONLY | os.O_CREAT | os.O_EXCL) -> int:
    """``os.open`` with mode 0600 for a file it creates; returns the descriptor."""
    return os.open(path, flags | getattr(os, "O_CLOEXEC", 0), FILE_MODE)


def make_private(path: Path | str) -> None:
    """Restrict an existing file to its owner (for files a library created with its own mode)."""
    os.chmod(path, FILE_MODE)


def fsync_dir(path: Path | str) -> None:
    """Make the entries of a folder (a file created or renamed in it) durable."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
