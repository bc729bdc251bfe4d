"""Checkpoint loading and the download/verification rules."""

from dataclasses import replace
from pathlib import Path

import pytest
import torch

from lipsync.errors import WeightsError
from lipsync.models import load_wav2lip, read_state_dict
from lipsync.weights import S3FD, WAV2LIP_GAN, resolve_weights, sha256_of


def _state(checkpoint):
    return torch.load(checkpoint, weights_only=True)["state_dict"]


def test_published_layout_has_module_prefix_and_loads_strict(checkpoint):
    raw = _state(checkpoint)
    assert all(k.startswith("module.") for k in raw)
    model = load_wav2lip(checkpoint)
    assert set(model.state_dict()) == {k.removeprefix("module.") for k in raw}


def test_state_dict_keys_match_reference_manifest(reference):
    from lipsync.models import Wav2Lip

    rows = [line.split("\t") for line in (reference / "wav2lip_state_dict.tsv").read_text().splitlines()[1:]]
    sd = Wav2Lip().state_dict()
    assert list(sd) == [r[0] for r in rows]
    for key, shape, _ in rows:
        want = () if shape == "scalar" else tuple(int(s) for s in shape.split("x"))
        assert tuple(sd[key].shape) == want, key


def test_bare_state_dict_without_prefix_loads(checkpoint, tmp_path):
    bare = {k.removeprefix("module."): v for k, v in _state(checkpoint).items()}
    p = tmp_path / "bare.pth"
    torch.save(bare, p)
    a, b = load_wav2lip(p), load_wav2lip(checkpoint)
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert ka == kb and torch.equal(va, vb)


def test_wrong_key_is_refused_with_a_clear_message(checkpoint, tmp_path):
    sd = dict(_state(checkpoint))
    sd["module.extra.weight"] = sd.pop("module.output_block.1.bias")
    p = tmp_path / "bad.pth"
    torch.save({"state_dict": sd}, p)
    with pytest.raises(WeightsError, match=r"not a Wav2Lip generator checkpoint.*missing.*output_block\.1\.bias"):
        load_wav2lip(p)


def test_wrong_shape_is_refused(checkpoint, tmp_path):
    sd = dict(_state(checkpoint))
    sd["module.output_block.1.weight"] = torch.zeros(3, 16, 1, 1)
    p = tmp_path / "shape.pth"
    torch.save({"state_dict": sd}, p)
    with pytest.raises(WeightsError, match="wrong shape"):
        load_wav2lip(p)


class Evil:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_arbitrary_pickle_is_refused(tmp_path, capsys):
    p = tmp_path / "evil.pth"
    torch.save({"state_dict": {"x": Evil()}}, p)
    with pytest.raises(WeightsError, match="not a usable Wav2Lip weights file"):
        read_state_dict(p)
    assert "must never run" not in capsys.readouterr().out


def test_text_file_is_refused(tmp_path):
    p = tmp_path / "notes.pth"
    p.write_text("hello")
    with pytest.raises(WeightsError):
        load_wav2lip(p)


def test_override_path_is_used_as_is(tmp_path, monkeypatch):
    f = tmp_path / "mine.pth"
    f.write_bytes(b"x")
    assert resolve_weights(WAV2LIP_GAN, f) == f
    monkeypatch.setenv("LIPSYNC_CHECKPOINT", str(f))
    assert resolve_weights(WAV2LIP_GAN) == f


def test_missing_override_says_how_to_get_the_file(tmp_path):
    with pytest.raises(WeightsError, match=r"does not exist.*--checkpoint PATH.*LIPSYNC_CHECKPOINT"):
        resolve_weights(WAV2LIP_GAN, tmp_path / "nope.pth")


def test_offline_is_a_clear_error_not_a_traceback():
    # conftest sets HF_HUB_OFFLINE=1 and an empty HF_HOME
    with pytest.raises(WeightsError) as e:
        resolve_weights(WAV2LIP_GAN)
    msg = str(e.value)
    assert "huggingface.co/Nekochu/Wav2Lip" in msg and "--checkpoint" in msg and "LIPSYNC_CHECKPOINT" in msg


def _fake_hub(monkeypatch, path: Path):
    import huggingface_hub

    calls = []

    def fake(**kw):
        calls.append(kw)
        return str(path)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake)
    return calls


def test_download_is_verified_by_sha256(tmp_path, monkeypatch):
    blob = tmp_path / "blob.pth"
    blob.write_bytes(b"weights" * 100)
    spec = replace(WAV2LIP_GAN, size=blob.stat().st_size, sha256=sha256_of(blob))
    calls = _fake_hub(monkeypatch, blob)
    assert resolve_weights(spec) == blob
    assert calls[0]["repo_id"] == "Nekochu/Wav2Lip" and calls[0]["filename"] == "wav2lip_gan.pth"


def test_sha256_mismatch_is_refused(tmp_path, monkeypatch):
    blob = tmp_path / "blob.pth"
    blob.write_bytes(b"tampered" * 100)
    spec = replace(WAV2LIP_GAN, size=blob.stat().st_size)
    _fake_hub(monkeypatch, blob)
    with pytest.raises(WeightsError, match="does not match its published checksum"):
        resolve_weights(spec)


def test_size_mismatch_is_refused(tmp_path, monkeypatch):
    blob = tmp_path / "blob.pth"
    blob.write_bytes(b"short")
    _fake_hub(monkeypatch, blob)
    with pytest.raises(WeightsError, match="435,801,865"):
        resolve_weights(WAV2LIP_GAN)


def test_verification_is_remembered(tmp_path, monkeypatch):
    import lipsync.weights as w

    blob = tmp_path / "blob.pth"
    blob.write_bytes(b"ok" * 50)
    spec = replace(S3FD, size=blob.stat().st_size, sha256=sha256_of(blob))
    _fake_hub(monkeypatch, blob)
    resolve_weights(spec)
    monkeypatch.setattr(w, "sha256_of", lambda p: pytest.fail("hashed twice"))
    assert resolve_weights(spec) == blob


def test_s3fd_needs_its_full_checksum_and_size(tmp_path, monkeypatch):
    """A file whose digest only shares the 10-digit name prefix, or of another size, is refused."""
    import lipsync.weights as w

    blob = tmp_path / "s3fd-619a316812.pth"
    blob.write_bytes(b"x" * S3FD.size)
    _fake_hub(monkeypatch, blob)
    monkeypatch.setattr(w, "sha256_of", lambda p: S3FD.sha256[:10] + "0" * 54)
    with pytest.raises(WeightsError, match="does not match its published checksum"):
        resolve_weights(S3FD)
    blob.write_bytes(b"x" * (S3FD.size - 1))
    with pytest.raises(WeightsError, match="89,843,225"):
        resolve_weights(S3FD)
    monkeypatch.setattr(w, "sha256_of", lambda p: S3FD.sha256)
    blob.write_bytes(b"x" * S3FD.size)
    assert resolve_weights(S3FD) == blob


# ----------------------------------------------------------------------------- a file inside a pinned wheel


def test_face_landmark_pin_is_the_file_in_the_mediapipe_wheel():
    """The pinned face-mesh model is byte for byte the installed mediapipe 0.10.14 package's file."""
    import importlib.util
    from importlib.metadata import version

    from lipsync.weights import FACE_LANDMARK

    assert FACE_LANDMARK.size == 1_242_398 and FACE_LANDMARK.archive_size == 35_664_771
    assert len(FACE_LANDMARK.sha256) == 64 and len(FACE_LANDMARK.archive_sha256) == 64
    assert FACE_LANDMARK.url.startswith("https://files.pythonhosted.org/") and "mediapipe-0.10.14-" in FACE_LANDMARK.url
    assert FACE_LANDMARK.env_var == "LIPSYNC_FACE_LANDMARKS"
    spec = importlib.util.find_spec("mediapipe")
    if spec is None or version("mediapipe") != "0.10.14":
        pytest.skip("mediapipe 0.10.14 is not installed (requirements-landmarks.txt)")
    installed = Path(list(spec.submodule_search_locations)[0], "modules", "face_landmark", "face_landmark.tflite")
    assert installed.stat().st_size == FACE_LANDMARK.size
    assert sha256_of(installed) == FACE_LANDMARK.sha256


@pytest.fixture
def wheel_server(tmp_path, monkeypatch):
    """A local web server with a small wheel-like zip; yields (spec pinned to it, folder served, payload)."""
    import hashlib
    import threading
    import zipfile
    from functools import partial
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    from lipsync.weights import FACE_LANDMARK

    monkeypatch.setenv("LIPSYNC_CACHE", str(tmp_path / "cache"))
    for var in ("LIPSYNC_OFFLINE", "HF_HUB_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    served = tmp_path / "served"
    served.mkdir()
    payload = bytes(range(256)) * 40
    with zipfile.ZipFile(served / "mp.whl", "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("mediapipe/__init__.py", "")
        z.writestr(FACE_LANDMARK.member, payload)
    archive = (served / "mp.whl").read_bytes()

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, *a):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(Quiet, directory=str(served)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    spec = replace(
        FACE_LANDMARK, url=f"http://127.0.0.1:{server.server_address[1]}/mp.whl",
        archive_sha256=hashlib.sha256(archive).hexdigest(), archive_size=len(archive),
        sha256=hashlib.sha256(payload).hexdigest(), size=len(payload),
    )
    try:
        yield spec, served, payload
    finally:
        server.shutdown()
        server.server_close()


def _cache_files(tmp_path):
    root = tmp_path / "cache"
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*")) if root.exists() else []


def test_member_is_fetched_checked_and_cached(wheel_server, tmp_path):
    from lipsync.weights import fetch_member

    spec, served, payload = wheel_server
    path = fetch_member(spec)
    assert path.read_bytes() == payload and path.name.endswith("face_landmark.tflite")
    assert _cache_files(tmp_path) == ["models", f"models/{path.name}"]  # the wheel itself is not kept
    (served / "mp.whl").unlink()  # the server no longer has it: the cached copy is used
    assert fetch_member(spec) == path
    path.write_bytes(b"damaged")  # a damaged copy is not used (and cannot be fetched again now)
    with pytest.raises(WeightsError, match="Could not download"):
        fetch_member(spec)
    assert _cache_files(tmp_path) == ["models"]


def test_a_wrong_archive_or_member_is_refused_and_nothing_is_kept(wheel_server, tmp_path):
    from lipsync.weights import fetch_member

    spec, _served, _payload = wheel_server
    with pytest.raises(WeightsError, match="does not match its published size and checksum"):
        fetch_member(replace(spec, archive_sha256="0" * 64))
    with pytest.raises(WeightsError, match="does not match its published size"):
        fetch_member(replace(spec, archive_size=spec.archive_size - 1))
    with pytest.raises(WeightsError, match="does not match its pinned size and checksum"):
        fetch_member(replace(spec, sha256="0" * 64))
    with pytest.raises(WeightsError, match="does not match its pinned size"):
        fetch_member(replace(spec, size=spec.size + 1))
    with pytest.raises(WeightsError, match="has no usable"):
        fetch_member(replace(spec, member="mediapipe/other.tflite"))
    assert _cache_files(tmp_path) == ["models"]  # no part file, no unchecked copy
    with pytest.raises(WeightsError, match="Could not download"):
        fetch_member(replace(spec, url=spec.url.replace("mp.whl", "gone.whl")))


def test_member_offline_is_a_clear_error(tmp_path, monkeypatch):
    from lipsync.weights import FACE_LANDMARK, fetch_member

    monkeypatch.setenv("LIPSYNC_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("LIPSYNC_OFFLINE", "1")
    with pytest.raises(WeightsError) as e:
        fetch_member(FACE_LANDMARK)
    msg = str(e.value)
    assert "cannot be downloaded: downloads are turned off (LIPSYNC_OFFLINE is set)" in msg
    assert "Set LIPSYNC_FACE_LANDMARKS=PATH" in msg and "Traceback" not in msg
    assert _cache_files(tmp_path) == []
