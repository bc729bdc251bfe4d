"""A live session: speech pushed in chunks in, frames paced in real time out.

**Timeline.** Frame ``n`` is shown at ``pts = n / fps`` and carries exactly its slot
of sound at the session's output rate (48 kHz by default): pushed speech or
silence (:mod:`lipsync.live.timeline`: the model's 16 kHz copy decides, the
sound's copy follows it; :mod:`lipsync.live.audio`: the look-ahead and the mel
windows). The iterator hands frame ``n`` out no earlier than the moment
iteration began plus ``n / fps``; the picture is made as late as the measured
cost allows, so it uses the newest speech.

**Rest and easing.** Without speech the face is at rest: the mouth the network
predicts for silence, pasted once per frame, with an idle head sway
(:mod:`lipsync.live.pose`). Talking and rest blend over :data:`EASE_FRAMES` frames
(mouth weight ramps 0 -> 1 -> 0), and the sound fades in and out over 5 ms at each
utterance's edges, so neither the picture nor the sound pops.

**Speed.** :mod:`lipsync.live.speed` measures the first second and decides: the
network on every second frame, then a smaller picture. :attr:`LiveSession.mode`
says what runs. A frame more than :data:`CATCH_UP_SLOTS` slots late (a stall: a
loaded machine, a slow consumer) repeats the last picture, with its own slot's
sound, until the session is back on time, so a stream stays live instead of
drifting behind; a frame started after its time, but less late than that, keeps
the last mouth on a new picture (never two in a row), which catches up within a
frame or two where running the network on each would stay late for many.

**The face** comes from a photo (:mod:`lipsync.live.photo`: framed as a video
call, encoded once) or a driving video (:mod:`lipsync.live.video`: played back
and forth, each speaking frame's own face encoded; no added head motion or
blinks), framed as a video call by default: head and shoulders.

The session owns no thread: the frames are made on the iterating thread, and
``push``, ``interrupt`` and ``close`` may come from any other (``close`` returns at
once; a frame being made finishes, then the iterating thread lets go of the face).
"""

from __future__ import annotations

import atexit
import dataclasses
import gc
import logging
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from ..errors import InputError, LipSyncError
from ..proc import background
from ..runtime.scheduler import SHARED_LEAD_SLOTS, Withdrawn
from .audio import LOOKAHEAD_S, MAX_CHUNK_S, MAX_RATE, MIN_RATE, check_chunk, mel_window, to_int16
from .photo import FRAMINGS, PhotoFace, frame_photo
from .pose import HeadSway
from .speed import SMALLER, SpeedPolicy
from .timeline import SpeechTimeline, fade_out, fade_samples

__all__ = [
    "EASE_FRAMES",
    "FADE_SAMPLES",
    "LOOKAHEAD_S",
    "MAX_CHUNK_S",
    "SAMPLE_RATE",
    "LiveFrame",
    "LiveMode",
    "LiveSession",
    "LiveStats",
    "open_session",
    "plain_device",
]

log = logging.getLogger("lipsync")

SAMPLE_RATE = 48_000  #: a session's sound, by default (WebRTC's Opus runs at 48 kHz)
EASE_FRAMES = 3  #: frames over which the mouth blends between talking and rest
FADE_SAMPLES = fade_samples(16_000)  #: 5 ms fades at the edges of each utterance, at 16 kHz (80; R / 200 at rate R)
CATCH_UP_SLOTS = 2  #: further behind than this, frames repeat the last picture until caught up
CATCH_UP_HOLD = True  #: a frame started after its time keeps the last mouth (see LiveSession._hold)


@dataclass(frozen=True)
class LiveFrame:
    """One frame of a live session."""

    pts: float  #: presentation time in seconds (frame index / fps)
    image: np.ndarray  #: (H, W, 3) uint8 RGB
    audio: np.ndarray  #: (samples,) int16 mono at ``sample_rate``: exactly this frame's slot
    sample_rate: int  #: the session's output rate
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
    framing: str = "call"  #: ``call`` (head and shoulders, as a video call) or ``full`` (the whole picture)
    plain_device: str = ""  #: the device in plain words: "fast CPU mode", "CPU mode" or "GPU mode"

    def summary(self) -> str:
        """One plain line for the page, e.g. ``fast CPU mode, 512×512, sharp mouth, blinks``."""
        parts = [self.plain_device or "CPU mode", f"{self.width}×{self.height}"]
        if self.enhance and not self.enhance.startswith("off"):
            parts.append("sharp mouth")
        if self.blink.startswith("on"):
            parts.append("blinks")
        if self.source.startswith("video"):
            parts.append("face from a video")
        if self.step == 2:
            parts.append("every second frame")
        return ", ".join(parts)


def plain_device(generator) -> str:
    """The network's device in a visitor's words: "GPU mode" on CUDA, "fast CPU mode" for int8 on a CPU,
    else "CPU mode" (the Generate tab's words, :func:`lipsync.webapp.state.plain_mode`, which this
    package cannot import: lipsync.webapp imports gradio)."""
    device = getattr(getattr(generator, "device", None), "type", "cpu")
    if device == "cuda":
        return "GPU mode"
    return "fast CPU mode" if getattr(generator, "precision", "") == "int8" else "CPU mode"


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
    held_frames: int = 0  #: frames that kept the last mouth to catch up (a new picture: sound, blink, motion)
    first_speech: dict = field(default_factory=dict)  #: {"push": t, "frame": t, "pts": s} of the first utterance
    blinks: int = 0  #: blinks started
    enhanced_frames: int = 0  #: frames the mouth's enhancer ran on


@dataclass
class _Plan:
    """A frame between its two halves (:meth:`LiveSession._plan`, :meth:`LiveSession._finish`)."""

    n: int
    due: float
    t: float  #: when it was started (``time.perf_counter()``)
    repeat: bool  #: repeats the last picture (catching up)
    speaking: bool
    weight: float  #: the mouth's weight (talking 1, rest 0, between while easing)
    sound: np.ndarray  #: its slot at the session's rate, int16
    model: np.ndarray  #: its slot at 16 kHz (how loud: the head's motion)
    pending: object = None  #: its forward, on its way (a :class:`~lipsync.runtime.scheduler.Pending`)
    net: object = None  #: how that went (a :class:`~lipsync.runtime.scheduler.LiveTiming`)
    rest: bool = False  #: the face at rest (no network)
    faceless: bool = False  #: a video frame without a face: the network could not run
    held: bool = False  #: started after its time: keeps the last mouth, without the network (catching up)
    interrupted: bool = False  #: its sound was taken before an interrupt (it fades out)
    plan_s: float = 0.0
    render_s: float = 0.0
    cpu_s: float = 0.0  #: this thread's CPU time in both halves (waiting for a core or the interpreter lock not counted)
    #: a driving video's face encoded for the network, wall time: on a CPU it computes on the network's threads,
    #: which this thread's CPU time does not see (13.6 ms a frame against 3.5 of the thread's, on 2 cores)
    encode_s: float = 0.0


def _submit(generator, face, mels: np.ndarray, due: float, ticket=None):
    """The one call into the generator for a frame: (B, 80, 16) mel windows -> a pending forward whose
    ``result()`` is ((B, 96, 96, 3) float32 BGR in [0, 1], how the call went). It runs in one batch
    with the frames the engine's other live sessions wait for (:mod:`lipsync.runtime.scheduler`),
    and before any clip's frames.

    ``face`` is from ``generator.prepare_face(crop)``: the still face encoded once per
    session (the photo fast path; int8 where the engine's checkpoint passed its check).
    """
    return generator.submit_live(face, mels, due, ticket)


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
        sample_rate: the frames' sound, in Hz (8,000 to 192,000; default 48,000 for WebRTC).
            Pushed speech at this rate comes out bit for bit; other rates are resampled once.
        motion: head motion, 0 (still) to 1; idle frames keep a faint sway (a photo only).
        label: draw the visible "AI-generated" label.
        max_side: the working picture's long side.
        framing: ``call`` (default): head and shoulders, as in a video call (the face
            about a third of the picture's height; see :mod:`lipsync.live.photo`);
            ``full``: the whole picture.
        box: the face box (y1, y2, x1, x2) in the photo scaled to ``max_side``, instead of detecting it.
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
        sample_rate: int = SAMPLE_RATE,
        motion: float | None = None,
        label: bool = True,
        max_side: int = 640,
        framing: str = "call",
        box: tuple[int, int, int, int] | None = None,
        adapt: bool = True,
        seed: int = 0,
        enhance: str = "fast",
        blink: bool = True,
        max_video_s: float = 60.0,
    ):
        from ..options import DEFAULT_MOTION
        from .look import BlinkClock, live_enhancer, load_eyes

        if (image is None) == (video is None):
            raise InputError("A live session needs a portrait: pass image= (a photo) or video= (a driving video), "
                             "not both.")
        if not 10 <= float(fps) <= 60:
            raise InputError(f"fps must be between 10 and 60, not {fps}.")
        if framing not in FRAMINGS:
            raise InputError(f"framing must be one of {', '.join(FRAMINGS)}, not {framing!r}.")
        if (isinstance(sample_rate, bool) or not isinstance(sample_rate, (int, np.integer, float))
                or float(sample_rate) != int(sample_rate) or not MIN_RATE <= int(sample_rate) <= MAX_RATE):
            raise InputError(f"sample_rate must be a whole number of samples per second from {MIN_RATE:,} to "
                             f"{MAX_RATE:,} (48,000 for WebRTC, or the voice's own rate), not {sample_rate!r}.")
        self.fps = float(fps)
        self.sample_rate = int(sample_rate)
        self.motion = DEFAULT_MOTION if motion is None else float(motion)
        self.adapt = adapt
        generator = engine.generator
        source = None
        if video is not None:
            source, image = _scan_video(engine, video, fps=self.fps, max_side=max_side, box=box, label=label,
                                        loop=loop, max_video_s=max_video_s)
        self._enhance, enhance_note = live_enhancer(enhance, still=source is None)  # a video: each frame's own detail
        if source is not None:  # a video of more than one frame
            from .video import VideoFace, call_framing

            self.motion, self._blink_clock = 0.0, None
            crop = call_framing(source) if framing == "call" else None
            self._face = VideoFace(generator, source, loop=loop, label=label, enhance=self._enhance, crop=crop)
            blink_note = "off: the video's own eyes blink"
            about = f"video: {source.frames} frames, {'back and forth' if loop == 'pingpong' else 'looped'}"
        else:  # a photo (or a video of one frame)
            plain, face_box = frame_photo(image, engine.detector, max_side=max_side, box=box, framing=framing)
            eyes, blink_note = load_eyes(plain, face_box) if blink else (None, "off (asked for)")
            self._face = PhotoFace(generator, plain, face_box, motion=self.motion, label=label,
                                   enhance=self._enhance, eyes=eyes)
            if eyes is not None and self._face.eyes is None:
                blink_note = "off: no open eyes found in the photo"
            self._blink_clock = (BlinkClock(self.fps, seed=None if seed == 0 else seed)
                                 if self._face.eyes is not None else None)
            about = "photo"
        self._pose = HeadSway(self.fps, self._face.face_height, self.motion, seed)
        self.mode = LiveMode(generator.description, 1, self._face.width, self._face.height,
                             enhance=enhance_note, blink=blink_note, source=about, framing=framing,
                             plain_device=plain_device(generator))
        self.stats = LiveStats()
        self._lock = threading.Lock()  # the timeline: push / interrupt / close against the frame being made
        self._picture = threading.Lock()  # held while a frame is made (the face in use)
        self._closed = threading.Event()
        _OPEN.add(self)
        self._face_closed = False  # the face's resources (a video's spool) are let go of
        self._timeline = SpeechTimeline(self.fps, self.sample_rate)
        self._weight = 0.0
        self._mouth = self._face.rest
        self._n = 0
        self._t0: float | None = None
        self._speed = SpeedPolicy(self.fps, adapt)
        self._ahead: _Plan | None = None  # the next frame, started early (its batch on its way)
        self._unfinished: _Plan | None = None  # a speaking frame whose sound is taken, not yet handed out
        self._image: np.ndarray | None = None  # the last picture made
        self._scheduler = generator.scheduler  # shared by the engine's sessions (and its clips)
        # the live batch sizes the engine's sessions will share, run once before the first session's frames
        # (a no-op after that): a size first seen live would make every open session's frame late
        generator.warm_live()
        self._ticket = None  # the session's place on the scheduler (from the first frame to the close)
        self._gave_way = False  # at frame step 2 because the shared network was full (undone when it has room)
        self._held = -2  # the last frame that kept the mouth to catch up (see _hold)

    # -- input -------------------------------------------------------------------------
    def push(self, samples, sample_rate: int) -> None:
        """Queue a chunk of speech (10 ms to 60 s, any rate from 8 to 192 kHz, int16 or float, mono).

        Returns at once. A chunk that cannot be used raises :class:`~lipsync.AudioError`
        and leaves the queue as it was.
        """
        if self._closed.is_set():
            raise LipSyncError("This live session is closed; open a new one.")
        x, rate = check_chunk(samples, sample_rate)
        with self._lock:
            now = time.monotonic()
            self._timeline.push(x, rate, now)
            self.stats.first_speech.setdefault("push", now)

    def interrupt(self) -> None:
        """Drop the queued speech; the sound fades out within 5 ms and the face is at rest within a few frames."""
        with self._lock:
            taken = self._unfinished  # a speaking frame whose sound is taken, not yet handed out: it fades
            self._timeline.interrupt(fade=taken is None)
            if taken is not None:
                taken.interrupted = True

    @property
    def queued_s(self) -> float:
        """Seconds of speech waiting to be played."""
        return self._timeline.queued_s

    @property
    def speaking(self) -> bool:
        return self._timeline.speaking

    # -- lifetime ------------------------------------------------------------------------
    def close(self) -> None:
        """End the session (from any thread, at once): the iteration stops and the queue is dropped.

        A driving video's spool is removed now, or where a frame is being made, by the
        iterating thread as soon as that frame is done: ``close`` never waits for it.
        """
        self._closed.set()
        with self._lock:
            self._timeline.clear()
            ticket, self._ticket = self._ticket, None
        ahead = self._ahead
        if ahead is not None and ahead.pending is not None:
            self._scheduler.cancel(ahead.pending)  # a frame started early: not run for nobody
        if ticket is not None:
            self._scheduler.leave(ticket)
        self._let_go()

    def _let_go(self) -> None:
        """Close the face unless a frame is being made (then the iterating thread does it after that frame)."""
        if not self._picture.acquire(blocking=False):
            return  # __next__ calls this again once it lets go of the picture
        try:
            if not self._face_closed:
                self._face_closed = True
                self._face.close()
        finally:
            self._picture.release()

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
        if self._t0 is None:  # on the grid of the engine's other sessions: their frames share batches
            with self._lock:
                if self._closed.is_set():
                    raise StopIteration
                self._ticket = self._scheduler.join(self.fps, adapt=self.adapt)
                self._t0 = self._ticket.t0
        n = self._n
        due = self._t0 + n / self.fps
        frame = None
        try:
            with self._picture:
                plan, self._ahead = self._ahead, None
                if plan is None or plan.n != n:
                    self._sleep_until(due - self._lead())
                    if not self._closed.is_set():
                        plan = self._plan(n, due, repeat=self._behind(due))
                if not self._closed.is_set():
                    try:
                        # the next frame may start as soon as this one has its mouth, before its picture
                        frame = self._finish(plan, then=lambda: self._start_next(n, due, wait=False))
                    except Withdrawn:  # close() took back the frame started early: the iteration ends
                        raise StopIteration from None
                    if not plan.repeat and not plan.held:
                        self._note_cost(n, plan)
                    self._start_next(n, due, wait=True)
        finally:
            if self._closed.is_set():  # closed while the frame was made: close() left the face to this thread
                self._let_go()
        if frame is None or self._closed.is_set():
            raise StopIteration
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

    def _lead(self) -> float:
        """How long before its time a frame is started: what its cost asks for, alone; two slots
        beside other sessions, so that each asks for its next frame as soon as the batch they shared
        is done, and their frames keep sharing batches."""
        if self._scheduler.sessions > 1:
            return SHARED_LEAD_SLOTS / self.fps
        return self._speed.lead

    def _behind(self, due: float) -> bool:
        """More than two slots behind (the machine stalled): repeat the last picture until caught up;
        the sound stays exact, and the stream stays live instead of falling further behind."""
        return self._image is not None and time.monotonic() - due > CATCH_UP_SLOTS / self.fps

    def _hold(self, n: int, due: float) -> bool:
        """Frame ``n`` is started after its time (a stall put the session behind): it keeps the last
        mouth and leaves out the network, which could only make it later; the picture is still new.
        Never two frames in a row (the mouth moves at least on every second frame, as at step 2), nor
        the first of an utterance (its mouth must open)."""
        if not CATCH_UP_HOLD or time.monotonic() < due or self._held == n - 1 or self._mouth is self._face.rest:
            return False
        self._held = n
        return True

    def _start_next(self, n: int, due: float, *, wait: bool) -> None:
        """Start frame ``n + 1`` before frame ``n`` is shown when its lead asks for more than a slot
        (beside other sessions): its network then runs while this thread makes frame ``n``'s picture
        and waits for its time. Called once frame ``n`` has its mouth, without waiting (``wait=False``:
        only if its time to start has come, so the shared network has the next batch while the
        sessions paste), and again once the picture is made (``wait=True``: it sleeps until then)."""
        if self._ahead is not None or self._closed.is_set():
            return
        nxt = due + 1.0 / self.fps
        start = nxt - self._lead()
        if start >= due:
            return  # it starts in its own __next__, after this one is shown
        if time.monotonic() < start:
            if not wait:
                return
            self._sleep_until(start)
            if self._closed.is_set():
                return
        self._ahead = self._plan(n + 1, nxt, repeat=self._behind(nxt))

    def _sleep_until(self, t: float) -> None:
        while True:
            left = t - time.monotonic()
            if left <= 0 or self._closed.wait(min(left, 0.05)):
                return

    def _plan(self, n: int, due: float, repeat: bool = False) -> _Plan:
        """Frame ``n``'s first half: its slot of sound, whether the network runs, and if so its
        forward handed to the scheduler (the batch runs while this thread goes on)."""
        t, cpu = time.perf_counter(), time.thread_time()
        with self._lock:
            slot = self._timeline.slot(n, time.monotonic())
            plan = _Plan(n, due, t, repeat, slot.speaking, 0.0, to_int16(slot.sound), slot.model)
            self._unfinished = plan if slot.speaking else None
        self._scheduler.planned(self._ticket, due)  # a clip beside it plans its pieces up to this one's next
        if slot.started:
            self.stats.utterances += 1
        if slot.underrun:
            self.stats.underruns += 1
        speaking = slot.speaking
        target = 1.0 if speaking else 0.0
        self._weight += float(np.clip(target - self._weight, -1.0 / EASE_FRAMES, 1.0 / EASE_FRAMES))
        plan.weight = self._weight
        if repeat:
            return plan
        face = self._face
        w = plan.weight
        if w > 0 or self._speed.measuring(n):
            runs = self.mode.step == 1 or n % self.mode.step == 0 or w > 0 and self._mouth is face.rest
            if runs and self._hold(n, due):
                plan.held = True
                self.stats.held_frames += 1
            elif runs:
                prepared = self._encode(plan, face.face_for, n)  # None: a video frame without a face keeps the last mouth
                if prepared is not None:
                    plan.pending = _submit(face.generator, prepared, mel_window(slot.segment)[None], due, self._ticket)
                plan.faceless = prepared is None
            elif w > 0 and (n + 1) % self.mode.step == 0:
                self._encode(plan, face.prefetch, n + 1)  # a video: the next network frame's face encoder runs on this one
        else:
            plan.rest = True
        plan.plan_s = time.perf_counter() - t
        plan.cpu_s = time.thread_time() - cpu
        return plan

    def _encode(self, plan: _Plan, call: Callable[[int], object], n: int):
        """``call(n)``: the face made ready for the network (``face_for``, ``prefetch``), its wall time noted in
        ``plan.encode_s`` where the face is encoded per frame (a driving video's)."""
        t = time.perf_counter()
        out = call(n)
        if self._face.encodes:
            plan.encode_s = time.perf_counter() - t
        return out

    def _finish(self, plan: _Plan, then: Callable[[], None] | None = None) -> LiveFrame:
        """Frame ``plan.n``'s second half: its mouth (from the batch), blink, head motion, the picture.
        ``then`` runs once the mouth is known, before the picture is made."""
        with self._lock:
            if self._unfinished is plan:
                self._unfinished = None
        if plan.interrupted:  # its sound was taken before an interrupt: it fades out as the next slot would have
            sound = plan.sound.astype(np.float32)
            fade = fade_samples(self.sample_rate)
            fade_out(sound, fade, fade)
            sound[fade:] = 0
            plan.sound, plan.speaking = sound.astype(np.int16), False
            self._weight = plan.weight = max(0.0, plan.weight - 2.0 / EASE_FRAMES)
        n, speaking, w = plan.n, plan.speaking, plan.weight
        if plan.repeat:
            self.stats.repeated_frames += 1
            return LiveFrame(n / self.fps, self._image, plan.sound, self.sample_rate, speaking)
        face = self._face
        if plan.pending is not None:
            out, plan.net = plan.pending.result()
            self._mouth = out[0]
        elif plan.rest:
            self._mouth = face.rest
        mouth = self._mouth
        if then is not None:
            then()
        t, cpu = time.perf_counter(), time.thread_time()
        audio = plan.model
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
        plan.render_s = time.perf_counter() - t
        plan.cpu_s += time.thread_time() - cpu
        return LiveFrame(n / self.fps, image, plan.sound, self.sample_rate, speaking)

    # -- speed -------------------------------------------------------------------------
    def _note_cost(self, n: int, plan: _Plan) -> None:
        # how long the frame needed, from its start to its picture (waiting for its batch included),
        # and the session's own cost: its work with its share of the batch, not the other sessions' frames
        net = plan.net
        dt = plan.plan_s + plan.render_s + (net.wall_s if net is not None else 0.0)
        own = plan.plan_s + plan.render_s + (net.share_s if net is not None else 0.0)
        self._scheduler.note_picture(self._ticket, plan.plan_s + plan.render_s, plan.cpu_s, plan.encode_s)  # admission
        speed = self._speed
        change = speed.note(n, dt, ran=not plan.faceless, own=own)
        self.stats.frame_ms = speed.frame_ms
        ticket = self._ticket
        shared = change is None and ticket is not None and ticket.shed and self.mode.step == 1
        if shared:  # the network the sessions share is full, and this is the newest: it gives way, not the others
            change = speed.record(SpeedPolicy.STEP)
        elif self._gave_way and ticket is not None and not ticket.shed:  # the network has room again
            self._gave_way = False
            self.mode = dataclasses.replace(self.mode, step=1, reason="")
            log.info("live: the shared network has room again: the network runs on every frame")
            return
        if change is None:
            return
        m = self.mode
        cost_ms, slot_ms = 1000 * speed.cost, 1000 * speed.slot
        if shared:
            reason = ("the network is shared with other live sessions and full: this one, the newest, runs it on "
                      "every second frame")
            self.mode = dataclasses.replace(m, step=2, reason=reason)
            self._gave_way = True
        elif change == SpeedPolicy.STEP:
            reason = f"a frame took {cost_ms:.0f} ms of a {slot_ms:.0f} ms slot: the network runs on every second frame"
            self.mode = dataclasses.replace(m, step=2, reason=reason)
        else:
            self._face = self._face.shrunk(SMALLER)
            self._mouth = self._face.rest
            self._pose = HeadSway(self.fps, self._face.face_height, self.motion, 0)  # the sway follows the face
            reason = f"{m.reason}; still {cost_ms:.0f} ms a frame: working at {self._face.width}x{self._face.height}"
            self.mode = dataclasses.replace(m, step=2, width=self._face.width, height=self._face.height, reason=reason)
        log.warning("live: %s", reason)


#: the sessions not yet garbage: closed at the interpreter's exit (see :func:`_close_at_exit`)
_OPEN: "weakref.WeakSet[LiveSession]" = weakref.WeakSet()
EXIT_WAIT_S = 2.0  #: at exit, the longest wait for a frame being made to be done


@atexit.register
def _close_at_exit() -> None:
    """End every open session before the interpreter finalizes, and wait for the frames being made.

    A session iterated on a daemon thread (a program that exits without closing it) would
    otherwise be inside OpenCV when the interpreter stops its threads: the thread is unwound
    through C++ code that cannot be unwound, and the process aborts (exit status 134, seen
    at the end of the test suite). Closed, the iteration stops at its next check.
    """
    sessions = list(_OPEN)
    for session in sessions:
        try:
            session.close()
        except Exception:  # noqa: BLE001 - exiting: close the others
            log.debug("closing a live session at exit failed", exc_info=True)
    deadline = time.monotonic() + EXIT_WAIT_S
    for session in sessions:
        if session._picture.acquire(timeout=max(0.0, deadline - time.monotonic())):  # no frame being made
            session._picture.release()


@background()  # its probe and decoder run lower: the sessions already running come first
def _scan_video(engine, video, *, fps: float, max_side: int, box, label: bool, loop: str, max_video_s: float):
    """(the scanned :class:`~lipsync.sources.VideoSource`, None), or (None, the frame) for a
    video of one frame, which is used as a photo. Checked and decoded as a clip's video is.

    The new session has no frame due yet; the sessions already running have, so its programs
    run lower (measured in docs/live.md: their late frames during the open, with and without)."""
    from ..media.video import probe_video
    from ..options import GenerateOptions
    from ..sources import scan_or_still

    opts = GenerateOptions(fps=fps, max_side=max_side, box=box, label=label, video_loop=loop,
                           max_video_s=max_video_s)
    info = probe_video(video, max_seconds=opts.max_video_s, max_bytes=opts.max_video_bytes)
    # on disk, not in memory: a session keeps its frames for as long as it runs, and several may run
    return scan_or_still(info, opts, None, lambda: engine.detector, memory_mb=0)


_heap_frozen = False
_freeze_lock = threading.Lock()


def freeze_heap() -> bool:
    """Once per process, before its first live session: a full collection, then everything still alive moved
    out of the cyclic garbage collector's reach (:func:`gc.freeze`). Returns whether this call did it.

    The engine, the app and the modules they import are some 350,000 objects that live as long as the
    process. Python's full collection walks all of them whenever enough new objects have survived: 135 ms
    on 2 cores with the Live tab's app loaded (250 ms seen in the browser test's process), holding the
    interpreter lock, so every live session's frames and sound stopped for that long at once. Frozen,
    they are not walked again (0 ms); what the sessions make afterwards is collected as before. The
    session's own objects are made after this, so a closed session is still freed.
    """
    global _heap_frozen
    with _freeze_lock:
        if _heap_frozen:
            return False
        _heap_frozen = True
    gc.collect()
    gc.freeze()
    return True


def open_session(engine, image=None, video=None, *, fps: float = 25.0, **kw) -> LiveSession:
    """``engine.live(...)``: see :class:`LiveSession`."""
    freeze_heap()
    return LiveSession(engine, image, video=video, fps=fps, **kw)
