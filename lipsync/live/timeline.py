"""A live session's sound on its timeline: pushed speech in, each frame's slot of sound out.

**Two copies of the speech.** Each pushed chunk is resampled once into two
queues, by one streaming libsoxr resampler per input rate and copy (none where
the chunk already is at that copy's rate: its samples go through bit for bit):

* the model's copy at 16 kHz: the master. It decides when an utterance starts and
  ends, and its samples make the mel windows (:func:`~lipsync.live.audio.mel_window`);
* the sound's copy at the session's output rate ``R`` (48 kHz by default): what the
  frames carry, so a 24 or 48 kHz voice is heard at its own quality. A session at
  16 kHz has one copy, used for both.

**Slots.** Frame ``n`` owns the samples ``[round(n * rate / fps), round((n + 1) * rate / fps))``
of each copy's timeline (640 at 16 kHz and 1920 at 48 kHz, at 25 fps), so the
counts add up exactly over any number of frames. Its sound is exactly its slot:
pushed speech or silence.

**Utterances.** An utterance starts once :data:`~lipsync.live.audio.LOOKAHEAD_S` of
speech is queued (the model's look-ahead) or once the pusher has paused for
:data:`START_WAIT_S` (a short phrase). Each of its slots takes the slot's time span
from both copies. It ends in the slot where the model's copy runs dry; there the
sound's copy gives whatever remains of the utterance (its resampler's last
samples too), padded with silence if short and cut at the slot's end if long, so
nothing leaks into the next utterance. The two copies therefore stay within a slot
of each other. The sound fades in and out over :data:`FADE_S` (5 ms) at each
utterance's edges; an interrupt keeps the next 5 ms and fades them out. Speech that
runs dry while the pusher is still sending counts as an underrun.

Not thread-safe: the session calls it under its lock.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .. import features
from ..errors import AudioError
from .audio import LOOKAHEAD_SAMPLES, MODEL_RATE, SEGMENT, SampleQueue

__all__ = ["FADE_S", "MAX_QUEUE_S", "START_WAIT_S", "Slot", "SpeechTimeline", "fade_out", "fade_samples"]

START_WAIT_S = 0.08  #: a shorter utterance starts once the pusher has paused this long
FADE_S = 0.005  #: fades at the edges of each utterance
MAX_QUEUE_S = 120.0  #: the most speech queued at once
HISTORY = SEGMENT  #: samples (16 kHz) of the model's timeline kept for the next mel windows (a slot and 600 more: 2,400 at 10 fps)


def fade_samples(rate: int) -> int:
    """Samples in a 5 ms fade at ``rate`` (80 at 16 kHz, 240 at 48 kHz)."""
    return round(rate * FADE_S)


@dataclass(frozen=True)
class Slot:
    """One frame's sound and what the model needs of it."""

    model: np.ndarray  #: (samples,) float32 at 16 kHz: the model's copy of the slot
    sound: np.ndarray  #: (samples,) float32 at the output rate: what the frame carries
    speaking: bool  #: the slot carries pushed speech
    segment: np.ndarray  #: (SEGMENT,) float32 at 16 kHz: the samples of the frame's mel window
    started: bool = False  #: an utterance started in this slot
    underrun: bool = False  #: the utterance ended here because the speech ran dry while the pusher sent more


class _Copy:
    """One copy of the pushed speech at ``rate``: its queue and its streaming resampler."""

    def __init__(self, rate: int):
        self.rate = rate
        self.fade = fade_samples(rate)
        self.queue = SampleQueue()
        self._stream = None
        self._from = 0  # the rate the stream resamples from (0: none)

    def put(self, x: np.ndarray, rate: int) -> None:
        if rate != self._from:
            self.flush()
        if rate != self.rate:
            if self._stream is None:
                import soxr

                self._stream = soxr.ResampleStream(rate, self.rate, 1, dtype="float32", quality="HQ")
                self._from = rate
            x = self._stream.resample_chunk(x, last=False)
        self.queue.put(np.ascontiguousarray(x, np.float32))

    def flush(self) -> None:
        """The resampler's last samples into the queue; the next chunk starts a new stream."""
        if self._stream is not None:
            self.queue.put(self._stream.resample_chunk(np.zeros(0, np.float32), last=True))
        self._stream, self._from = None, 0

    def drop(self, keep: int = 0) -> None:
        """Everything but the next ``keep`` samples queued; the resampler's held samples too."""
        head = self.queue.peek(keep) if keep else np.zeros(0, np.float32)
        self.queue.clear()
        self._stream, self._from = None, 0
        self.queue.put(head)

    def fade_in(self) -> None:
        head = self.queue.take(self.fade)
        self.queue.push_front(head * np.linspace(0.0, 1.0, len(head), endpoint=False, dtype=np.float32))


def fade_out(x: np.ndarray, got: int, fade: int) -> None:
    """Fade out the last ``fade`` of the first ``got`` samples of ``x``, in place."""
    k = min(fade, got)
    if k:
        x[got - k : got] *= np.linspace(1.0, 0.0, k + 1, dtype=np.float32)[1:]


class SpeechTimeline:
    """Pushed speech in, one :class:`Slot` per frame out (see the module's docstring).

    Args:
        fps: the session's frame rate.
        rate: the output rate ``R`` (the frames' sound).
    """

    def __init__(self, fps: float, rate: int):
        self.fps = float(fps)
        self.rate = int(rate)
        self._model = _Copy(MODEL_RATE)
        self._sound = self._model if self.rate == MODEL_RATE else _Copy(self.rate)
        self.last_push = -math.inf  #: when the last chunk came (time.monotonic())
        self.speaking = False
        self._interrupted = False
        self._history = np.zeros(HISTORY, np.float32)  # the model timeline's latest samples (what was sent)

    @property
    def queued_s(self) -> float:
        """Seconds of speech waiting to be played (the model's copy)."""
        return self._model.queue.size / MODEL_RATE

    def _copies(self) -> tuple[_Copy, ...]:
        return (self._model,) if self._sound is self._model else (self._model, self._sound)

    def push(self, x: np.ndarray, rate: int, now: float) -> None:
        """Queue a checked chunk (float32 mono at ``rate``); AudioError when too much is queued already."""
        if self._model.queue.size + x.size * MODEL_RATE / rate > MAX_QUEUE_S * MODEL_RATE:
            raise AudioError(
                f"More than {MAX_QUEUE_S:.0f} s of speech is already queued; wait for it to play or interrupt()."
            )
        for copy in self._copies():
            copy.put(x, rate)
        self.last_push = now

    def interrupt(self, fade: bool = True) -> None:
        """Drop the queued speech but the next 5 ms (which the utterance's end fades out); with
        ``fade=False`` all of it (the caller fades out a slot it has taken already)."""
        for copy in self._copies():
            copy.drop(copy.fade if self.speaking and fade else 0)
        if fade:
            self._interrupted = self.speaking
        else:  # the utterance ended in the slot already taken
            self.speaking = self._interrupted = False

    def clear(self) -> None:
        for copy in self._copies():
            copy.drop()

    def _flush(self) -> None:
        for copy in self._copies():
            copy.flush()

    def slot_bounds(self, n: int, rate: int) -> tuple[int, int]:
        """Frame ``n``'s samples ``[a, b)`` on the timeline at ``rate``."""
        return round(n * rate / self.fps), round((n + 1) * rate / self.fps)

    def slot(self, n: int, now: float) -> Slot:
        """Frame ``n``'s sound (frames in order, one call each)."""
        a, b = self.slot_bounds(n, MODEL_RATE)
        size = b - a
        ra, rb = self.slot_bounds(n, self.rate)
        model, sound = self._model, self._sound
        pend = model.queue
        paused = now - self.last_push >= START_WAIT_S
        started = underrun = False
        if not self.speaking and pend.size == 0 and now - self.last_push > START_WAIT_S:
            self._flush()
            if pend.size == 0 and sound is not model:
                sound.queue.clear()  # nothing of the model's to go with it
        if not self.speaking and pend.size and (pend.size >= LOOKAHEAD_SAMPLES or paused):
            self.speaking = started = True
            for copy in self._copies():
                copy.fade_in()
        speaking = self.speaking
        audio = np.zeros(size, np.float32)
        out = audio if sound is model else np.zeros(rb - ra, np.float32)
        if speaking:
            if pend.size < size and paused:
                self._flush()  # the pusher paused: the resamplers' last few ms belong to this utterance
            got = pend.take(size)
            audio[: len(got)] = got
            end = pend.size == 0
            if end:  # the utterance ends here: fade its last samples out
                fade_out(audio, len(got), model.fade)
            if sound is not model:
                if end:
                    sound.flush()  # whatever remains of the utterance, and nothing after it
                took = sound.queue.take(len(out))
                out[: len(took)] = took
                if end:
                    sound.queue.clear()
                    fade_out(out, len(took), sound.fade)
            if end:
                underrun = not self._interrupted and now - self.last_push < 2.0 / self.fps
                self.speaking = self._interrupted = False
        hist = np.concatenate([self._history, audio])[-len(self._history) :]
        self._history = hist
        # the mel window of frame n: from its start column, 600 samples of history before it
        m = int(n * features.MEL_PER_SECOND / self.fps) * features.HOP
        back = b - (m - 600)
        ahead = SEGMENT - back
        segment = np.zeros(SEGMENT, np.float32)
        segment[:back] = hist[-back:]
        nxt = pend.peek(ahead)
        segment[back : back + len(nxt)] = nxt
        return Slot(audio, out, speaking, segment, started, underrun)
