"""The output folder: finished files, put in place atomically, and ``results.jsonl``.

``results.jsonl`` gets one JSON line per finished (or failed) job, appended
with a single ``write`` on a file opened in append mode and flushed to disk,
so a line is either all there or not there. The last line for an id is that
job's state. A run holds an exclusive lock on the file, so two runs can never
write into the same folder at once.

Output files are written under a temporary name beginning ``.lipsync-`` in the
same folder and renamed into place, so a file with its final name is always
complete. Temporary names left by a killed run are removed by the next one.
"""

from __future__ import annotations

import dataclasses
import errno
import fcntl
import hashlib
import json
import logging
import os
import secrets
import shutil
from pathlib import Path

from ..errors import InputError

__all__ = [
    "RESULTS_NAME",
    "OUTPUT_NAMES",
    "ResultsLog",
    "file_entry",
    "is_complete",
    "put_file",
    "jsonable",
    "record_key",
    "TEMP_PREFIX",
    "remove_stale_temps",
    "sha256_file",
]

log = logging.getLogger("lipsync")

RESULTS_NAME = "results.jsonl"
#: what each job may write, by kind
OUTPUT_NAMES = {"video": "{id}.mp4", "hls_zip": "{id}_hls.zip", "captions": "{id}.vtt"}
#: temporary files and folders in the output folder start with this
TEMP_PREFIX = ".lipsync-"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def file_entry(path: Path) -> dict:
    """``{"name", "size", "sha256"}`` of a file in the output folder."""
    return {"name": path.name, "size": path.stat().st_size, "sha256": sha256_file(path)}


def put_file(dest: Path, source: Path | bytes) -> Path:
    """Put ``source`` (a file, moved, or bytes) at ``dest`` atomically, with the
    permissions a newly created file gets (not the 0600 of a temporary file)."""
    mode = 0o666 & ~_umask()
    if isinstance(source, Path):
        try:
            os.chmod(source, mode)
            os.replace(source, dest)
            return dest
        except OSError as e:
            if e.errno != errno.EXDEV:
                raise
        data_src: Path | bytes = source
    else:
        data_src = source
    tmp = dest.with_name(f"{TEMP_PREFIX}{dest.name}.{secrets.token_hex(4)}.part")
    try:
        with open(tmp, "xb") as f:
            if isinstance(data_src, Path):
                with open(data_src, "rb") as src:
                    shutil.copyfileobj(src, f, 1 << 20)
            else:
                f.write(data_src)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if isinstance(data_src, Path):
        data_src.unlink(missing_ok=True)
    return dest


def jsonable(value):
    """A Result's field -> JSON: paths as strings, a face box as [y1, y2, x1, x2],
    dataclasses as objects, numpy numbers as numbers."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if value == value and abs(value) != float("inf") else None
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if hasattr(value, "as_tuple"):
        return list(value.as_tuple())
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [jsonable(v) for v in value]
    if hasattr(value, "item") and callable(value.item):  # numpy scalar
        return jsonable(value.item())
    if hasattr(value, "tolist"):
        return jsonable(value.tolist())
    return str(value)


def record_key(record: dict) -> str:
    """Records are grouped by id; a row without a usable id by its line number."""
    return record["id"] if record.get("id") else f"row:{record.get('row')}"


def is_complete(record: dict | None, out_dir: Path, fingerprint: str, hls: bool) -> bool:
    """True when the job's last record says ok for this very job (same fingerprint)
    and every file it lists is in ``out_dir`` with the recorded size and sha256."""
    if not record or record.get("status") != "ok" or record.get("job") != fingerprint:
        return False
    files = record.get("files") or {}
    if "video" not in files or (hls and "hls_zip" not in files):
        return False
    for entry in files.values():
        try:
            p = out_dir / entry["name"]
            if Path(entry["name"]).name != entry["name"] or not p.is_file() or p.stat().st_size != entry["size"]:
                return False
            if sha256_file(p) != entry["sha256"]:
                return False
        except (KeyError, TypeError, OSError):
            return False
    return True


class ResultsLog:
    """``out_dir/results.jsonl``, opened for appending and locked for this run.

    Use as a context manager. Raises :class:`InputError` when another run holds it.
    """

    def __init__(self, out_dir: Path):
        self.path = Path(out_dir) / RESULTS_NAME
        self._fd: int | None = None

    def __enter__(self) -> "ResultsLog":
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o666)
        except OSError as e:
            raise InputError(f"Cannot write {self.path} ({e.strerror or e}); choose another --out-dir.") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise InputError(
                f"Another lipsync batch is writing to {self.path.parent}; wait for it to finish "
                "or choose another --out-dir."
            ) from None
        self._fd = fd
        self._repair_tail()
        return self

    def __exit__(self, *exc) -> None:
        if self._fd is not None:
            os.close(self._fd)  # releases the lock
            self._fd = None

    def _repair_tail(self) -> None:
        """A run killed mid-line (power loss) could leave a last line without its
        newline: cut it off so the next line starts clean."""
        size = os.fstat(self._fd).st_size
        if size == 0:
            return
        with open(self.path, "rb") as f:
            f.seek(max(0, size - 1))
            if f.read(1) == b"\n":
                return
            f.seek(0)
            data = f.read()
        keep = data.rfind(b"\n") + 1
        log.warning("results.jsonl ended in an incomplete line; removing it")
        os.ftruncate(self._fd, keep)

    def read(self) -> dict[str, dict]:
        """The last record per job (see :func:`record_key`); unreadable lines are skipped."""
        state: dict[str, dict] = {}
        with open(self.path, "r", encoding="utf-8", errors="replace") as f:
            for n, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:
                    log.warning("%s line %d is not JSON; ignored", self.path.name, n)
                    continue
                if isinstance(rec, dict) and rec.get("status") in ("ok", "error"):
                    state[record_key(rec)] = rec
        return state

    def append(self, record: dict) -> None:
        """One complete line, one write, flushed to disk."""
        data = (json.dumps(record, ensure_ascii=False, separators=(", ", ": ")) + "\n").encode("utf-8")
        view = memoryview(data)
        while view:  # a regular file takes it in one write; loop only for the pathological case
            n = os.write(self._fd, view)
            view = view[n:]
        os.fsync(self._fd)


def remove_stale_temps(out_dir: Path) -> int:
    """Remove temporary files and folders a killed run left (call with the lock held)."""
    n = 0
    for p in Path(out_dir).glob(TEMP_PREFIX + "*"):
        try:
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p)
            else:
                p.unlink()
            n += 1
        except OSError as e:  # pragma: no cover - permissions
            log.warning("could not remove %s: %s", p, e)
    if n:
        log.info("removed %d temporary file(s) left by an interrupted run in %s", n, out_dir)
    return n
