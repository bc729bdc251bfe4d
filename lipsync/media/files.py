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

from ..errors import LipSyncError

__all__ = ["part_file", "publish", "check_input_file"]


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


def check_input_file(
    path: str | Path,
    what: str,
    error: type[LipSyncError],
    *,
    max_bytes: int | None = None,
    empty_hint: str = "",
    too_large_hint: str = "",
) -> Path:
    """An untrusted input file that must exist, hold something and stay under ``max_bytes``.

    Args:
        what: the kind of file in the messages ("audio", "video").
        error: the :class:`LipSyncError` subclass to raise.
        empty_hint, too_large_hint: what the user can do, appended to those messages.
    """
    path = Path(path)
    if not path.is_file():
        raise error(f"The {what} file {path} does not exist.")
    size = path.stat().st_size
    if size == 0:
        raise error(f"The {what} file {path.name} is empty.{' ' + empty_hint if empty_hint else ''}")
    if max_bytes is not None and size > max_bytes:
        raise error(
            f"The {what} file {path.name} is {size / 1e6:.1f} MB; the limit is {max_bytes / 1e6:.0f} MB. "
            + too_large_hint
        )
    return path
