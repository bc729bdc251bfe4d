"""A photo as a live session's picture: the face encoded once, a mouth per frame.

**The picture side** (:class:`PhotoFace`): the face encoded once for the network,
the mouth at rest predicted once and pasted once, each frame's mouth pasted
(eased from rest by the speech weight, enhanced by it), the eyelids closed for a
blink, the head moved by the session's sway. :class:`~lipsync.live.video.VideoFace`
is its counterpart for a driving video: the session holds either and does not
ask which.
"""

from __future__ import annotations

import numpy as np

from ..face import FaceBox
from .audio import silent_mels

__all__ = ["PhotoFace"]


class PhotoFace:
    """The picture side of a live session from a photo, at one working size.

    Args:
        generator: the engine's network.
        plain: the working picture (RGB uint8), without the label.
        box: its face box.
        motion: head motion, 0 (still) to 1 (0: no warp at all).
        label: draw the visible label (clear of the face).
        enhance: a :class:`~lipsync.live.look.MouthEnhance` or None.
        eyes: the photo's eyelids (:class:`~lipsync.face.landmarks.EyeLandmarks`) or None: no blinks.

    ``eyes`` is None afterwards where the eyelids give no blink (no open eyes).
    """

    def __init__(self, generator, plain: np.ndarray, box: FaceBox, *, motion: float = 0.0, label: bool = True,
                 enhance=None, eyes=None):
        from ..blend import Blender, draw_label
        from ..blink import Blinks
        from ..face import face_crop
        from ..motion import HeadWarp

        rgb = draw_label(plain, avoid=box) if label else plain
        self.generator = generator
        self.plain, self.box, self.label, self.motion = plain, box, label, float(motion)
        self.face = generator.prepare_face(face_crop(plain, box))
        self.rest = generator.forward(self.face, silent_mels(1))[0]
        self.enhance = enhance
        self.blender = Blender(rgb, box, enhance=enhance)
        self.rest_image = Blender(rgb, box).paste(self.rest)  # the rest picture, pasted once
        self.blinks = None
        if eyes is not None:
            blinks = Blinks(eyes.right, eyes.left, np.zeros(0, np.float32), rgb.shape)
            self.blinks = blinks if blinks.eyes else None
        self.eyes = eyes if self.blinks is not None else None
        self.warp = None
        if self.motion > 0:
            keep = np.any(rgb != plain, axis=2)
            self.warp = HeadWarp(rgb.shape, box, keep=keep if keep.any() else None)
        self.height, self.width = rgb.shape[:2]
        self.face_height = box.height

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

    def shrunk(self, factor: float) -> PhotoFace:
        """The same photo at ``factor`` times this working size (a slow machine's smaller size)."""
        import cv2

        from .look import scale_eyes

        h, w = self.plain.shape[:2]
        nw, nh = max(2, int(w * factor)) // 2 * 2, max(2, int(h * factor)) // 2 * 2
        plain = cv2.resize(self.plain, (nw, nh), interpolation=cv2.INTER_AREA)
        b = self.box
        sy, sx = nh / h, nw / w
        box = FaceBox(int(b.y1 * sy), max(int(b.y2 * sy), int(b.y1 * sy) + 8), int(b.x1 * sx),
                      max(int(b.x2 * sx), int(b.x1 * sx) + 8))
        eyes = scale_eyes(self.eyes, sx, sy) if self.eyes is not None else None
        return PhotoFace(self.generator, plain, box, motion=self.motion, label=self.label, enhance=self.enhance,
                         eyes=eyes)

    def close(self) -> None:
        pass
