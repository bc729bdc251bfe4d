"""Device check: a live session driven by a video on CUDA fp16 (run on the GPU machine from the repo root:
``python3 scripts/device_live_video.py``; carry .whl/ for the few wheels its image lacks).

The device image has no ffmpeg, so the "video" is built straight into a spool (the portrait shifted
a little per frame, the face box known); everything after the scan is the library's own path.
"""

import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from lipsync import LipSync  # noqa: E402
from lipsync.live import session as S  # noqa: E402
from lipsync.models.scratch import write_scratch_checkpoint  # noqa: E402
from lipsync.sources import FrameSpool, VideoSource  # noqa: E402

import cv2  # noqa: E402

tmp = Path(tempfile.mkdtemp())
ck = write_scratch_checkpoint(tmp / "s.pth", 1234)
eng = LipSync(ck, device="cuda", precision="fp16").load()
print("engine:", eng.generator.description, torch.cuda.get_device_name(0))
img = np.ascontiguousarray(cv2.imread(str(Path(__file__).resolve().parents[1] / "assets" / "astronaut.jpg"))[:, :, ::-1])
L = 20
frames = [np.ascontiguousarray(np.roll(img, 2 * k, axis=1)) for k in range(L)]
boxes = np.array([[67, 189, 167 + 2 * k, 280 + 2 * k] for k in range(L)], np.int32)


def fake_scan(engine, video, **kw):
    wd = Path(tempfile.mkdtemp(prefix="lipsync-video-"))
    sp = FrameSpool(wd / "frames.jpgs")
    for f in frames:
        sp.append(f)
    return VideoSource(sp, wd, boxes, np.ones(L, bool), "given", np.arange(L), label=True), None


S._scan_video = fake_scan


def voiced(seconds, rate=16000):
    t = np.arange(int(seconds * rate)) / rate
    buzz = sum(np.sin(2 * np.pi * 170 * k * t) / k for k in range(1, 10))
    env = np.abs(np.sin(2 * np.pi * 2.5 * t)) ** 0.5
    return (0.25 * buzz * env / np.abs(buzz).max()).astype(np.float32)


gen = eng.generator
from lipsync.face import face_crop  # noqa: E402
from lipsync.live.session import _mel_window  # noqa: E402

from lipsync.face import FaceBox  # noqa: E402

crop = face_crop(frames[0], FaceBox(*(int(v) for v in boxes[0])))
mel = _mel_window(voiced(0.25)[:4000])[None]
still = gen.prepare_face(crop)


def med(fn, n=100):
    fn()
    torch.cuda.synchronize()
    ts = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        ts.append(time.perf_counter() - t)
    return 1000 * float(np.median(ts))


photo = med(lambda: gen.forward(still, mel))
video = med(lambda: gen.forward(gen.prepare_face(crop, still=False), mel))
print(f"network per frame on CUDA fp16: photo {photo:.2f} ms, video frame (own face encoded) {video:.2f} ms, ratio {video / photo:.2f}")

with eng.live(video="fake", max_side=512) as s:
    print("mode:", s.mode)
    th = None
    lates, t0, sent, offsets = [], None, 0, []
    for f in s:
        now = time.monotonic()
        t0 = t0 or now
        lates.append(now - (t0 + f.pts))
        offsets.append(sent / 16000 - f.pts)
        sent += len(f.audio)
        assert f.image.shape == (512, 512, 3) and f.image.dtype == np.uint8
        if th is None and f.pts >= 1.2:
            speech = voiced(20)

            def push(speech=speech):
                t1 = time.monotonic()
                for k, i in enumerate(range(0, len(speech), 320)):
                    time.sleep(max(0, t1 + k * 0.02 - time.monotonic()))
                    s.push(speech[i : i + 320], 16000)

            th = threading.Thread(target=push, daemon=True)
            th.start()
        if f.pts >= 22.5:
            break
    st = s.stats
    lates = np.array(lates)
    print(f"sustained 20 s of speech: frames {st.frames}, on time {100 * np.mean(lates <= 0.04):.2f} %, "
          f"latest {lates.max() / 0.04:.2f} slots, repeated {st.repeated_frames}, underruns {st.underruns}, "
          f"frame_ms {st.frame_ms:.1f}, A/V offset max {1000 * np.max(np.abs(offsets)):.2f} ms, "
          f"latency {1000 * (st.first_speech['frame'] - st.first_speech['push']):.0f} ms, mode step {s.mode.step}")
    wd = s._face.source.workdir
print("spool removed:", not wd.exists())
