"""Playable pieces of a video while it is being made.

The MP4 writer (:class:`~lipsync.media.encode.VideoWriter`) can write, from the
same encode, a stream of MPEG-TS segments beside the MP4: ffmpeg's ``tee``
muxer hands every packet to both the MP4 muxer and the ``segment`` muxer, so
the frames are encoded once and the segments hold exactly the MP4's packets.
Keyframes fall every :data:`~lipsync.media.encode.KEYFRAME_S` seconds in every
MP4 (streamed or not), and the segment muxer cuts at each one, so every segment
starts on a keyframe, carries its own codec headers and plays on its own; the
audio is one AAC stream cut with the video, so it runs on across the joins.

The segment muxer appends a line to its list file when a segment is finished
(its successor has begun, or ffmpeg has ended); :class:`SegmentOutput` watches
that list on a thread and hands each finished :class:`Segment` to a callback.
:class:`SegmentStream` turns a callback-driven job into an iterator.
"""

from __future__ import annotations

import contextvars
import logging
import queue
import re
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

__all__ = ["Segment", "SegmentOutput", "SegmentStream", "tee_quote"]

log = logging.getLogger("lipsync")

#: how often the watcher looks at the segment list (seconds)
POLL_S = 0.04
_NAME = re.compile(r"^seg_\d{5}\.ts$")


@dataclass(frozen=True)
class Segment:
    """One finished piece of the video: an MPEG-TS file (H.264 + AAC) that plays on its own."""

    index: int  #: 0 for the first
    path: Path
    start_s: float  #: where it starts in the video, in seconds
    end_s: float
    frames: int  #: video frames in it

    @property
    def duration_s(self) -> float:
        return self.end_s - self.start_s


def tee_quote(text: str) -> str:
    """Quote ``text`` for one level of ffmpeg's option parsing (``av_get_token``): literally, in single quotes."""
    return "'" + text.replace("'", "'\\''") + "'"


class SegmentOutput:
    """Where the writer puts segments, and the watcher that reports the finished ones.

    Args:
        folder: an empty folder for the segment files and their list (the
            caller removes it; the segments in it are valid until then).
        on_segment: called with each finished :class:`Segment`, in order, on
            the watcher thread (so a slow callback never holds up the encoder).
            The callback may move the file elsewhere to keep it. If it raises,
            no more segments are reported and the error is raised again when
            the writer closes.
        fps: the video's frame rate.
        gop: frames between keyframes (each segment holds this many, the last fewer).
    """

    def __init__(self, folder: str | Path, on_segment: Callable[[Segment], Any], *, fps: float, gop: int):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.on_segment = on_segment
        self.fps = float(fps)
        self.gop = int(gop)
        self.list_file = self.folder / "segments.csv"
        self.delivered = 0
        self._stop = threading.Event()
        self._lock = threading.Lock()  # one delivery at a time: the watcher's, or the final one
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None

    @property
    def seconds(self) -> float:
        return self.gop / self.fps

    def tee_slave(self) -> str:
        """The ``tee`` muxer's entry for the segment stream (quoted for the tee's own parsing).

        The cut happens at the first keyframe at or after each multiple of the
        segment length; half a frame of tolerance keeps rounding from skipping one.
        """
        opts = {
            "f": "segment",
            "segment_format": "mpegts",
            "segment_time": f"{self.seconds:.6f}",
            "segment_time_delta": f"{0.5 / self.fps:.6f}",
            "segment_list": tee_quote(str(self.list_file.resolve())),
            "segment_list_type": "csv",
            "reset_timestamps": "0",
            # SPS/PPS in front of each keyframe: every segment decodes on its own
            "bsfs/v": "h264_mp4toannexb",
        }
        spec = "[" + ":".join(f"{k}={v}" for k, v in opts.items()) + "]"
        folder = str(self.folder.resolve()).replace("%", "%%")  # the file name is a printf pattern
        return spec + folder + "/seg_%05d.ts"

    # -- watching ------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._watch, name="lipsync-segments", daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        while not self._stop.wait(POLL_S):
            self._poll(total_frames=None)

    def _finished_names(self) -> list[str]:
        try:
            text = self.list_file.read_text("utf-8", errors="replace")
        except FileNotFoundError:
            return []
        names = []
        for line in text.splitlines(keepends=True):
            if not line.endswith("\n"):
                break  # a line still being written
            name = line.split(",", 1)[0].strip()
            if _NAME.match(name):
                names.append(name)
        return names

    def _poll(self, total_frames: int | None) -> None:
        with self._lock:
            if self._error is not None:
                return
            names = self._finished_names()
            for name in names[self.delivered :]:
                i = self.delivered
                start = i * self.gop
                end = (i + 1) * self.gop
                if total_frames is not None and i == len(names) - 1:
                    end = total_frames  # the last segment ends with the video
                seg = Segment(i, self.folder / name, start / self.fps, end / self.fps, end - start)
                try:
                    self.on_segment(seg)
                except BaseException as e:  # noqa: BLE001 - raised again in finish()
                    log.warning("the segment callback failed: %s", e)
                    self._error = e
                    return
                self.delivered += 1

    def finish(self, total_frames: int) -> None:
        """After ffmpeg has exited: report the segments still unreported (the last one among them)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        self._poll(total_frames=total_frames)
        if self._error is not None:
            raise self._error

    def stop(self) -> None:
        """Stop watching (the run failed or was cancelled); nothing more is reported."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=30)


_END = object()


class SegmentStream:
    """Iterate over the segments of a video while a worker thread makes it.

    ``job(on_segment, cancel)`` is run on a thread (in a copy of the caller's
    context, so progress callbacks that rely on context variables keep
    working); each segment it reports is moved into this stream's folder and
    yielded. When the iteration ends, :attr:`result` holds what the job
    returned; an error in the job is raised from the iteration.

    Leaving the iteration early (``break``, an error, closing the generator),
    or calling :meth:`close`, sets ``cancel``: the job stops at its next check
    and cleans up. The folder is a temporary one removed by :meth:`close`,
    unless ``folder`` was given: then the segments are handed over and kept.

    Args:
        job: makes the video; called as ``job(on_segment, cancel)``.
        folder: keep the segments here (created if needed). The caller then owns
            the folder and removes it once whoever reads the segments is done
            with them (a web server may still be serving the last one after the
            iteration has ended); without it, the segments go when the stream closes.
        cancel: an event the caller may also set to stop the job.
    """

    def __init__(
        self,
        job: Callable[[Callable[[Segment], None], threading.Event], Any],
        *,
        folder: str | Path | None = None,
        cancel: threading.Event | None = None,
    ):
        self._job = job
        self.cancel = cancel if cancel is not None else threading.Event()
        self._keep = folder is not None
        self.folder: Path | None = Path(folder) if folder is not None else None
        self._queue: queue.Queue = queue.Queue()
        self._thread: threading.Thread | None = None
        self._result: Any = _END
        self._error: BaseException | None = None
        #: set when the job has ended (made the video, failed, or stopped after a cancel)
        self.done = threading.Event()
        self.segments: list[Segment] = []

    @property
    def result(self) -> Any:
        """What the job returned (available once the iteration has finished)."""
        if self._result is _END:
            raise RuntimeError("The stream has not finished yet.")
        return self._result

    def _start(self) -> None:
        if self.folder is None:
            self.folder = Path(tempfile.mkdtemp(prefix="lipsync-segments-"))
        else:
            self.folder.mkdir(parents=True, exist_ok=True)
        ctx = contextvars.copy_context()
        self._thread = threading.Thread(target=ctx.run, args=(self._work,), name="lipsync-stream", daemon=True)
        self._thread.start()

    def _deliver(self, seg: Segment) -> None:
        assert self.folder is not None
        dest = self.folder / seg.path.name
        shutil.move(str(seg.path), dest)  # handed over: the writer's folder goes at the end of the run
        seg = replace(seg, path=dest)
        self.segments.append(seg)
        self._queue.put(seg)

    def _work(self) -> None:
        try:
            self._result = self._job(self._deliver, self.cancel)
        except BaseException as e:  # noqa: BLE001 - raised by the iteration
            self._error = e
        finally:
            # the folder stays until close(): the consumer may still be reading the last segment
            self._queue.put(_END)
            self.done.set()

    def _remove_folder(self) -> None:
        if self.folder is not None and not self._keep:
            shutil.rmtree(self.folder, ignore_errors=True)

    def __iter__(self) -> Iterator[Segment]:
        if self._thread is not None:
            raise RuntimeError("A SegmentStream can be iterated only once.")
        self._start()
        try:
            while True:
                item = self._queue.get()
                if item is _END:
                    break
                yield item
            assert self._thread is not None
            self._thread.join()
            if self._error is not None:
                raise self._error
        finally:
            self.close()

    def close(self, timeout: float = 60.0) -> None:
        """Stop the job if it is still running, wait for it, and remove the temporary folder."""
        if self._thread is not None and not self.done.is_set():
            self.cancel.set()
            self._thread.join(timeout=timeout)
        self._remove_folder()

    def __enter__(self) -> "SegmentStream":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
