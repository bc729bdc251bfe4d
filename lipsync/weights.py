"""Every model download in one place: Hub repo, file, size and sha256; local overrides.

Files are fetched with :func:`huggingface_hub.hf_hub_download` into the Hub
cache (``HF_HOME``), checked against their sha256 once (a marker remembers the
check), and refused when they do not match. A local file given by argument or
environment variable is used as is.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from .errors import WeightsError

__all__ = [
    "WeightsSpec", "WAV2LIP_GAN", "S3FD", "GFPGAN_V14", "resolve_weights", "sha256_of", "offline_reason", "hub_url",
    "unavailable_reason", "ArchiveMember", "FACE_LANDMARK", "fetch_member",
]

log = logging.getLogger("lipsync")


@dataclass(frozen=True)
class WeightsSpec:
    """Where a weights file lives and how to recognise it.

    ``sha256`` is the full hex digest and ``size`` the exact length in bytes
    (both as published: a Hub LFS pointer lists them).
    """

    label: str
    repo_id: str
    filename: str
    sha256: str
    env_var: str
    flag: str
    size: int | None = None
    revision: str | None = None
    page: str = ""


WAV2LIP_GAN = WeightsSpec(
    label="Wav2Lip GAN checkpoint (wav2lip_gan.pth)",
    repo_id="Nekochu/Wav2Lip",
    filename="wav2lip_gan.pth",
    size=435_801_865,
    sha256="ca9ab7b7b812c0e80a6e70a5977c545a1e8a365a6c49d5e533023c034d7ac3d8",
    env_var="LIPSYNC_CHECKPOINT",
    flag="--checkpoint",
    page="https://huggingface.co/Nekochu/Wav2Lip",
)

S3FD = WeightsSpec(
    label="S3FD face detector (s3fd-619a316812.pth)",
    repo_id="vinthony/SadTalker",
    filename="hub/checkpoints/s3fd-619a316812.pth",
    size=89_843_225,
    sha256="619a31681264d3f7f7fc7a16a42cbbe8b23f31a256f75a366e5a1bcd59b33543",
    env_var="LIPSYNC_S3FD",
    flag="--s3fd",
    page="https://huggingface.co/vinthony/SadTalker",
)

#: GFPGAN v1.4 face restorer (TencentARC, Apache-2.0), for ``enhance="face"``. The file
#: is TencentARC's release asset; sha256 and size as listed by two independent Hub
#: copies' LFS pointers (hacksider/deep-live-cam commit 880944c, power2/TestModal
#: commit fd3bdb0), equal to what third-party manifests record for the GitHub release.
GFPGAN_V14 = WeightsSpec(
    label="GFPGAN v1.4 face restorer (GFPGANv1.4.pth)",
    repo_id="hacksider/deep-live-cam",
    filename="GFPGANv1.4.pth",
    size=348_632_874,
    sha256="e2cd4703ab14f4d01fd1383a8a8b266f9a5833dacee8e6a79d3bf21a1b6be5ad",
    env_var="LIPSYNC_GFPGAN",
    flag="",
    revision="880944c0aedaca509b1a36596c1902f6619ebf0b",
    page="https://github.com/TencentARC/GFPGAN/releases/tag/v1.3.4",
)


def sha256_of(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _local(spec: WeightsSpec) -> str:
    return f"{spec.flag} / {spec.env_var}" if spec.flag else spec.env_var


def _marker(path: Path) -> Path:
    st = path.stat()
    key = hashlib.sha1(f"{path.resolve()}:{st.st_size}:{st.st_mtime_ns}".encode()).hexdigest()
    root = Path(os.environ.get("LIPSYNC_CACHE", Path.home() / ".cache" / "lipsync")) / "verified"
    return root / key


def verify(path: str | Path, spec: WeightsSpec) -> Path:
    """Check size and sha256 of a downloaded file (once; a marker remembers it).

    Raises:
        WeightsError: the file does not match; it is not used.
    """
    path = Path(path)
    if spec.size is not None and path.stat().st_size != spec.size:
        raise WeightsError(
            f"The downloaded {spec.label} at {path} has {path.stat().st_size:,} bytes, "
            f"expected {spec.size:,}. It was not used: delete it and try again, or pass a "
            f"local copy with {_local(spec)}."
        )
    marker = _marker(path)
    if marker.exists():
        return path
    digest = sha256_of(path)
    if digest != spec.sha256:
        raise WeightsError(
            f"The downloaded {spec.label} at {path} does not match its published checksum "
            f"(sha256 {digest[:16]}..., expected {spec.sha256[:16]}...). It was not used: "
            f"delete it and try again, or pass a local copy with {_local(spec)}."
        )
    try:
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text(digest)
    except OSError:  # a read-only cache only costs a re-check next time
        pass
    return path


def _how_to(spec: WeightsSpec) -> str:
    if not spec.flag:  # no command-line flag: the environment variable only
        return f"Download {Path(spec.filename).name} from {spec.page} yourself and set {spec.env_var}=PATH."
    return (
        f"Download {Path(spec.filename).name} from {spec.page} yourself and pass it with "
        f"{spec.flag} PATH or set {spec.env_var}=PATH."
    )


NETWORK_PROBE_TIMEOUT_S = 3.0
NETWORK_PROBE_TTL_S = 300.0  #: a probe's answer is reused for this long
_OFFLINE_VARS = ("LIPSYNC_OFFLINE", "HF_HUB_OFFLINE")
_probe_lock = threading.Lock()
_probe_cache: dict[tuple[str, int], tuple[float, str | None]] = {}


def offline_reason(url: str) -> str | None:
    """None when a download from ``url`` could start now, else why not.

    Downloads are off when ``LIPSYNC_OFFLINE`` or ``HF_HUB_OFFLINE`` is set;
    otherwise the host must answer a TCP connect within a few seconds. A quick
    check first saves a download client's retries with back-off (half a
    minute) on a machine without network. Answers are remembered for a while.
    """
    import socket
    from urllib.parse import urlparse

    for var in _OFFLINE_VARS:
        if os.environ.get(var, "").strip().lower() in ("1", "true", "yes", "on"):
            return f"downloads are turned off ({var} is set)"
    u = urlparse(url)
    host, port = u.hostname or "huggingface.co", u.port or (443 if u.scheme == "https" else 80)
    with _probe_lock:
        hit = _probe_cache.get((host, port))
        if hit and time.monotonic() - hit[0] < NETWORK_PROBE_TTL_S:
            return hit[1]
        try:
            with socket.create_connection((host, port), timeout=NETWORK_PROBE_TIMEOUT_S):
                reason = None
        except OSError as e:
            reason = f"{host} cannot be reached ({e.strerror or e})"
        _probe_cache[(host, port)] = (time.monotonic(), reason)
        return reason


def hub_url() -> str:
    return os.environ.get("HF_ENDPOINT") or "https://huggingface.co"


def resolve_weights(spec: WeightsSpec, override: str | Path | None = None) -> Path:
    """Return a local path to the weights described by ``spec``.

    Order: ``override``, then ``$<spec.env_var>``, then the Hub cache, then a
    download. Never returns a file that failed verification.

    Raises:
        WeightsError: not found locally and the Hub cannot be reached, the
            download failed, or the file does not verify. The message says how
            to provide the file by hand.
    """
    local = override or os.environ.get(spec.env_var)
    if local:
        p = Path(local).expanduser()
        if not p.is_file():
            raise WeightsError(f"The {spec.label} file {p} does not exist. {_how_to(spec)}")
        return p
    try:
        from huggingface_hub import hf_hub_download
    except ImportError:  # pragma: no cover - a hard dependency
        raise WeightsError(f"huggingface_hub is not installed. {_how_to(spec)}") from None
    kwargs = dict(repo_id=spec.repo_id, filename=spec.filename, revision=spec.revision)
    try:
        path = hf_hub_download(**kwargs, local_files_only=True)
    except Exception:  # noqa: BLE001 - not cached yet
        offline = offline_reason(hub_url())
        if offline:
            raise WeightsError(
                f"The {spec.label} is not on this machine and cannot be downloaded: {offline}. {_how_to(spec)}"
            ) from None
        log.info("downloading %s from %s", spec.filename, spec.repo_id)
        try:
            path = hf_hub_download(**kwargs)
        except Exception as e:  # noqa: BLE001 - offline, 404, auth, disk full...
            reason = str(e).strip().splitlines()[0][:160] if str(e).strip() else type(e).__name__
            raise WeightsError(
                f"Could not download the {spec.label} from the Hugging Face Hub "
                f"({spec.repo_id}): {reason}. {_how_to(spec)}"
            ) from None
    return verify(path, spec)


def unavailable_reason(spec: WeightsSpec) -> str | None:
    """None when :func:`resolve_weights` could have ``spec``'s file now (a local file, the Hub
    cache, or a download that could start), else why not. Downloads and checks nothing."""
    local = os.environ.get(spec.env_var)
    if local:
        p = Path(local).expanduser()
        return None if p.is_file() else f"{spec.env_var}={local} is not a file"
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover - a hard dependency
        return "huggingface_hub is not installed"
    hit = try_to_load_from_cache(spec.repo_id, spec.filename, revision=spec.revision)
    if isinstance(hit, str) and Path(hit).is_file():
        return None
    return offline_reason(hub_url())


@dataclass(frozen=True)
class ArchiveMember:
    """One file inside a pinned zip archive (a wheel) on a web server: both the archive and the
    file are recognised by sha256 and size, and only the file is kept."""

    label: str
    url: str
    archive_sha256: str
    archive_size: int
    member: str
    sha256: str
    size: int
    env_var: str


#: MediaPipe's face-mesh model (468 points, Apache-2.0) as it ships in the mediapipe 0.10.14
#: wheel, for the eyelid landmarks of :mod:`lipsync.face.landmarks`. No Hugging Face Hub copy
#: with this exact file was found, so the wheel itself comes from PyPI's file host; the wheel's
#: sha256 and size are PyPI's (the JSON simple index), the member's were measured on the
#: installed 0.10.14 package and on the downloaded wheel (equal to the checksum MediaPipe's own
#: build pins for storage.googleapis.com/mediapipe-assets/face_landmark.tflite). The wheel's
#: platform tag does not matter: it is only unzipped, never installed.
FACE_LANDMARK = ArchiveMember(
    label="MediaPipe face-mesh model (face_landmark.tflite, from the mediapipe 0.10.14 wheel)",
    url="https://files.pythonhosted.org/packages/2f/ee/2e9e730dc4d98c8a9541b57bad173bebddf0e4c78f179acc100248c58066/"
        "mediapipe-0.10.14-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl",
    archive_sha256="a807328339e7356fda0bb14df12fedbf1d33bdf81649c5f8666b0026b1cc30b4",
    archive_size=35_664_771,
    member="mediapipe/modules/face_landmark/face_landmark.tflite",
    sha256="1055cb9d4a9ca8b8c688902a3a5194311138ba256bcc94e336d8373a5f30c814",
    size=1_242_398,
    env_var="LIPSYNC_FACE_LANDMARKS",
)

DOWNLOAD_TIMEOUT_S = 60.0  #: per network read while fetching an archive
_fetch_lock = threading.Lock()


def _cache_root() -> Path:
    return Path(os.environ.get("LIPSYNC_CACHE", Path.home() / ".cache" / "lipsync"))


def _matches(path: Path, size: int, sha256: str) -> bool:
    return path.is_file() and path.stat().st_size == size and sha256_of(path) == sha256


def fetch_member(spec: ArchiveMember) -> Path:
    """A local copy of ``spec``'s file: from the cache (``$LIPSYNC_CACHE/models``), else
    downloaded (the archive, checked, then the one file taken out of it, checked, and
    cached). Nothing unchecked is ever kept or returned; the archive is not kept.

    Raises:
        WeightsError: offline, the download failed, or the archive or file does not match.
    """
    import tempfile
    import urllib.request
    import zipfile

    name = Path(spec.member).name
    out = _cache_root() / "models" / f"{spec.sha256[:16]}-{name}"
    how = f"Set {spec.env_var}=PATH to a copy of {name} (sha256 {spec.sha256[:16]}...)."
    with _fetch_lock:
        if out.is_file():
            if _matches(out, spec.size, spec.sha256):
                return out
            out.unlink(missing_ok=True)  # a damaged copy: fetch it again
        offline = offline_reason(spec.url)
        if offline:
            raise WeightsError(f"The {spec.label} is not on this machine and cannot be downloaded: {offline}. {how}")
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise WeightsError(f"Cannot write the {spec.label} to {out.parent} ({e.strerror or e}). {how}") from None
        work = Path(tempfile.mkdtemp(prefix=".fetch-", dir=out.parent))
        try:
            archive = work / "archive.zip"
            log.info("downloading %s from %s", name, spec.url)
            digest = hashlib.sha256()
            got = 0
            try:
                with urllib.request.urlopen(spec.url, timeout=DOWNLOAD_TIMEOUT_S) as r, open(archive, "wb") as f:
                    while block := r.read(1 << 20):
                        got += len(block)
                        if got > spec.archive_size:
                            break
                        digest.update(block)
                        f.write(block)
            except OSError as e:  # URLError, timeouts, disk full
                reason = str(getattr(e, "reason", None) or e).strip()[:160] or type(e).__name__
                raise WeightsError(f"Could not download the {spec.label} ({reason}). {how}") from None
            if got != spec.archive_size or digest.hexdigest() != spec.archive_sha256:
                raise WeightsError(
                    f"The downloaded archive for the {spec.label} does not match its published size and "
                    f"checksum ({got:,} bytes, sha256 {digest.hexdigest()[:16]}...; expected "
                    f"{spec.archive_size:,} bytes, {spec.archive_sha256[:16]}...). It was not used. {how}"
                )
            part = work / name
            try:
                with zipfile.ZipFile(archive) as z, z.open(spec.member) as src, open(part, "wb") as dst:
                    while block := src.read(1 << 20):
                        dst.write(block)
            except (KeyError, zipfile.BadZipFile) as e:
                raise WeightsError(f"The archive for the {spec.label} has no usable {spec.member} ({e}). {how}") \
                    from None
            if not _matches(part, spec.size, spec.sha256):
                raise WeightsError(
                    f"The {name} inside the downloaded archive does not match its pinned size and checksum "
                    f"({spec.size:,} bytes, sha256 {spec.sha256[:16]}...). It was not used. {how}"
                )
            os.replace(part, out)
        finally:
            import shutil

            shutil.rmtree(work, ignore_errors=True)
    return out
