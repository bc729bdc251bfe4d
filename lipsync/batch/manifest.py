"""The jobs file: one video per row, in CSV or JSON Lines, checked row by row.

Columns (names are case-insensitive; ``-`` and spaces read as ``_``):

========================  ==========================================================
``id``                    required; unique; letters, digits, ``.``, ``_``, ``-``
                          (up to 100, starting with a letter or digit): the output
                          file names are ``<id>.mp4``, ``<id>_hls.zip``, ``<id>.vtt``
``image``                 the portrait (a path relative to the jobs file, or absolute)
``video``                 a driving video instead of ``image`` (MP4, MOV, WebM, MKV)
``text``                  words to speak (with the option ``voice``; empty = the default voice)
``audio``                 a soundtrack instead of ``text`` (exactly one of the two)
``hls``                   yes/no: also write ``<id>_hls.zip`` (with the subtitles when
                          the row asks for ``captions``)
any option                every :class:`~lipsync.options.GenerateOptions` field, under
                          its column name (:func:`lipsync.options.option_column`):
                          ``voice``, ``length`` (seconds), ``loop``, ``max_chars``,
                          ``fps``, ``pads`` ("0 10 0 0"), ``box``, ``face_index``,
                          ``max_side``, ``frame_step``, ``label``, ``captions``, ...
``_anything``             columns starting with ``_`` are notes, ignored
========================  ==========================================================

Empty cells mean "the default". In JSON Lines, values may be typed (numbers,
``true``/``false``, lists for ``pads``) or strings written as in the CSV.

:func:`load_manifest` never raises for a bad row: it returns the good rows as
:class:`Job` objects and the bad ones as :class:`RowError` objects, so the
good ones can run. Only a problem with the file as a whole (missing, unknown
columns, no rows) raises :class:`~lipsync.errors.InputError`.

The one place that maps a job to :meth:`LipSync.generate`'s arguments is
:meth:`Job.generate_kwargs`.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import InputError, LipSyncError
from ..options import GenerateOptions, Request, option_column

__all__ = ["Job", "RowError", "Manifest", "load_manifest", "JOB_COLUMNS", "option_columns", "ID_PATTERN"]

#: ids become file names: no separators, no leading dot or dash, no spaces
ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")

#: the columns that are not GenerateOptions fields
JOB_COLUMNS = ("id", "image", "video", "text", "audio", "hls")

_TRUE = {"1", "yes", "y", "true", "t", "on"}
_FALSE = {"0", "no", "n", "false", "f", "off"}
_MAX_MANIFEST_BYTES = 64_000_000


def option_columns() -> dict[str, dataclasses.Field]:
    """``{column name: field}`` for every :class:`GenerateOptions` field (the column is the
    field's ``column`` metadata, else its name: ``length`` sets ``length_s``)."""
    return {option_column(f): f for f in dataclasses.fields(GenerateOptions)}


@dataclass(frozen=True)
class Job:
    """One valid row: everything needed to make one video.

    Attributes:
        id: the output name stem.
        row: the row's line number in the jobs file (1 = the first line).
        image: the portrait, an absolute path.
        audio: the soundtrack (absolute path), or None with ``text``.
        text: the words to speak (cleaned), or None with ``audio``.
        options: the generation options (the voice, length, loop and text limit among them).
        hls: also package the MP4 as an HLS zip.
        inputs: ``{"image": sha256, "audio": sha256}`` of the input files, for the fingerprint.
    """

    id: str
    row: int
    image: Path  #: the face: a photo, or a driving video when ``is_video``
    audio: Path | None = None
    text: str | None = None
    options: GenerateOptions = field(default_factory=GenerateOptions)
    hls: bool = False
    is_video: bool = False
    inputs: dict[str, str] = field(default_factory=dict, compare=False, hash=False)

    def generate_kwargs(self, out: Path, *, image=None, audio=None) -> dict:
        """The keyword arguments of ``LipSync.generate`` for this job (the one mapping).

        ``image``/``audio`` replace the job's own paths (a Ray worker passes its local copies).
        """
        face = image if image is not None else self.image
        return dict(
            **({"video": face} if self.is_video else {"image": face}),
            audio=(audio if audio is not None else self.audio) if self.text is None else None,
            out=out,
            options=self.options,  # voice, length, loop and max_chars included
            text=self.text,
        )

    def fingerprint(self) -> str:
        """A sha256 over everything that shapes the output: the input files' contents,
        the text, voice, length and options. A finished job whose row (or input
        files) changed since is made again."""
        opts = dataclasses.asdict(self.options)
        spec = {
            "v": 2,  # 2: voice, length, loop and max_chars are read from the options
            "inputs": dict(sorted(self.inputs.items())),
            "text": self.text,
            "hls": self.hls,
            "options": opts,
        }
        blob = json.dumps(spec, sort_keys=True, default=list, separators=(",", ":")).encode()
        return hashlib.sha256(blob).hexdigest()


@dataclass(frozen=True)
class RowError:
    """A row that cannot run, and why (``message`` is written for the person who made the file)."""

    row: int
    id: str | None  #: the row's id when it is usable (valid and unique), else None
    message: str
    raw_id: str | None = None  #: whatever the id cell held, for reports

    def __str__(self) -> str:
        who = f" (id {self.raw_id})" if self.raw_id else ""
        return f"row {self.row}{who}: {self.message}"


@dataclass
class Manifest:
    """A parsed jobs file."""

    path: Path
    jobs: list[Job]
    errors: list[RowError]

    @property
    def rows(self) -> int:
        return len(self.jobs) + len(self.errors)


# ----------------------------------------------------------------------------- reading


def _norm_column(name: str) -> str:
    return re.sub(r"[\s\-]+", "_", str(name).strip().lower())


def _read_rows(path: Path) -> tuple[list[str], list[tuple[int, dict | str]]]:
    """(columns in order, [(line number, {column: value} or an error message)])."""
    if not path.is_file():
        raise InputError(f"The jobs file {path} does not exist.")
    size = path.stat().st_size
    if size > _MAX_MANIFEST_BYTES:
        raise InputError(f"The jobs file {path} is {size / 1e6:.0f} MB; split it into files under 64 MB.")
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError:
        raise InputError(f"The jobs file {path} is not UTF-8 text; save it as UTF-8 (CSV UTF-8 in Excel).") from None
    suffix = path.suffix.lower()
    rows: list[tuple[int, dict | str]] = []
    if suffix in (".jsonl", ".ndjson"):
        columns: list[str] = []
        for n, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                rows.append((n, f"The line is not valid JSON ({e.msg} at column {e.colno})."))
                continue
            if not isinstance(obj, dict):
                rows.append((n, 'The line must be a JSON object like {"id": "...", "image": "..."}.'))
                continue
            norm: dict = {}
            for k, v in obj.items():
                key = _norm_column(k)
                if key in norm:
                    rows.append((n, f"The key {k!r} appears twice."))
                    break
                norm[key] = v
                if key not in columns:
                    columns.append(key)
            else:
                rows.append((n, norm))
        return columns, rows
    if suffix in (".csv", ".tsv"):
        dialect = "excel-tab" if suffix == ".tsv" else "excel"
        reader = csv.reader(io.StringIO(text, newline=""), dialect=dialect)
        try:
            header = next(reader)
        except StopIteration:
            raise InputError(f"The jobs file {path} is empty; it needs a header line (id,image,text,...).") from None
        except csv.Error as e:
            raise InputError(f"The jobs file {path} is not valid CSV: {e}.") from None
        columns = [_norm_column(h) for h in header]
        dupes = sorted({c for c in columns if c and columns.count(c) > 1})
        if dupes:
            raise InputError(f"The jobs file {path} has the column(s) {', '.join(dupes)} more than once.")
        try:
            for cells in reader:
                n = reader.line_num
                if not any(c.strip() for c in cells):
                    continue
                if len(cells) > len(columns):
                    rows.append((n, f"The row has {len(cells)} cells but the header names {len(columns)} columns."))
                    continue
                rows.append((n, {c: v for c, v in zip(columns, cells, strict=False) if c}))
        except csv.Error as e:
            raise InputError(f"The jobs file {path} is not valid CSV near line {reader.line_num}: {e}.") from None
        return [c for c in columns if c], rows
    raise InputError(f"The jobs file must be .csv, .tsv or .jsonl, got {path.name}.")


# ----------------------------------------------------------------------------- values


def _empty(v) -> bool:
    return v is None or (isinstance(v, str) and not v.strip())


def _as_bool(column: str, v) -> bool:
    if isinstance(v, bool):
        return v
    if isinstance(v, (int, float)) and v in (0, 1):
        return bool(v)
    s = str(v).strip().lower()
    if s in _TRUE:
        return True
    if s in _FALSE:
        return False
    raise InputError(f"{column} must be yes or no, got {str(v)[:40]!r}.")


def _as_float(column: str, v) -> float:
    try:
        x = float(v.strip() if isinstance(v, str) else v)
    except (TypeError, ValueError):
        raise InputError(f"{column} must be a number, got {str(v)[:40]!r}.") from None
    if not math.isfinite(x):
        raise InputError(f"{column} must be a finite number, got {v!r}.")
    return x


def _as_int(column: str, v) -> int:
    if isinstance(v, bool):
        raise InputError(f"{column} must be a whole number, got {v!r}.")
    x = _as_float(column, v)
    if x != int(x):
        raise InputError(f"{column} must be a whole number, got {v!r}.")
    return int(x)


def _as_ints(column: str, v) -> tuple[int, ...]:
    if isinstance(v, str):
        parts = [p for p in re.split(r"[\s,;]+", v.strip().strip("[]()")) if p]
    elif isinstance(v, (list, tuple)):
        parts = list(v)
    else:
        raise InputError(f"{column} must be whole numbers separated by spaces, got {v!r}.")
    return tuple(_as_int(column, p) for p in parts)


def _option_value(column: str, type_: str, v):
    """A cell -> the value for a GenerateOptions field of type ``type_`` (as written in options.py)."""
    t = type_.replace(" ", "")
    if t.startswith("bool"):
        return _as_bool(column, v)
    if t.startswith("tuple"):
        return _as_ints(column, v)
    if t.startswith("dict"):
        if isinstance(v, str):
            try:
                v = json.loads(v)
            except json.JSONDecodeError:
                raise InputError(f'{column} must be a JSON object like {{"title": "..."}}.') from None
        if not isinstance(v, dict) or not all(isinstance(k, str) and isinstance(x, str) for k, x in v.items()):
            raise InputError(f"{column} must be an object of text values.")
        return v
    if t.startswith("int"):
        return _as_int(column, v)
    if t.startswith("float"):
        return _as_float(column, v)
    if t.startswith("str"):
        return str(v).strip()
    raise InputError(f"The column {column} cannot be set from a jobs file.")


# ----------------------------------------------------------------------------- checking


class _FileHashes:
    """sha256 of input files, read once per (path, size, mtime) even if many rows share a photo."""

    def __init__(self) -> None:
        self._seen: dict[tuple[str, int, int], str] = {}

    def __call__(self, path: Path) -> str:
        st = path.stat()
        key = (str(path), st.st_size, st.st_mtime_ns)
        if key not in self._seen:
            h = hashlib.sha256()
            with open(path, "rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    h.update(chunk)
            self._seen[key] = h.hexdigest()
        return self._seen[key]


def _input_file(base: Path, column: str, value, hashes: _FileHashes) -> tuple[Path, str]:
    if not isinstance(value, str):
        raise InputError(f"{column} must be a file path, got {value!r}.")
    shown = value.strip()
    p = Path(shown).expanduser()
    if not p.is_absolute():
        p = base / p
    if not p.exists():
        raise InputError(f"The {column} file {shown} does not exist (paths are relative to the jobs file).")
    if not p.is_file():
        raise InputError(f"The {column} {shown} is not a file.")
    try:
        if p.stat().st_size == 0:
            raise InputError(f"The {column} file {shown} is empty.")
        digest = hashes(p)
    except OSError as e:
        raise InputError(f"The {column} file {shown} cannot be read ({e.strerror or e}).") from None
    return p.resolve(), digest


class _Voices:
    """Voice checks, once per distinct voice id."""

    def __init__(self) -> None:
        self._seen: dict[str, str | None] = {}

    def __call__(self, voice: str) -> None:
        if voice not in self._seen:
            from ..speech import tts

            try:
                tts.usable_voice(voice)
                self._seen[voice] = None
            except LipSyncError as e:
                self._seen[voice] = str(e)
        if self._seen[voice]:
            raise InputError(self._seen[voice])


def _job(base: Path, n: int, job_id: str, cells: dict, options: dict[str, dataclasses.Field], hashes, voices) -> Job:
    """One row (already known to have a good, unique id) -> Job; raises InputError."""
    get = {k: v for k, v in cells.items() if not _empty(v) and not k.startswith("_")}
    if ("video" in get) == ("image" in get):
        raise InputError("Give the face as either an image (a photo) or a video, exactly one of the two.")
    face_kind = "video" if "video" in get else "image"
    image, image_sha = _input_file(base, face_kind, get[face_kind], hashes)
    inputs = {face_kind: image_sha}
    has_text, has_audio = "text" in get, "audio" in get
    if has_text == has_audio:
        raise InputError("Give either text (with an optional voice) or audio, exactly one of the two.")
    text = audio = None
    if has_text:
        if not isinstance(get["text"], str):
            raise InputError("text must be text.")
        text = get["text"]
        if "voice" in get:
            voices(str(get["voice"]).strip())  # known and usable (cached per voice for the whole file)
    else:
        audio, audio_sha = _input_file(base, "audio", get["audio"], hashes)
        inputs["audio"] = audio_sha
    hls = _as_bool("hls", get["hls"]) if "hls" in get else False
    kwargs = {f.name: _option_value(col, str(f.type), get[col]) for col, f in options.items() if col in get}
    opts = GenerateOptions(**kwargs)  # raises InputError with the option's rule
    # the same checks as every other request (text cleaned and within max_chars, a voice only
    # with text, captions only with text, the files there); the output name is the job's own
    face = {"image": None, "video": image} if face_kind == "video" else {"image": image}
    req = Request(out=Path(f"{job_id}.mp4"), audio=audio, text=text, options=opts, **face)
    return Job(
        id=job_id, row=n, image=image, audio=audio, text=req.text, options=opts, hls=hls, inputs=inputs,
        is_video=face_kind == "video",
    )


def load_manifest(path: str | Path) -> Manifest:
    """Read and check a jobs file. Bad rows are returned, not raised.

    Raises:
        InputError: the file is missing, not CSV/TSV/JSON Lines, has no rows,
            has no ``id`` column, or names a column that means nothing.
    """
    path = Path(path).expanduser()
    columns, rows = _read_rows(path)
    options = option_columns()
    known = set(JOB_COLUMNS) | set(options)
    unknown = [c for c in columns if c not in known and not c.startswith("_")]
    if unknown:
        raise InputError(
            f"The jobs file {path.name} has unknown column(s): {', '.join(unknown)}. Known columns: "
            f"{', '.join(JOB_COLUMNS)}, and the options {', '.join(options)}. "
            "Start a column's name with _ to keep it as a note."
        )
    if not rows:
        raise InputError(f"The jobs file {path.name} has no jobs.")
    if "id" not in columns:
        raise InputError(f"The jobs file {path.name} needs an id column (a unique name for each video).")
    base = path.resolve().parent

    # ids first: a row's id must be valid and unique in the whole file
    ids: dict[str, list[int]] = {}
    for n, cells in rows:
        if isinstance(cells, dict):
            raw = cells.get("id")
            raw = str(raw) if isinstance(raw, int) and not isinstance(raw, bool) else raw
            if isinstance(raw, str) and ID_PATTERN.match(raw.strip()) and not raw.strip().endswith("."):
                ids.setdefault(raw.strip().casefold(), []).append(n)

    jobs: list[Job] = []
    errors: list[RowError] = []
    hashes, voices = _FileHashes(), _Voices()
    for n, cells in rows:
        if isinstance(cells, str):
            errors.append(RowError(n, None, cells))
            continue
        raw = cells.get("id")
        if isinstance(raw, int) and not isinstance(raw, bool):  # JSON Lines: "id": 17
            raw = str(raw)
        raw_id = None if _empty(raw) else str(raw).strip()
        if raw_id is None:
            errors.append(RowError(n, None, "The id is empty; give each job a unique name."))
            continue
        if not isinstance(raw, str) or not ID_PATTERN.match(raw_id) or raw_id.endswith("."):
            errors.append(RowError(
                n, None,
                f"The id {raw_id[:60]!r} cannot be a file name: use up to 100 letters, digits, '.', '_' or '-', "
                "starting with a letter or digit.", raw_id[:100],
            ))
            continue
        same = ids[raw_id.casefold()]
        if len(same) > 1:
            others = ", ".join(str(x) for x in same if x != n)
            errors.append(RowError(n, None, f"The id {raw_id} is used again on line(s) {others}; ids must be unique "
                                   "(letter case does not count).", raw_id))
            continue
        try:
            jobs.append(_job(base, n, raw_id, cells, options, hashes, voices))
        except InputError as e:
            errors.append(RowError(n, raw_id, str(e), raw_id))
    return Manifest(path=path, jobs=jobs, errors=errors)
