"""A driving video as a live session's picture: its frames looped at the session's pace.

``engine.live(video="me.mp4")`` scans the video once, as a clip does
(:func:`lipsync.sources.scan_video`: decoded at the session's frame rate into a
JPEG spool on disk, the face followed frame by frame). The session then shows
source frame :func:`~lipsync.sources.loop_index` ``(n)`` at frame ``n``, back and
forth (``pingpong``, no jump at the turns) or from the start again (``loop``),
for as long as it runs.

* **At rest** a frame is the video's own picture: the person's own mouth,
  eyes and head movement. No network runs and nothing is pasted.
* **Speaking**, each frame's own face goes through the network (the face
  encoder runs per frame, as in a clip made from a video) and the mouth is
  pasted into that frame's face box, eased in and out by the session's mouth
  weight, and faded over two frames where the face leaves or enters the picture.
  A frame without a face keeps its own pixels.
* There is no added head motion and there are no added blinks: the video has its own.
* **Framing** (``framing="call"``, the default): one crop for the whole video, as
  a photo's (:func:`~lipsync.live.photo.call_crop`) around the median of its face
  boxes, grown and slid where needed so that every frame's face stays inside
  (:func:`call_framing`). It is cut from the scanned frames (at the session's
  ``max_side``), so a small face comes out at the resolution it had there.

A one-frame video is a photo (the session opens as a photo session). Memory
holds a frame or two whatever the video's length; the spool on disk goes when
the session closes.
"""

from __future__ import annotations

import numpy as np

from ..blend import draw_label, paste_mouth
from ..face import FaceBox, face_crop
from ..sources import VideoSource, edge_fade, loop_index
from .photo import call_crop

__all__ = ["VideoFace", "call_framing"]


def call_framing(source: VideoSource) -> tuple[int, int, int, int] | None:
    """(top, left, height, width) of a video call's framing for the whole video, or None (as it is).

    The photo's framing (:func:`~lipsync.live.photo.call_crop`) around the median face
    box, grown (same aspect) and slid so that it holds the union of every frame's face box.
    """
    found = source.boxes[source.found].astype(np.float64)
    if not len(found):
        return None
    h, w = source.height, source.width
    crop = call_crop((h, w), FaceBox(*(int(round(v)) for v in np.median(found, axis=0))))
    if crop is None:
        return None
    top, left, ch, cw = crop
    uy1, uy2, ux1, ux2 = found[:, 0].min(), found[:, 1].max(), found[:, 2].min(), found[:, 3].max()
    grow = max((uy2 - uy1) / ch, (ux2 - ux1) / cw)
    if grow > 1:  # the faces move more than the framing holds: a wider framing, centred on where they go
        ch, cw = min(h, round(ch * grow)), min(w, round(cw * grow))
        top, left = round((uy1 + uy2 - ch) / 2), round((ux1 + ux2 - cw) / 2)
    else:  # slide it (as little as needed) over every face
        top = min(max(top, round(uy2) - ch), round(uy1))
        left = min(max(left, round(ux2) - cw), round(ux1))
    top, left = min(max(0, top), h - ch), min(max(0, left), w - cw)
    return None if (ch, cw) == (h, w) else (int(top), int(left), int(ch), int(cw))


class VideoFace:
    """The picture side of a live session driven by a video (the photo's is :class:`~lipsync.live.photo.PhotoFace`).

    Both give ``generator``, ``rest`` (the mouth at rest; None here: the video keeps
    its own), ``width``/``height``, ``face_for(n)`` (frame ``n``'s face made ready for
    the network, or None where the frame shows none) and ``render(n, mouth, pose,
    weight, closure)``.

    Args:
        source: the scanned video (its spool stays open until :meth:`close`).
        loop: ``pingpong`` or ``loop``.
        label: draw the visible label (clear of every face box of the video).
        enhance: a :class:`~lipsync.live.look.MouthEnhance` or None.
        scale: the working size relative to the spool's frames (a slow machine's
            smaller size; 1 = as scanned).
        crop: (top, left, height, width) of the spool's frames that the picture shows
            (:func:`call_framing`); None: the whole frame.
    """

    #: each network frame's face is encoded (``face_for``, ``prefetch``): on a CPU that work runs on the
    #: network's threads, and admission counts its wall time
    encodes = True

    def __init__(self, generator, source: VideoSource, *, loop: str = "pingpong", label: bool = True,
                 enhance=None, scale: float = 1.0, crop: tuple[int, int, int, int] | None = None):
        self.generator = generator
        self.source = source
        self.loop = loop
        self.enhance = enhance
        self.rest = None
        self.scale = float(scale)
        self.crop = crop
        top, left, ch, cw = crop if crop is not None else (0, 0, source.height, source.width)
        if crop is not None:
            ch, cw = ch // 2 * 2, cw // 2 * 2  # even sides, as every picture
            self.crop = (top, left, ch, cw)
        self.height = max(2, int(ch * self.scale)) // 2 * 2 if self.scale != 1 else ch
        self.width = max(2, int(cw * self.scale)) // 2 * 2 if self.scale != 1 else cw
        self.face_height = source.box.height * self.height / ch
        sy, sx = self.height / ch, self.width / cw
        b = (source.boxes.astype(np.float64) - np.array([top, top, left, left])) * np.array([sy, sy, sx, sx])
        boxes = np.round(b).astype(np.int32)
        boxes[:, :2] = np.clip(boxes[:, :2], 0, self.height)
        boxes[:, 2:] = np.clip(boxes[:, 2:], 0, self.width)
        boxes[:, 1] = np.maximum(boxes[:, 1], boxes[:, 0] + 8)  # a box keeps some size when shrunk
        boxes[:, 3] = np.maximum(boxes[:, 3], boxes[:, 2] + 8)
        self.boxes = boxes
        self.found = source.found
        self.fade = edge_fade(source.found)  # the mouth fades where the face leaves or enters
        avoid = source.label_avoid()
        if avoid is not None and (self.scale != 1 or crop is not None):
            avoid = FaceBox(max(0, int((avoid.y1 - top) * sy)), int((avoid.y2 - top) * sy),
                            max(0, int((avoid.x1 - left) * sx)), int((avoid.x2 - left) * sx))
        self._avoid = avoid
        blank = np.zeros((self.height, self.width, 3), np.uint8)
        self._label = label and not np.array_equal(draw_label(blank, avoid=avoid), blank)  # room beside the face?
        self._frames: dict[int, np.ndarray] = {}  # the last two source frames read (this frame's, the next's)
        self._ready: tuple[int, object] | None = None  # (session frame, its face made ready) from prefetch()

    def index(self, n: int) -> int:
        """The source frame that session frame ``n`` shows."""
        return loop_index(n, self.source.frames, self.loop)

    def _read(self, s: int) -> np.ndarray:
        rgb = self._frames.get(s)
        if rgb is None:
            rgb = self.source.spool.read(s)
            if self.crop is not None:
                top, left, ch, cw = self.crop
                rgb = np.ascontiguousarray(rgb[top : top + ch, left : left + cw])
            if self.scale != 1:
                import cv2

                rgb = cv2.resize(rgb, (self.width, self.height), interpolation=cv2.INTER_AREA)
            while len(self._frames) >= 2:
                del self._frames[next(iter(self._frames))]
            self._frames[s] = rgb
        return rgb

    def box(self, s: int) -> FaceBox | None:
        return FaceBox(*(int(v) for v in self.boxes[s])) if self.found[s] else None

    def face_for(self, n: int):
        """Frame ``n``'s own face made ready for one forward, or None where it shows no face."""
        if self._ready is not None and self._ready[0] == n:
            face, self._ready = self._ready[1], None
            return face
        s = self.index(n)
        box = self.box(s)
        if box is None:
            return None
        return self.generator.prepare_face(face_crop(self._read(s), box), still=False)

    def prefetch(self, n: int) -> None:
        """Encode frame ``n``'s face now, for its forward later: at frame step 2 the frame between
        two network frames does this half of the next one's work, so no single frame pays for both."""
        self._ready = (n, self.face_for(n))

    def render(self, n: int, mouth: np.ndarray | None, pose=None, weight: float = 1.0,
               closure: float = 0.0) -> np.ndarray:
        """Frame ``n``: the video's picture with ``mouth`` pasted in its face box at ``weight``."""
        s = self.index(n)
        frame = self._read(s).copy()
        strength = float(weight) * float(self.fade[s])
        if mouth is not None and strength > 0:
            if self.enhance is not None:
                self.enhance.strength = strength
            paste_mouth(frame, self.box(s), mouth, strength, self.enhance)
        if self._label:
            frame = draw_label(frame, avoid=self._avoid)
        return frame

    def shrunk(self, factor: float) -> "VideoFace":
        """The same video at ``factor`` times this working size (the same spool)."""
        return VideoFace(self.generator, self.source, loop=self.loop, label=self._label, enhance=self.enhance,
                         scale=self.scale * factor, crop=self.crop)

    def close(self) -> None:
        """Remove the spool (the session does this when it closes)."""
        self.source.close()
