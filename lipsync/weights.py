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

__all__ = ["WeightsSpec", "WAV2LIP_GAN", "S3FD", "GFPGAN_V14", "resolve_weights", "sha256_of", "offline_reason", "hub_url"]

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
