"""What an untrusted media file is, from its first bytes (never from its name).

ffmpeg left to itself guesses a file's format from its content: a text file
can turn out to be an HLS playlist or an ffconcat list, and those demuxers
open the other files and network addresses they name. So the audio and video
doors call :func:`sniff` first, refuse anything that is not one of the
containers below, and then open the file with that demuxer forced
(:func:`input_args`) and the ``file`` protocol only.

Containers, by the name used here (and the ffmpeg demuxer forced for it):

* ``mp4`` - ISO base media: MP4, MOV, M4A, 3GP (``mov``)
* ``matroska`` - MKV, WebM (``matroska``)
* ``avi`` - RIFF AVI (``avi``)
* ``wav`` - RIFF/RF64/BW64 WAVE (``wav``)
* ``aiff`` - AIFF, AIFF-C (``aiff``)
* ``mp3`` - MPEG audio, with or without an ID3v2 tag (``mp3``)
* ``aac`` - raw AAC in ADTS frames (``aac``)
* ``ogg`` - Ogg: Vorbis, Opus, FLAC (``ogg``)
* ``flac`` - native FLAC (``flac``)
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["sniff", "sniff_as", "input_args", "DEMUXERS", "PlaylistError"]

#: container -> (ffmpeg demuxer to force, the format name ffprobe then reports)
DEMUXERS: dict[str, tuple[str, str]] = {
    "mp4": ("mov", "mov,mp4,m4a,3gp,3g2,mj2"),
    "matroska": ("matroska", "matroska,webm"),
    "avi": ("avi", "avi"),
    "wav": ("wav", "wav"),
    "aiff": ("aiff", "aiff"),
    "mp3": ("mp3", "mp3"),
    "aac": ("aac", "aac"),
    "ogg": ("ogg", "ogg"),
    "flac": ("flac", "flac"),
}

#: first box types of an ISO base media file (MP4 / MOV)
_ISO_BOXES = (b"ftyp", b"moov", b"mdat", b"free", b"skip", b"wide", b"pnot")
_EBML = b"\x1a\x45\xdf\xa3"
_HEAD = 64
_MAX_ID3_SKIP = 8 << 20  #: ID3 tags (cover art included) longer than this are not followed


class PlaylistError(ValueError):
    """The file is a playlist or a list of other files (HLS, ffconcat, M3U...), not media."""


def _mpeg_audio(head: bytes) -> str | None:
    """"aac" (ADTS) or "mp3" (MPEG audio layer I-III) for a frame header at ``head[0:2]``."""
    if len(head) < 2 or head[0] != 0xFF or head[1] & 0xE0 != 0xE0:
        return None
    layer = (head[1] >> 1) & 3
    if layer == 0:
        return "aac" if head[1] & 0xF6 == 0xF0 else None
    return "mp3" if (head[1] >> 3) & 3 != 1 else None  # version bits 01 are reserved


def _after_id3(f, head: bytes) -> str:
    """The container behind one or more ID3v2 tags: flac, aac or (by default) mp3."""
    offset = 0
    while head[:3] == b"ID3" and len(head) >= 10:
        size = (head[6] & 0x7F) << 21 | (head[7] & 0x7F) << 14 | (head[8] & 0x7F) << 7 | (head[9] & 0x7F)
        offset += 10 + size + (10 if head[5] & 0x10 else 0)
        if offset > _MAX_ID3_SKIP:
            return "mp3"
        f.seek(offset)
        head = f.read(_HEAD)
    if head[:4] == b"fLaC":
        return "flac"
    return "aac" if _mpeg_audio(head) == "aac" else "mp3"


def _looks_like_a_list(head: bytes) -> bool:
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if text.startswith(b"#!"):  # a raw AMR recording ("#!AMR") or a script: not a list
        return False
    return text.startswith((b"#extm3u", b"ffconcat", b"file ", b"file\t", b"#", b"[playlist]", b"<?xml", b"<asx"))


def sniff(path: str | Path) -> str | None:
    """The container of ``path`` (a key of :data:`DEMUXERS`), or None when it is none of them.

    Raises:
        PlaylistError: the file is a playlist or a list of files.
        OSError: it cannot be read.
    """
    with open(path, "rb") as f:
        head = f.read(_HEAD)
        if head[:4] == _EBML:
            return "matroska"
        if len(head) >= 8 and head[4:8] in _ISO_BOXES:
            size = int.from_bytes(head[:4], "big")
            if size in (0, 1) or size >= 8:
                return "mp4"
        if len(head) >= 12 and head[:4] in (b"RIFF", b"RF64", b"BW64") and head[8:12] == b"WAVE":
            return "wav"
        if len(head) >= 12 and head[:4] == b"RIFF" and head[8:12] in (b"AVI ", b"AVIX"):
            return "avi"
        if len(head) >= 12 and head[:4] == b"FORM" and head[8:12] in (b"AIFF", b"AIFC"):
            return "aiff"
        if head[:4] == b"OggS":
            return "ogg"
        if head[:4] == b"fLaC":
            return "flac"
        if head[:3] == b"ID3":
            return _after_id3(f, head)
        frame = _mpeg_audio(head)
        if frame:
            return frame
    if _looks_like_a_list(head):
        raise PlaylistError("a playlist or a list of files")
    return None


def sniff_as(path: Path, allowed, error: type[Exception], *, kind: str, what: str, a_kind: str, help: str) -> str:
    """The container of an untrusted input, one of ``allowed``; ``error`` with a plain message otherwise.

    Messages name the input as ``kind`` ("video": "the video file x"), ``what`` ("a video":
    "not a video") and ``a_kind`` ("a video": "is not a video this tool can read");
    ``help`` says what would be accepted.
    """
    try:
        container = sniff(path)
    except PlaylistError:
        raise error(f"{path.name} is a playlist or a list of files, not {what}. {help}") from None
    except OSError as e:
        raise error(f"The {kind} file {path.name} cannot be read ({e.strerror or e}).") from None
    if container not in allowed:
        raise error(f"{path.name} is not {a_kind} this tool can read. {help}")
    return container


def input_args(path: str | Path, container: str) -> list[str]:
    """ffmpeg/ffprobe input options for a sniffed file: the ``file`` protocol only, the demuxer forced.

    The path is given as an absolute ``file:`` URL, so no part of the name
    (``concat:``, ``subfile:``, ``http:``...) can be read as a protocol.
    """
    demuxer, _ = DEMUXERS[container]
    url = "file:" + str(Path(path).resolve())
    return ["-protocol_whitelist", "file", "-format_whitelist", demuxer, "-f", demuxer, "-i", url]
