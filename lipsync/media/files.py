"""Files written for the user: made under a temporary name beside the target, renamed when complete.

A half-written file never appears under the user's name, and the finished file
gets the ordinary mode of a new file (``0666 & ~umask``, e.g. 0644), so a web
server running as another user can serve it. (``tempfile.mkstemp`` would give
0600.)
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

__all__ = ["part_file", "publish"]


def part_file(dest: str | Path, suffix: str = ".part") -> Path:
    """Create a new, empty, uniquely named file beside ``dest`` (mode ``0666 & ~umask``)."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    while True:
        tmp = dest.parent / f".{dest.stem}.{secrets.token_hex(6)}{suffix}"
        try:
            fd = os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
        except FileExistsError:  # pragma: no cover - 48 random bits
            continue
        os.close(fd)
        return tmp


def publish(tmp: str | Path, dest: str | Path) -> Path:
    """Atomically move a finished ``tmp`` to ``dest``."""
    os.replace(tmp, dest)
    return Path(dest)
