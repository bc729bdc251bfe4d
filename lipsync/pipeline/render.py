"""Animate, encode and publish: the network's mouths pasted into the frames, streamed to ffmpeg.

:func:`render` owns the output: the writer (a context manager, so any error
kills ffmpeg and removes the part files), the queue that overlaps the network
with the paste and the encoder (:func:`stream_frames`), and publishing: the
MP4 and its captions are renamed into place together, only when the MP4 is
complete, so a failed run leaves the user's earlier files as they were.

Burned captions, the captions a player shows and the visible label share one
keep-clear plan (:meth:`Prepared.keep_clear`): the label avoids the face region
(on a video, every face box used), and captions avoid both.
"""

from __future__ import annotations

import queue
import shutil
import tempfile
import threading
import time
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from ..errors import LipSyncError
from ..media.captions import CaptionBurner, Cue, cue_settings, cues_for, placed, to_vtt
from ..media.encode import VideoWriter, keyframe_interval, write_wav
from ..media.segments import SegmentOutput
from .prepare import Prepared
from .progress import Clock, Progress, no_progress

__all__ = ["render", "stream_frames", "cues", "captions_path"]


def cues(parts: Prepared) -> list[Cue]:
    """The captions of a prepared request: its spoken phrases as cues, within the video's length,
    with WebVTT settings that keep a player's captions off the visible label."""
    found = cues_for(parts.speech.phrases, duration_s=len(parts.mels) / parts.request.options.fps)
    _face, label = parts.keep_clear()
    return placed(found, cue_settings((parts.source.height, parts.source.width), label))


def captions_path(parts: Prepared) -> Path | None:
    """Where the WebVTT captions go (beside the MP4), or None when none are asked for."""
    return parts.request.out.with_suffix(".vtt") if parts.request.options.captions else None


def render(
    parts: Prepared,
    mouths: Iterable[np.ndarray],
    progress: Progress | None = None,
    clock: Clock | None = None,
    *,
    on_segment=None,
    on_captions=None,
) -> Path:
    """Encode ``parts``'s clip with these mouths and publish the MP4 (and its captions).

    Args:
        mouths: mouth crops in frame order, batch by batch ((B, 96, 96, 3) BGR,
            uint8 or floats in [0, 1]); a generator is consumed on a worker thread.
        on_segment: also cut the encode into segments (see :class:`SegmentOutput`).
        on_captions: with ``captions=True``, called with the cues before the first
            frame is made (a live preview can show them from the first segment;
            the WebVTT file itself is published only with the MP4).

    Returns the MP4's path. On any error nothing new is left at the MP4's or the
    captions' path, and no ffmpeg process remains.
    """
    report = progress or no_progress
    clock = clock or Clock()
    opts = parts.request.options
    out = parts.request.out
    h, w = parts.source.height, parts.source.width
    face, label = parts.keep_clear()
    all_cues = cues(parts) if opts.captions or opts.burn_captions else []
    vtt = captions_path(parts)
    if vtt is not None and on_captions is not None:
        on_captions(all_cues)
    work = Path(tempfile.mkdtemp(prefix="lipsync-"))
    try:
        wav_path = write_wav(work / "speech.wav", parts.speech.samples, parts.speech.sample_rate)
        meta = {"comment": "AI-generated lip-sync video", "encoder_tool": "lipsync", **opts.metadata}
        segments = None
        if on_segment is not None:
            segments = SegmentOutput(work / "segments", on_segment, fps=opts.fps, gop=keyframe_interval(opts.fps))
        with VideoWriter(
            out, w, h, opts.fps, wav_path,
            crf=opts.crf, preset=opts.preset, threads=opts.encoder_threads, metadata=meta,
            timeout=opts.timeout_s, segments=segments, sidecars={vtt: to_vtt(all_cues)} if vtt else None,
        ) as writer:
            sink = writer
            if opts.burn_captions:
                sink = CaptionBurner(writer, all_cues, opts.fps, (h, w, 3), avoid=face,
                                     keep_clear=[label] if label else [])
            stream_frames(mouths, parts.source.compositor(parts), sink, report, clock, len(parts.mels))
            clock.restart()
            report("encode", 0, 1)
            writer.close()
            clock.lap("encode")
            report("encode", 1, 1)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return out


class _Stop(Exception):
    pass


def stream_frames(mouths: Iterable[np.ndarray], compositor, sink, report: Progress, clock: Clock, n: int) -> None:
    """Mouths from a worker thread, pasted and written on this one.

    A queue of two batches bounds memory; an error on either side stops both
    and is raised here (the caller's writer, a context manager, then aborts).
    Adds the stage "lipsync" to ``clock`` and the time the worker spent
    waiting for the network to ``clock.network_busy_s``; and its parts,
    ``lipsync.network`` (that wait), ``lipsync.paste`` (reading each frame back,
    pasting the mouth, motion, blinks) and ``lipsync.write`` (handing it to the
    encoder, captions burned in).
    """
    q: queue.Queue = queue.Queue(maxsize=2)
    stop = threading.Event()
    failure: list[BaseException] = []
    busy = [0.0]

    def produce() -> None:
        it = iter(mouths)
        try:
            while True:
                t0 = time.perf_counter()
                batch = next(it, None)
                busy[0] += time.perf_counter() - t0
                if batch is None:
                    break
                while True:
                    if stop.is_set():
                        raise _Stop
                    try:
                        q.put(batch, timeout=0.1)
                        break
                    except queue.Full:
                        continue
        except _Stop:
            return
        except BaseException as e:  # noqa: BLE001 - handed to the consumer
            failure.append(e)
        finally:
            close = getattr(it, "close", None)
            if close is not None:
                close()  # releases the model lock at once
            while True:
                try:
                    q.put(None, timeout=0.1)
                    break
                except queue.Full:
                    if stop.is_set():
                        break

    worker = threading.Thread(target=produce, name="lipsync-infer", daemon=True)
    t_start = time.perf_counter()
    worker.start()
    done = 0
    frame = np.empty_like(compositor.image)
    paste_s = write_s = 0.0
    clock_now = time.perf_counter
    try:
        report("lipsync", 0, n)
        while True:
            batch = q.get()
            if batch is None:
                break
            for pred in batch:
                t0 = clock_now()
                out = compositor.paste(pred, out=frame)
                t1 = clock_now()
                sink.write(out)
                paste_s += t1 - t0
                write_s += clock_now() - t1
            done += len(batch)
            report("lipsync", done, n)
        if failure:
            raise failure[0]
        if done != n:
            raise LipSyncError(f"Only {done} of {n} frames were produced.")
    except BaseException:
        stop.set()
        sink.abort()  # stop the encoder at once; the writer's owner would abort it anyway
        raise
    finally:
        stop.set()
        worker.join(timeout=60)
        clock.timings["lipsync"] = time.perf_counter() - t_start
        clock.network_busy_s += busy[0]
        # where the stage went (the network ran beside the other two, on its own thread)
        clock.timings["lipsync.network"] = round(busy[0], 4)
        clock.timings["lipsync.paste"] = round(paste_s, 4)
        clock.timings["lipsync.write"] = round(write_s, 4)
