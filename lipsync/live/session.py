"""A live session: speech pushed in chunks in, frames paced in real time out.

**Timeline.** The session runs one audio timeline at the model's 16 kHz. Frame
``n`` owns the samples ``[round(n * 16000 / fps), round((n + 1) * 16000 / fps))``
(640 at 25 fps) and is shown at ``pts = n / fps``. Its audio is exactly those
samples: pushed speech (resampled once, by one streaming libsoxr resampler per
input rate) or silence. The iterator hands frame ``n`` out no earlier than the
moment iteration began plus ``n / fps``; the picture is made as late as the
measured cost allows, so it uses the newest speech.

**Look-ahead.** Frame ``n``'s mouth is predicted from the mel window that starts at
its own time and spans 16 mel columns (0.2 s), as in the offline pipeline; the
last column's STFT frame reaches 25 ms further. A frame can only follow speech
once :data:`LOOKAHEAD_S` (212.5 ms) of it beyond the frame's start has arrived:
that is the floor under the latency. An utterance therefore starts once that much
is queued, or once the pusher has paused for :data:`START_WAIT_S` (a short phrase).

**Rest and easing.** Without speech the face is at rest: the mouth the network
predicts for silence, pasted once per frame, with an idle head sway. Talking and
rest blend over :data:`EASE_FRAMES` frames (mouth weight ramps 0 -> 1 -> 0), and
the sound fades in and out over :data:`FADE_SAMPLES` samples at each utterance's
edges (an interrupt keeps the next 5 ms and fades them out), so neither the picture
nor the sound pops.

**Speed.** During the first second every frame runs the network (on silence when
idle) and the cost is measured. If it does not fit the frame budget the session
runs the network on every second frame; if that still does not fit, it works at a
smaller picture size (once). :attr:`LiveSession.mode` says what runs. A frame more
than :data:`CATCH_UP_SLOTS` slots late (a stall: a loaded machine, a slow consumer)
repeats the last picture, with its own slot's sound, until the session is back on
time, so a stream stays live instead of drifting behind.

**The face** comes from a photo (encoded once) or a driving video
(:mod:`lipsync.live.video`: played back and forth, each speaking frame's own
face encoded; no added head motion or blinks).

The session owns no thread: the frames are made on the iterating thread, and
``push``, ``interrupt`` and ``close`` may come from any other.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import math
import threading
import time
from dataclasses import dataclass, field

import numpy as np

from .. import features
from ..errors import AudioError, InputError, LipSyncError

__all__ = [
    "EASE_FRAMES",
    "FADE_SAMPLES",
    "LOOKAHEAD_S",
    "MAX_CHUNK_S",
    "LiveFrame",
    "LiveMode",
    "LiveSession",
    "LiveStats",
    "open_session",
]

log = logging.getLogger("lipsync")

RATE = features.SAMPLE_RATE  #: the timeline's rate and the frames' audio rate (16 kHz)
LOOKAHEAD_SAMPLES = (features.MEL_STEP - 1) * features.HOP + features.N_FFT // 2  #: 3400 samples
LOOKAHEAD_S = LOOKAHEAD_SAMPLES / RATE  #: 0.2125 s of speech beyond a frame's start decide its mouth
START_WAIT_S = 0.08  #: a shorter utterance starts once the pusher has paused this long
EASE_FRAMES = 3  #: frames over which the mouth blends between talking and rest
FADE_SAMPLES = 80  #: 5 ms fades at the edges of each utterance
MAX_CHUNK_S = 60.0  #: the longest chunk one push() takes
MAX_QUEUE_S = 120.0  #: the most speech queued at once
MIN_RATE, MAX_RATE = 8_000, 192_000
CATCH_UP_SLOTS = 2  #: further behind than this, frames repeat the last picture until caught up
MEASURE_FRAMES = 25  #: frames per speed measurement (one second at 25 fps)
BUDGET_SHARE = 0.75  #: a frame must cost at most this share of its slot
SMALLER = 0.6  #: the working size's scale when frame step 2 is not enough
IDLE_SWAY = 0.3  #: head sway at rest, relative to speaking (more than a clip's pause: an idle avatar waits)
_SILENT = -4.0  # the normalised mel floor


@dataclass(frozen=True)
class LiveFrame:
    """One frame of a live session."""

    pts: float  #: presentation time in seconds (frame index / fps)
    image: np.ndarray  #: (H, W, 3) uint8 RGB
    audio: np.ndarray  #: (samples,) int16 mono: exactly this frame's slot
    sample_rate: int
    speaking: bool  #: the slot carries pushed speech


@dataclass(frozen=True)
class LiveMode:
    """What runs (the page and the API report it)."""

    device: str  #: the engine's network: device and precision
    step: int  #: the network runs on every ``step``-th frame (1 or 2)
    width: int
    height: int
    reason: str = ""  #: why the step or the size was changed ("" when not)
    enhance: str = ""  #: the mouth's enhancement that runs (on speaking frames), or why none
    blink: str = ""  #: the blinks, or why there are none
    source: str = "photo"  #: what the face comes from: ``photo``, or ``video: N frames, ...``

    def summary(self) -> str:
        """What runs in plain words: "fast CPU mode, 512×512, sharp mouth, blinks"."""
        d = self.device.lower()
        kind = "GPU mode" if ("cuda" in d or "gpu" in d) else "fast CPU mode" if "int8" in d else "CPU mode"
        parts = [kind, f"{self.width}×{self.height}"]
        if self.enhance and not self.enhance.startswith("off"):
            parts.append("sharp mouth")
        if self.blink.startswith("on"):
            parts.append("blinks")
        if self.source.startswith("video"):
            parts.append("face from a video")
        if self.step > 1:
            parts.append("every second frame")
        return ", ".join(parts)


@dataclass
class LiveStats:
    """Counters since the session started iterating."""

    frames: int = 0
    late_frames: int = 0  #: handed out more than one slot after their time
    max_late_s: float = 0.0
    utterances: int = 0
    underruns: int = 0  #: speech ran dry while the pusher was still sending
    frame_ms: float = 0.0  #: mean cost of making a frame (network, paste, head motion)
    repeated_frames: int = 0  #: frames that repeated the last picture to catch up after a stall
    first_speech: dict = field(default_factory=dict)  #: {"push": t, "frame": t, "pts": s} of the first utterance
    blinks: int = 0  #: blinks started
    enhanced_frames: int = 0  #: frames the mouth's enhancer ran on


class _Fifo:
    """Float32 samples in, taken from the front in any amounts."""

    def __init__(self) -> None:
        self._parts: collections.deque[np.ndarray] = collections.deque()
        self.size = 0

    def put(self, x: np.ndarray) -> None:
        if x.size:
            self._parts.append(x)
            self.size += x.size

    def take(self, n: int) -> np.ndarray:
        out = self.peek(n)
        left = len(out)
        while left:
            head = self._parts[0]
            if head.size <= left:
                self._parts.popleft()
                left -= head.size
            else:
                self._parts[0] = head[left:]
                left = 0
        self.size -= len(out)
        return out

    def peek(self, n: int) -> np.ndarray:
        n = min(n, self.size)
        out = np.empty(n, np.float32)
        i = 0
        for part in self._parts:
            if i >= n:
                break
            k = min(n - i, part.size)
            out[i : i + k] = part[:k]
            i += k
        return out

    def clear(self) -> None:
        self._parts.clear()
        self.size = 0


def _as_float(samples, sample_rate) -> tuple[np.ndarray, int]:
    """The chunk as float32 mono in [-1, 1], checked; raises AudioError with what to do."""
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, (int, np.integer, float)):
        raise AudioError(f"The sample rate must be a number of samples per second, not {sample_rate!r}.")
    if float(sample_rate) != int(sample_rate) or not MIN_RATE <= int(sample_rate) <= MAX_RATE:
        raise AudioError(
            f"A sample rate of {sample_rate} Hz is not supported: send audio at {MIN_RATE:,} to "
            f"{MAX_RATE:,} Hz (16,000 or 48,000 are usual)."
        )
    rate = int(sample_rate)
    x = np.asarray(samples)
    if x.ndim == 2 and 1 in x.shape:
        x = x.reshape(-1)
    if x.ndim != 1:
        raise AudioError(f"The audio must be mono: one channel of samples, got an array of shape {x.shape}.")
    if x.size == 0:
        raise AudioError("The audio chunk is empty; push at least one sample.")
    if x.size > MAX_CHUNK_S * rate:
        raise AudioError(
            f"The chunk lasts {x.size / rate:.0f} seconds; one push takes at most {MAX_CHUNK_S:.0f} s. "
            "Push long speech in chunks of a few seconds."
        )
    if x.dtype == np.int16:
        return x.astype(np.float32) / 32768.0, rate
    if x.dtype.kind != "f":
        raise AudioError(f"Audio samples must be int16 or float32, not {x.dtype}.")
    x = x.astype(np.float32, copy=False)
    if not np.isfinite(x).all():
        raise AudioError("The audio chunk contains invalid samples (NaN or infinity); nothing of it was queued.")
    return np.clip(x, -1.0, 1.0), rate


def _to_int16(x: np.ndarray) -> np.ndarray:
    return np.clip(np.round(x * 32768.0), -32768, 32767).astype(np.int16)


def _mel_window(segment: np.ndarray) -> np.ndarray:
    """(80, 16) mel window of a 4000-sample segment that starts 600 samples before the window.

    The 200 samples ahead of the first STFT frame give pre-emphasis its history, so
    the window equals the offline spectrogram's columns for the same timeline.
    Only the 16 columns used are computed: column ``3 + k`` of the segment's
    spectrogram is centred on sample ``600 + 200 k`` and reaches 400 either side, so
    none needs the edge padding, and the result is bit for bit
    ``features.melspectrogram(segment)[:, 3:19]`` (tested) at a small share of its cost.
    """
    f = features
    wav = np.asarray(segment, np.float64)
    first = 3 * f.HOP - f.N_FFT // 2  # the first used STFT frame's first sample (200)
    x = wav[first - 1 :]
    emphasised = x[1:] - f.PREEMPHASIS * x[:-1]
    frames = np.lib.stride_tricks.sliding_window_view(emphasised, f.N_FFT)[:: f.HOP][: f.MEL_STEP]
    spec = np.abs(np.fft.rfft(frames * f._window(), n=f.N_FFT, axis=1)).T.astype(np.float32)
    db = 20.0 * np.log10(np.maximum(1e-5, f._mel_basis() @ spec)) - f.REF_LEVEL_DB
    norm = 2 * f.MAX_ABS * (db - f.MIN_LEVEL_DB) / (-f.MIN_LEVEL_DB) - f.MAX_ABS
    return np.clip(norm, -f.MAX_ABS, f.MAX_ABS).astype(np.float32)


_SEGMENT = 600 + LOOKAHEAD_SAMPLES  # 4000 samples


def _forward(generator, face, mels: np.ndarray) -> np.ndarray:
    """The one call into the generator: (B, 80, 16) mel windows -> (B, 96, 96, 3) float32 BGR in [0, 1].

    ``face`` is from ``generator.prepare_face(crop)``: the still face encoded once per
    session (the photo fast path; int8 where the engine's checkpoint passed its check).
    """
    return generator.forward(face, mels)


class _Pose:
    """Causal head sway for a live stream: slow sinusoids scaled by a loudness follower."""

    _FREQS = ((0.13, 0.29, 0.47), (0.11, 0.23, 0.41), (0.17, 0.31, 0.53))

    def __init__(self, fps: float, face_height: float, amount: float, seed: int):
        from ..motion import ATTACK_S, MAX_ANGLE_DEG, MAX_SHIFT, RELEASE_S

        rng = np.random.default_rng(seed)
        self.phases = [rng.uniform(0.0, 2 * np.pi, 3) for _ in range(3)]
        self.weights = []
        for _ in range(3):
            w = rng.uniform(0.6, 1.0, 3)
            self.weights.append(w / w.sum())
        amount = min(max(float(amount), 0.0), 1.0)
        self.scale = (MAX_ANGLE_DEG * amount, MAX_SHIFT * face_height * amount, MAX_SHIFT * face_height * amount)
        self.up = 1.0 - math.exp(-1.0 / (ATTACK_S * fps))
        self.down = 1.0 - math.exp(-1.0 / (RELEASE_S * fps))
        self.energy = IDLE_SWAY
        self.fps = fps

    def __call__(self, n: int, loudness: float) -> tuple[float, float, float]:
        target = IDLE_SWAY + (1.0 - IDLE_SWAY) * min(1.0, loudness)
        self.energy += (self.up if target > self.energy else self.down) * (target - self.energy)
        t = n / self.fps
        out = []
        for k in range(3):
            s = float(np.sum(self.weights[k] * np.sin(2 * np.pi * np.array(self._FREQS[k]) * t + self.phases[k])))
            out.append(self.scale[k] * self.energy * s)
        return out[0], out[1], out[2]


class _Face:
    """The picture side at one working size: the face encoded once, the rest mouth, paste, eyelids, head motion.

    ``enhance``: a :class:`~lipsync.live.look.MouthEnhance` (or None); ``eyes``: the photo's
    eyelids (:class:`~lipsync.face.landmarks.EyeLandmarks`, or None: no blinks).
    """

    def __init__(self, generator, rgb: np.ndarray, plain: np.ndarray, box, motion: float, enhance=None, eyes=None):
        from ..blend import Blender
        from ..blink import Blinks
        from ..face import face_crop
        from ..motion import HeadWarp

        self.generator = generator
        self.face = generator.prepare_face(face_crop(plain, box))
        self.rest = _forward(generator, self.face, np.full((1, 80, features.MEL_STEP), _SILENT, np.float32))[0]
        self.enhance = enhance
        self.blender = Blender(rgb, box, enhance=enhance)
        self.rest_image = Blender(rgb, box).paste(self.rest)  # the rest picture, pasted once
        self.blinks = None
        if eyes is not None:
            blinks = Blinks(eyes.right, eyes.left, np.zeros(0, np.float32), rgb.shape)
            self.blinks = blinks if blinks.eyes else None
        self.warp = None
        if motion > 0:
            keep = np.any(rgb != plain, axis=2)
            self.warp = HeadWarp(rgb.shape, box, keep=keep if keep.any() else None)
        self.height, self.width = rgb.shape[:2]

    def face_for(self, n: int):
        """The face the network draws frame ``n``'s mouth on: the photo's, encoded once."""
        return self.face

    def prefetch(self, n: int) -> None:
        pass  # the photo's face is encoded once

    def render(self, n: int, mouth: np.ndarray, pose: tuple[float, float, float], weight: float = 1.0,
               closure: float = 0.0) -> np.ndarray:
        """Paste ``mouth`` eased from rest by the speech ``weight`` (and enhanced by it), close the
        eyelids by ``closure``, move the head."""
        if mouth is self.rest:
            frame = self.rest_image.copy()
        else:
            if weight < 1:
                mouth = self.rest + np.float32(weight) * (mouth - self.rest)
            if self.enhance is not None:
                self.enhance.strength = weight
            frame = self.blender.paste(mouth)
        if self.blinks is not None and closure > 0:
            self.blinks.close(frame, closure)
        if self.warp is not None:
            self.warp.apply(frame, *pose)
        return frame

    def close(self) -> None:
        pass


class LiveSession:
    """Pushed speech in, paced :class:`LiveFrame` out. Made by :meth:`LipSync.live <lipsync.LipSync.live>`.

    Args:
        engine: a :class:`~lipsync.LipSync`; its loaded network and detector are shared.
        image: the portrait (path, bytes, PIL image or (H, W, 3) uint8 RGB array).
        video: instead of ``image``, a driving video (path) of the person, played back and
            forth for as long as the session runs; at rest it shows its own mouth, speaking
            it gets the mouth in each frame (see :mod:`lipsync.live.video`).
        loop: how the video repeats: ``pingpong`` (back and forth) or ``loop``.
        fps: frames per second (10 to 60).
        motion: head motion, 0 (still) to 1; idle frames keep a faint sway (a photo only).
        label: draw the visible "AI-generated" label.
        max_side: the working picture's long side.
        box: the face box (y1, y2, x1, x2) instead of detecting it.
        adapt: allow frame step 2 and a smaller size when the machine is too slow.
        enhance: the mouth's enhancement on speaking frames: ``fast`` (default; a few ms a
            frame), ``face`` (only on CUDA; ``fast`` elsewhere) or ``off``.
        blink: natural blinks on a photo (needs the offline eyelid landmark model; without
            it there are none and ``mode.blink`` says why).
        max_video_s: the longest driving video accepted, in seconds.

    Raises:
        LipSyncError: an unusable image or video, no face, missing weights (from the engine).
    """

    def __init__(
        self,
        engine,
        image=None,
        *,
        video=None,
        loop: str = "pingpong",
        fps: float = 25.0,
        motion: float | None = None,
        label: bool = True,
        max_side: int = 640,
        box: tuple[int, int, int, int] | None = None,
        adapt: bool = True,
        seed: int = 0,
        enhance: str = "fast",
        blink: bool = True,
        max_video_s: float = 60.0,
    ):
        from ..blend import draw_label
        from ..face import find_face, pad_box
        from ..media.images import load_image
        from ..options import DEFAULT_MOTION

        if (image is None) == (video is None):
            raise InputError("A live session needs a portrait: pass image= (a photo) or video= (a driving video), "
                             "not both.")
        if not 10 <= float(fps) <= 60:
            raise InputError(f"fps must be between 10 and 60, not {fps}.")
        self.fps = float(fps)
        self.sample_rate = RATE
        self.motion = DEFAULT_MOTION if motion is None else float(motion)
        self.adapt = adapt
        generator = engine.generator
        from .look import BlinkClock, live_enhancer, load_eyes

        self._enhance, enhance_note = live_enhancer(enhance)
        source = None
        if video is not None:
            source, image = _scan_video(engine, video, fps=self.fps, max_side=max_side, box=box, label=label,
                                        loop=loop, max_video_s=max_video_s)
        if source is not None:  # a video of more than one frame
            from .video import VideoFace

            self.motion, self._eyes, self._blink_clock = 0.0, None, None
            self._plain = self._box = None
            self._label = label
            self._face = VideoFace(generator, source, loop=loop, label=label, enhance=self._enhance)
            face_height = source.box.height
            blink_note = "off: the video's own eyes blink"
            about = f"video: {source.frames} frames, {'back and forth' if loop == 'pingpong' else 'looped'}"
        else:  # a photo (or a video of one frame)
            plain = load_image(image, max_side=max_side)
            if box is not None:
                y1, y2, x1, x2 = box
                face_box = pad_box((x1, y1, x2, y2), (0, 0, 0, 0), plain.shape)
            else:
                face_box = find_face(plain, engine.detector)
            self._plain, self._box, self._label = plain, face_box, label
            rgb = draw_label(plain, avoid=face_box) if label else plain
            self._eyes, blink_note = load_eyes(plain, face_box) if blink else (None, "off (asked for)")
            self._face = _Face(generator, rgb, plain, face_box, self.motion, self._enhance, self._eyes)
            if self._eyes is not None and self._face.blinks is None:
                self._eyes, blink_note = None, "off: no open eyes found in the photo"
            self._blink_clock = BlinkClock(self.fps, seed=None if seed == 0 else seed) if self._eyes is not None else None
            face_height = face_box.height
            about = "photo"
        self._pose = _Pose(self.fps, face_height, self.motion, seed)
        self.mode = LiveMode(generator.description, 1, self._face.width, self._face.height,
                             enhance=enhance_note, blink=blink_note, source=about)
        self.stats = LiveStats()
        self._lock = threading.Lock()
        self._picture = threading.Lock()  # held while a frame is made; close() waits for it
        self._closed = threading.Event()
        self._pending = _Fifo()
        self._resampler = None
        self._resampler_rate = 0
        self._last_push = -math.inf
        self._history = np.zeros(2048, np.float32)  # the timeline's latest samples (what was sent)
        self._speaking = False
        self._interrupted = False
        self._weight = 0.0
        self._mouth = self._face.rest
        self._n = 0
        self._t0: float | None = None
        self._cost: collections.deque[float] = collections.deque(maxlen=MEASURE_FRAMES)  # frames that ran it
        self._recent: collections.deque[float] = collections.deque(maxlen=8)  # any frames: how early to start one
        self._faceless = False  # the frame just made skipped the network for want of a face
        self._image: np.ndarray | None = None  # the last picture made
        self._shrunk = False
        self._lead = 0.5 / self.fps
        self._measure_until = MEASURE_FRAMES if adapt else -1  # the first second runs the network to measure it

    # -- input -------------------------------------------------------------------------
    def push(self, samples, sample_rate: int) -> None:
        """Queue a chunk of speech (10 ms to 60 s, any rate from 8 to 192 kHz, int16 or float, mono).

        Returns at once. A chunk that cannot be used raises :class:`~lipsync.AudioError`
        and leaves the queue as it was.
        """
        if self._closed.is_set():
            raise LipSyncError("This live session is closed; open a new one.")
        x, rate = _as_float(samples, sample_rate)
        with self._lock:
            if self._pending.size + x.size * RATE / rate > MAX_QUEUE_S * RATE:
                raise AudioError(
                    f"More than {MAX_QUEUE_S:.0f} s of speech is already queued; wait for it to play or interrupt()."
                )
            if rate != self._resampler_rate:
                self._flush_resampler()
            if rate != RATE:
                if self._resampler is None:
                    import soxr

                    self._resampler = soxr.ResampleStream(rate, RATE, 1, dtype="float32", quality="HQ")
                    self._resampler_rate = rate
                x = self._resampler.resample_chunk(x, last=False)
            self._pending.put(np.ascontiguousarray(x, np.float32))
            self._last_push = time.monotonic()
            self.stats.first_speech.setdefault("push", self._last_push)

    def _flush_resampler(self) -> None:
        if self._resampler is not None:
            self._pending.put(self._resampler.resample_chunk(np.zeros(0, np.float32), last=True))
        self._resampler, self._resampler_rate = None, 0

    def interrupt(self) -> None:
        """Drop the queued speech; the sound fades out within 5 ms and the face is at rest within a few frames."""
        with self._lock:
            keep = self._pending.peek(FADE_SAMPLES) if self._speaking else np.zeros(0, np.float32)
            self._pending.clear()
            self._resampler, self._resampler_rate = None, 0
            self._pending.put(keep)
            self._interrupted = self._speaking

    @property
    def queued_s(self) -> float:
        """Seconds of speech waiting to be played."""
        return self._pending.size / RATE

    @property
    def speaking(self) -> bool:
        return self._speaking

    # -- lifetime ------------------------------------------------------------------------
    def close(self) -> None:
        """End the session (from any thread): the iteration stops, the queue is dropped and a
        driving video's spool is removed (after the frame being made, if one is)."""
        self._closed.set()
        with self._lock:
            self._pending.clear()
            self._resampler = None
        with self._picture:
            self._face.close()

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    def __enter__(self) -> LiveSession:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- output ----------------------------------------------------------------------------
    def __iter__(self) -> LiveSession:
        return self

    def __next__(self) -> LiveFrame:
        if self._closed.is_set():
            raise StopIteration
        if self._t0 is None:
            self._t0 = time.monotonic()
        n = self._n
        due = self._t0 + n / self.fps
        self._sleep_until(due - self._lead)
        if self._closed.is_set():
            raise StopIteration
        # more than two slots behind (the machine stalled): repeat the last picture until caught up;
        # the sound stays exact, and the stream stays live instead of falling further behind
        repeat = self._image is not None and time.monotonic() - due > CATCH_UP_SLOTS / self.fps
        t = time.perf_counter()
        self._faceless = False
        with self._picture:
            if self._closed.is_set():
                raise StopIteration
            frame = self._make(n, repeat=repeat)
        if not repeat:
            self._note_cost(time.perf_counter() - t)
        self._sleep_until(due)
        if self._closed.is_set():
            raise StopIteration
        late = time.monotonic() - due
        st = self.stats
        st.frames += 1
        if late > 1.0 / self.fps:
            st.late_frames += 1
        st.max_late_s = max(st.max_late_s, late)
        if frame.speaking and "frame" not in st.first_speech:
            st.first_speech["frame"] = time.monotonic()
            st.first_speech["pts"] = frame.pts
        self._n += 1
        return frame

    def _sleep_until(self, t: float) -> None:
        while True:
            left = t - time.monotonic()
            if left <= 0 or self._closed.wait(min(left, 0.05)):
                return

    def _slot(self, n: int) -> tuple[int, int]:
        return round(n * RATE / self.fps), round((n + 1) * RATE / self.fps)

    def _make(self, n: int, repeat: bool = False) -> LiveFrame:
        a, b = self._slot(n)
        size = b - a
        now = time.monotonic()
        with self._lock:
            pend = self._pending
            if not self._speaking and pend.size == 0 and now - self._last_push > START_WAIT_S:
                self._flush_resampler()
            if not self._speaking and pend.size and (
                pend.size >= LOOKAHEAD_SAMPLES or now - self._last_push >= START_WAIT_S
            ):
                self._speaking = True
                self.stats.utterances += 1
                head = pend.take(FADE_SAMPLES)
                pend._parts.appendleft(head * np.linspace(0.0, 1.0, len(head), endpoint=False, dtype=np.float32))
                pend.size += len(head)
            speaking = self._speaking
            audio = np.zeros(size, np.float32)
            if speaking:
                if pend.size < size and now - self._last_push >= START_WAIT_S:
                    self._flush_resampler()  # the pusher paused: the resampler's last few ms belong to this utterance
                got = pend.take(size)
                audio[: len(got)] = got
                if pend.size == 0:  # the utterance ends here: fade its last samples out
                    k = min(FADE_SAMPLES, len(got))
                    if k:
                        audio[len(got) - k : len(got)] *= np.linspace(1.0, 0.0, k + 1, dtype=np.float32)[1:]
                    if not self._interrupted and now - self._last_push < 2.0 / self.fps:
                        self.stats.underruns += 1
                    self._speaking = self._interrupted = False
            hist = np.concatenate([self._history, audio])[-len(self._history) :]
            self._history = hist
            # the mel window of frame n: from its start column, 600 samples of history before it
            m = int(n * features.MEL_PER_SECOND / self.fps) * features.HOP
            back = b - (m - 600)
            ahead = _SEGMENT - back
            segment = np.zeros(_SEGMENT, np.float32)
            segment[:back] = hist[-back:]
            nxt = pend.peek(ahead)
            segment[back : back + len(nxt)] = nxt
        target = 1.0 if speaking else 0.0
        self._weight += float(np.clip(target - self._weight, -1.0 / EASE_FRAMES, 1.0 / EASE_FRAMES))
        w = self._weight
        if repeat:
            self.stats.repeated_frames += 1
            return LiveFrame(n / self.fps, self._image, _to_int16(audio), RATE, speaking)
        measuring = n < self._measure_until
        face = self._face
        if w > 0 or measuring:
            if self.mode.step == 1 or n % self.mode.step == 0 or w > 0 and self._mouth is face.rest:
                prepared = face.face_for(n)  # None: a video frame without a face keeps the last mouth
                if prepared is not None:
                    self._mouth = _forward(face.generator, prepared, _mel_window(segment)[None])[0]
                self._faceless = prepared is None
            elif w > 0 and (n + 1) % self.mode.step == 0:
                face.prefetch(n + 1)  # a video: the next network frame's face encoder runs on this one
            mouth = self._mouth
        else:
            self._mouth = mouth = face.rest
        loud = float(np.sqrt(np.mean(audio * audio))) * 8.0 if speaking else 0.0
        closure = 0.0
        if self._blink_clock is not None:
            started = len(self._blink_clock.mids)
            closure = self._blink_clock(n)  # the live sway has no nods (see lipsync.live.look)
            self.stats.blinks += len(self._blink_clock.mids) - started
        enhanced = self._enhance.calls if self._enhance is not None else 0
        image = self._image = face.render(n, mouth, self._pose(n, loud), w, closure)
        if self._enhance is not None:
            self.stats.enhanced_frames += self._enhance.calls - enhanced
        return LiveFrame(n / self.fps, image, _to_int16(audio), RATE, speaking)

    # -- speed -------------------------------------------------------------------------
    def _note_cost(self, dt: float) -> None:
        slot = 1.0 / self.fps
        self._recent.append(dt)
        self._lead = min(slot, 1.5 * max(self._recent) + 0.003)
        if self._faceless:  # a video frame without a face: the network did not run, so it says nothing of speed
            if self._measure_until >= 0:
                self._measure_until += 1  # measure on, until enough frames that ran it
            return
        self._cost.append(dt)
        cost = float(np.mean(self._cost))
        self.stats.frame_ms = 1000.0 * cost
        if self._measure_until < 0 or self._n + 1 < self._measure_until or len(self._cost) < MEASURE_FRAMES:
            return
        if not self.adapt or cost <= BUDGET_SHARE * slot:
            self._measure_until = -1  # it fits: measured once and for all
            return
        m = self.mode
        if m.step == 1:
            reason = f"a frame took {1000 * cost:.0f} ms of a {1000 * slot:.0f} ms slot: the network runs on every second frame"
            self.mode = dataclasses.replace(m, step=2, reason=reason)
        elif not self._shrunk:
            self._shrink()
            self._shrunk = True
            reason = f"{m.reason}; still {1000 * cost:.0f} ms a frame: working at {self._face.width}x{self._face.height}"
            self.mode = dataclasses.replace(m, step=2, width=self._face.width, height=self._face.height, reason=reason)
        else:
            self._measure_until = -1  # nothing smaller to try
            return
        log.warning("live: %s", reason)
        self._cost.clear()
        self._measure_until = self._n + 1 + MEASURE_FRAMES

    def _shrink(self) -> None:
        if self._plain is None:  # a video: the same spool, read at the smaller size
            self._face = self._face.shrunk(SMALLER)
            self._mouth = self._face.rest
            return
        import cv2

        from ..blend import draw_label
        from ..face import FaceBox

        h, w = self._plain.shape[:2]
        nw, nh = max(2, int(w * SMALLER)) // 2 * 2, max(2, int(h * SMALLER)) // 2 * 2
        plain = cv2.resize(self._plain, (nw, nh), interpolation=cv2.INTER_AREA)
        b = self._box
        sy, sx = nh / h, nw / w
        box = FaceBox(int(b.y1 * sy), max(int(b.y2 * sy), int(b.y1 * sy) + 8), int(b.x1 * sx), max(int(b.x2 * sx), int(b.x1 * sx) + 8))
        rgb = draw_label(plain, avoid=box) if self._label else plain
        old = self._face
        if self._eyes is not None:
            from .look import scale_eyes

            self._eyes = scale_eyes(self._eyes, sx, sy)
        self._face = _Face(old.generator, rgb, plain, box, self.motion, self._enhance, self._eyes)
        self._pose = _Pose(self.fps, box.height, self.motion, 0)
        self._plain, self._box = plain, box
        self._mouth = self._face.rest


def _scan_video(engine, video, *, fps: float, max_side: int, box, label: bool, loop: str, max_video_s: float):
    """(the scanned :class:`~lipsync.sources.VideoSource`, None), or (None, the frame) for a
    video of one frame, which is used as a photo. Checked and decoded as a clip's video is."""
    from ..media.video import probe_video
    from ..options import GenerateOptions
    from ..sources import scan_or_still

    opts = GenerateOptions(fps=fps, max_side=max_side, box=box, label=label, video_loop=loop,
                           max_video_s=max_video_s)
    info = probe_video(video, max_seconds=opts.max_video_s, max_bytes=opts.max_video_bytes)
    return scan_or_still(info, opts, None, lambda: engine.detector)


def open_session(engine, image=None, video=None, *, fps: float = 25.0, **kw) -> LiveSession:
    """``engine.live(...)``: see :class:`LiveSession`."""
    return LiveSession(engine, image, video=video, fps=fps, **kw)
