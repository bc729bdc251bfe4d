"""A live session driven by a video: the video plays back and forth at the session's pace, at rest
it keeps its own mouth, speaking it gets the mouth in each frame's own face box; spool cleanup; bad input."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from lipsync.errors import InputError, NoFaceError, VideoError
from lipsync.live import session as live
from lipsync.live import speed
from lipsync.live.video import VideoFace
from lipsync.sources import loop_index
from conftest import noise_int16, take
from videos import SIZE, pan_frames, pan_truth, portrait, psnr, write_video

N = 8  #: source frames in the test video (0.32 s at 25 fps)


@pytest.fixture(scope="module")
def pan8(tmp_path_factory):
    """(path, frames as written): the example portrait panned over 8 frames, 256x256."""
    frames = pan_frames(N)
    return write_video(tmp_path_factory.mktemp("live_video") / "pan8.mp4", frames), frames


def nearest(frame, frames):
    """Index of the source frame ``frame`` shows, and how closely (PSNR)."""
    scores = [psnr(frame, f) for f in frames]
    return int(np.argmax(scores)), max(scores)



def speak_and_window(s):
    """Two idle frames, then a second of speech: the 22 frames after the idle ones, and the offline mel
    window of every frame of the 16 kHz timeline they carry (the session opened with ``sample_rate=16000``)."""
    from lipsync import features

    take(s, 2)
    s.push(noise_int16(1.0, seed=4, amp=9000), 16000)
    frames = take(s, 22)
    timeline = np.concatenate([np.zeros(2 * 640, np.int16)] + [f.audio for f in frames]).astype(np.float32) / 32768
    mel = features.melspectrogram(timeline)
    return frames, features.mel_windows(mel, 25, starts=features.window_starts(mel.shape[1], 25, 2 + len(frames)))

def test_at_rest_the_video_plays_back_and_forth_as_it_is(open_live, pan8, every_picture):
    path, written = pan8
    s = open_live(video=path, label=False)
    assert s.mode.source == f"video: {N} frames, back and forth" and "video's own eyes" in s.mode.blink
    frames = take(s, 2 * N + 3)  # past both turns
    assert [f.pts for f in frames] == [pytest.approx(n / 25) for n in range(len(frames))]
    shown = []
    for f in frames:
        assert f.image.shape == (SIZE, SIZE, 3) and not f.speaking
        i, score = nearest(f.image, written)
        assert score > 35, "an idle frame is the video's own picture (its mouth untouched)"
        shown.append(i)
    assert shown == [loop_index(n, N) for n in range(len(frames))]
    assert shown[:N + 2] == [0, 1, 2, 3, 4, 5, 6, 7, 6, 5]  # no repeated frame at the turn


def test_speaking_frames_get_the_mouth_in_their_own_face_box(open_live, pan8, fp32_engine, every_picture):
    """Each speaking frame = that video frame with the network's mouth for its own face and its own
    mel window pasted in its own face box (the offline recipe for a video); nothing else changes."""
    from lipsync.blend import paste_mouth
    from lipsync.face import face_crop

    path, _ = pan8
    s = open_live(video=path, label=False, sample_rate=16000)  # the frames carry the model's own 16 kHz timeline
    frames, mels = speak_and_window(s)
    src, face, gen = s._face.source, s._face, fp32_engine.generator
    talking = [k for k, f in enumerate(frames) if f.speaking]
    full = set(talking[live.EASE_FRAMES : -live.EASE_FRAMES])  # mouth weight 1
    assert len(full) >= 8
    offline = []
    for k, f in enumerate(frames):
        n = 2 + k
        i = loop_index(n, N)
        own = src.spool.read(i)
        box = face.box(i)
        truth = pan_truth(i, N)  # the box the session found is where the face is in that frame
        assert truth[0] < (box.x1 + box.x2) / 2 < truth[2] and truth[1] < (box.y1 + box.y2) / 2 < truth[3]
        outside = np.ones(own.shape[:2], bool)
        outside[box.y1 : box.y2, box.x1 : box.x2] = False
        assert np.array_equal(f.image[outside], own[outside]), f"frame {n}: pixels outside its face box changed"
        if k in full:
            offline.append((n, own, box, f.image))
    s.close()  # the offline recipe's clips need not wait for the session's live frames
    for n, own, box, image in offline:
        mouth = np.concatenate(list(gen.predict(face_crop(own, box), mels[[n]])))[0]
        want = paste_mouth(own.copy(), box, mouth)
        assert np.abs(want.astype(int) - image.astype(int)).max() <= 2, f"frame {n}"
        assert np.abs(want.astype(int) - own.astype(int)).max() > 20, f"frame {n} got no mouth"


def slide_frames(n: int, step: int = 5) -> list[np.ndarray]:
    """The example portrait under a 280 px window sliding ``step`` px right per frame (no zoom): the face box
    keeps its size while what is in it changes, frame by frame."""
    import cv2

    img = portrait()
    k = SIZE / 280
    return [cv2.warpAffine(img, np.array([[k, 0.0, -(60 + step * i) * k], [0.0, k, -30 * k]]), (SIZE, SIZE),
                           flags=cv2.INTER_AREA) for i in range(n)]


def test_the_fast_enhancement_uses_each_frames_own_detail(open_live, tmp_path, fp32_engine, every_picture):
    """enhance="fast" (the default) on a video: every speaking frame gets the detail of its own face region, as the
    offline recipe with DetailTransfer(still=False), not the first speaking frame's detail kept for boxes of its size."""
    from lipsync.blend import paste_mouth
    from lipsync.enhance.detail import DetailTransfer
    from lipsync.face import face_crop

    path = write_video(tmp_path / "slide.mp4", slide_frames(N))
    s = open_live(video=path, label=False, enhance="fast", sample_rate=16000)  # frames carry the 16 kHz timeline
    assert s.mode.enhance.startswith("fast")
    frames, mels = speak_and_window(s)
    face, gen = s._face, fp32_engine.generator
    talking = [k for k, f in enumerate(frames) if f.speaking]
    full = talking[live.EASE_FRAMES : -live.EASE_FRAMES]  # mouth weight 1
    shapes = {face.box(loop_index(2 + k, N)).height for k in full}
    assert len(full) >= 8 and len(shapes) < len(full), "some frames share a box size (where a kept detail would show)"
    offline = [(2 + k, s._face.source.spool.read(loop_index(2 + k, N)), face.box(loop_index(2 + k, N)), frames[k].image)
               for k in full]
    s.close()  # the offline recipe's clips need not wait for the session's live frames
    for n, own, box, image in offline:
        mouth = np.concatenate(list(gen.predict(face_crop(own, box), mels[[n]])))[0]
        want = paste_mouth(own.copy(), box, mouth, 1.0, DetailTransfer(still=False))
        assert np.abs(want.astype(int) - image.astype(int)).max() <= 2, f"frame {n}"


def test_frames_without_a_face_keep_their_own_pixels_while_speaking(open_live, tmp_path, every_picture):
    written = [f if i not in (3, 4) else np.full_like(f, 128) for i, f in enumerate(pan_frames(N))]
    path = write_video(tmp_path / "gap.mp4", written)
    s = open_live(video=path, label=False)
    s.push(noise_int16(1.0, seed=1, amp=9000), 16000)
    frames = take(s, 20)
    assert any(f.speaking for f in frames)
    for n, f in enumerate(frames):
        if loop_index(n, N) in (3, 4):
            assert psnr(f.image, np.full_like(f.image, 128)) > 40, f"frame {n} shows no face and must stay as it is"


def test_the_label_stays_clear_of_every_face_box(open_live, pan8):
    s = open_live(video=pan8[0], label=True)
    frames = take(s, 3)
    avoid = s._face.source.label_avoid()
    plain = [s._face.source.spool.read(loop_index(n, N)) for n in range(3)]
    for f, own in zip(frames, plain):
        changed = np.any(f.image != own, axis=2)
        assert changed.any(), "no label drawn"
        ys, xs = np.nonzero(changed)
        inside = (ys >= avoid.y1) & (ys < avoid.y2) & (xs >= avoid.x1) & (xs < avoid.x2)
        assert not inside.any(), "the label covers a face"


def test_close_removes_the_spool_even_from_another_thread(open_live, pan8):
    s = open_live(video=pan8[0])
    workdir = s._face.source.workdir
    assert workdir.exists()
    take(s, 2)
    closer = threading.Timer(0.2, s.close)
    closer.start()
    n = sum(1 for _ in s)  # ends when closed
    closer.join()  # close() has returned
    assert n < 25 and s.closed
    assert not workdir.exists()


def test_close_returns_at_once_and_the_frame_being_made_lets_go_of_the_spool(open_live, pan8, monkeypatch):
    """close() from an event loop never waits for a frame: the iterating thread removes the spool after it."""
    s = open_live(video=pan8[0])
    workdir = s._face.source.workdir
    take(s, 1)
    render, making = s._face.render, threading.Event()

    def slow(*args, **kw):  # a frame that takes 0.4 s to make
        making.set()
        time.sleep(0.4)
        return render(*args, **kw)

    monkeypatch.setattr(s._face, "render", slow)
    iterating = threading.Thread(target=take, args=(s, 5))
    iterating.start()
    assert making.wait(10)
    t = time.perf_counter()
    s.close()
    took = time.perf_counter() - t
    assert took < 0.005, f"close() waited {1000 * took:.1f} ms for the frame being made"
    assert workdir.exists(), "the frame being made still reads the spool"
    iterating.join(10)
    assert not iterating.is_alive() and not workdir.exists(), "the iterating thread let go of the spool"
    idle = open_live(video=pan8[0])  # no frame being made: the spool goes at once
    spool = idle._face.source.workdir
    idle.close()
    assert not spool.exists()


def test_a_slow_machine_steps_and_encodes_the_next_face_between(open_live, pan8, monkeypatch):
    monkeypatch.setattr(speed, "MEASURE_FRAMES", 3)
    monkeypatch.setattr(speed, "BUDGET_SHARE", 1e-6)
    s = open_live(video=pan8[0], adapt=True)
    calls = []
    prefetch = VideoFace.prefetch  # on the class: a shrunk session draws from a new VideoFace
    monkeypatch.setattr(VideoFace, "prefetch", lambda face, n: (calls.append(n), prefetch(face, n)))
    s.push(noise_int16(3.0, seed=2, amp=9000), 16000)
    first = s.mode
    for f in s:
        # until it has shrunk and, stepping, encoded a next face between (the step can come last)
        if s.mode.width < first.width and f.image.shape[1] == s.mode.width and calls or f.pts > 12:
            break
    assert s.mode.step == 2 and "every second frame" in s.mode.reason and "working at" in s.mode.reason
    assert calls and all(n % 2 == 0 for n in calls), "the next network frame's face is encoded between"


def test_admission_sees_the_face_encoder_that_runs_outside_the_sessions_thread(open_live, pan8, fp32_engine, monkeypatch):
    """On a CPU a driving video's face encoder runs on the network's threads, out of sight of the session thread's
    CPU time (13.7 ms a frame of wall against 3.5 of the thread's, on 2 cores): the session notes its wall time
    apart, for a CPU engine's admission to count as network time. Here the encoder also waits 20 ms."""
    generator = fp32_engine.generator
    prepare = generator.prepare_face

    def elsewhere(*args, **kw):
        time.sleep(0.02)  # computing on other threads: wall time, none of this thread's CPU
        return prepare(*args, **kw)

    monkeypatch.setattr(generator, "prepare_face", elsewhere)
    s = open_live(video=pan8[0])
    s.push(noise_int16(1.0, seed=6, amp=9000), 16000)
    take(s, 8)
    ticket = s._ticket
    assert ticket.encode_s >= 0.02 and ticket.work_s < ticket.encode_s, (ticket.encode_s, ticket.work_s)


def small_face_frames(n: int, side: int = 190, step: int = 3) -> list[np.ndarray]:
    """The example portrait shrunk to ``side`` px (a face about a sixth of the frame's height) on grey, moving right."""
    import cv2

    img = cv2.resize(portrait(), (side, side), interpolation=cv2.INTER_AREA)
    frames = []
    for i in range(n):
        f = np.full((SIZE, SIZE, 3), 90, np.uint8)
        f[40 : 40 + side, 20 + step * i : 20 + step * i + side] = img
        frames.append(f)
    return frames


def test_a_video_is_framed_as_a_call_with_one_crop_for_all_its_frames(open_live, tmp_path, every_picture):
    path = write_video(tmp_path / "small.mp4", small_face_frames(N))
    s = open_live(video=path, label=False)
    top, left, h, w = s._face.crop
    assert (s.mode.height, s.mode.width) == (h, w) < (SIZE, SIZE) and s.mode.framing == "call"
    found = s._face.source.found
    boxes = s._face.boxes[found]
    assert np.median(boxes[:, 1] - boxes[:, 0]) / h == pytest.approx(1 / 3, abs=0.03)
    assert boxes.min() >= 0 and boxes[:, 1].max() <= h and boxes[:, 3].max() <= w, "every face inside the crop"
    for n, f in enumerate(take(s, N + 2)):  # at rest: each frame is its own video frame, cropped
        own = s._face.source.spool.read(loop_index(n, N))
        assert np.array_equal(f.image, own[top : top + h, left : left + w]), f"frame {n}"
    whole = open_live(video=path, label=False, framing="full")
    assert whole._face.crop is None and take(whole, 1)[0].image.shape == (SIZE, SIZE, 3)


def test_bad_video_input_says_what_to_do(fp32_engine, tmp_path, example_image, pan8):
    with pytest.raises(InputError, match="not both"):
        fp32_engine.live(image=example_image, video=pan8[0])
    with pytest.raises(InputError, match="image= .* or video="):
        fp32_engine.live()
    fake = tmp_path / "notes.mp4"
    fake.write_text("this is not a video")
    with pytest.raises(VideoError):
        fp32_engine.live(video=fake)
    grey = write_video(tmp_path / "grey.mp4", [np.full((SIZE, SIZE, 3), 128, np.uint8)] * 6)
    with pytest.raises(NoFaceError, match="No face was found"):
        fp32_engine.live(video=grey)


def test_a_new_sessions_video_is_read_below_the_running_sessions(open_live, pan8, program_priorities):
    # the new session has no frame due yet, the running ones have: its probe and decoder run lower
    from lipsync.proc import BACKGROUND_NICE

    started, lowered = program_priorities
    s = open_live(video=pan8[0])
    assert s.mode.source.startswith("video")
    assert {n for n, _ in started} == {"ffprobe", "ffmpeg"}
    assert [(n, lowered.get(pid)) for n, pid in started] == [(n, BACKGROUND_NICE) for n, _ in started]


def test_a_one_frame_video_is_a_photo(fp32_engine, tmp_path, pan8):
    one = write_video(tmp_path / "one.mp4", pan8[1][:1])
    with fp32_engine.live(video=one, max_side=SIZE, adapt=False, enhance="off", blink=False) as s:
        assert s.mode.source == "photo"
        frames = take(s, 2)
        assert frames[0].image.shape == (SIZE, SIZE, 3)
