"""A photo as a live session's picture: framed as a video call, the face encoded once, a mouth per frame.

**Framing** (:func:`frame_photo`). By default (``framing="call"``) a live picture
frames the face the way a video call does: head and shoulders, the face box
about a third of the picture's height (:data:`FACE_SHARE`), centred on the face
across and a little above the middle (:data:`FACE_CENTRE`: room for the
shoulders), with the photo's own aspect. The crop is cut from the photo at its
full resolution and only then scaled down to the session's ``max_side`` (never
up), so a football photo with a small face keeps what detail it has. The crop
never leaves the picture: near an edge it slides inward (no bars), so the face
may sit off centre there. A photo framed as tight already or tighter (face box
at least a third of its height) is not cropped, and ``framing="full"`` keeps the
whole picture. The face is found on the photo at the working size; a face too
small to find there is looked for at :data:`DETECT_SIDE`. Its box is carried into
the crop by the same geometry (not detected again), and the eyelids are found on
the framed picture.

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

__all__ = ["DETECT_SIDE", "FACE_CENTRE", "FACE_SHARE", "FRAMINGS", "PhotoFace", "call_crop", "frame_photo"]

FRAMINGS = ("call", "full")  #: a live picture's framing: as a video call (head and shoulders), or the whole picture
FACE_SHARE = 1 / 3  #: the face box's share of the picture's height in a video call's framing
FACE_CENTRE = 0.4  #: the face box's centre, as a share of the picture's height from its top
DETECT_SIDE = 1920  #: the long side a face too small to find at the working size is looked for at


def call_crop(shape: tuple[int, ...], box: FaceBox) -> tuple[int, int, int, int] | None:
    """(top, left, height, width) of the video call's framing in a picture of ``shape`` whose face is ``box``.

    The crop keeps the picture's aspect, puts the face box at :data:`FACE_SHARE` of its
    height, centred across and its centre at :data:`FACE_CENTRE` from the top, slid
    back inside the picture where it would leave it; it is at least 64 pixels on
    each side where the picture is. None when the picture is framed as tight already.
    """
    from ..media.images import MIN_SIDE

    h, w = shape[:2]
    if box.height >= FACE_SHARE * h:
        return None
    ch = box.height / FACE_SHARE
    cw = ch * w / h
    grow = max(1.0, MIN_SIDE / ch, MIN_SIDE / cw)
    ch, cw = min(float(h), ch * grow), min(float(w), cw * grow)
    top = min(max((box.y1 + box.y2) / 2 - FACE_CENTRE * ch, 0.0), h - ch)
    left = min(max((box.x1 + box.x2) / 2 - cw / 2, 0.0), w - cw)
    ch_i, cw_i = max(1, round(ch)), max(1, round(cw))
    top_i, left_i = min(max(0, round(top)), h - ch_i), min(max(0, round(left)), w - cw_i)
    return top_i, left_i, ch_i, cw_i


def _scaled(box: FaceBox, sy: float, sx: float, dy: float = 0.0, dx: float = 0.0) -> tuple[int, int, int, int]:
    """(x1, y1, x2, y2) of ``box`` moved by (-dy, -dx), then scaled by (sy, sx)."""
    return (round((box.x1 - dx) * sx), round((box.y1 - dy) * sy), round((box.x2 - dx) * sx), round((box.y2 - dy) * sy))


def frame_photo(image, detector, *, max_side: int, box=None, framing: str = "call") -> tuple[np.ndarray, FaceBox]:
    """The working picture of a photo and its face box (see the module's docstring).

    Args:
        image: a path, bytes, PIL image or (H, W, 3) uint8 RGB array.
        detector: the engine's face detector.
        max_side: the working picture's long side (never scaled up).
        box: the face box (y1, y2, x1, x2) in the photo scaled to ``max_side``, instead of detecting it.
        framing: ``call`` or ``full``.

    Returns:
        ((H, W, 3) uint8 RGB, both sides even; its :class:`~lipsync.face.FaceBox`).

    Raises:
        ImageError, NoFaceError: an unusable photo, no face.
    """
    from ..errors import NoFaceError
    from ..face import find_face, pad_box
    from ..media.images import load_image

    plain = load_image(image, max_side=max_side)
    face: FaceBox | None
    if box is not None:
        y1, y2, x1, x2 = box
        face = pad_box((x1, y1, x2, y2), (0, 0, 0, 0), plain.shape)
    elif framing == "full":
        face = find_face(plain, detector)
    else:
        try:
            face = find_face(plain, detector)
        except NoFaceError:
            face = None  # perhaps too small to find at this size: look at more pixels
    if framing == "full" or face is not None and face.height >= FACE_SHARE * plain.shape[0]:
        return plain, face  # as it is (bit for bit a session without framing)
    full = load_image(image, max_side=0)
    H, W = full.shape[:2]
    if face is not None:
        at = pad_box(_scaled(face, H / plain.shape[0], W / plain.shape[1]), (0, 0, 0, 0), full.shape)
    else:
        seek = load_image(full, max_side=DETECT_SIDE) if max(H, W) > DETECT_SIDE else full
        found = find_face(seek, detector)  # NoFaceError: none at the larger size either
        at = pad_box(_scaled(found, H / seek.shape[0], W / seek.shape[1]), (0, 0, 0, 0), full.shape)
    crop = call_crop(full.shape, at)
    if crop is None:  # framed tight enough at the larger size: the whole picture, the box carried over
        return plain, pad_box(_scaled(at, plain.shape[0] / H, plain.shape[1] / W), (0, 0, 0, 0), plain.shape)
    top, left, ch, cw = crop
    region = np.ascontiguousarray(full[top : top + ch, left : left + cw])
    s = min(1.0, max_side / max(ch, cw)) if max_side else 1.0
    if s < 1.0:
        import cv2

        region = cv2.resize(region, (max(2, round(cw * s)), max(2, round(ch * s))), interpolation=cv2.INTER_AREA)
    sy, sx = region.shape[0] / ch, region.shape[1] / cw
    h, w = region.shape[:2]
    picture = np.ascontiguousarray(region[: h - h % 2, : w - w % 2])
    return picture, pad_box(_scaled(at, sy, sx, top, left), (0, 0, 0, 0), picture.shape)


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

    ``eyes`` is None afterwards where the eyelids give no blink (no open eyes, or all behind dark lenses).
    """

    encodes = False  #: its face is encoded once, not per network frame (see :attr:`VideoFace.encodes`)

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
            blinks = Blinks(eyes.right, eyes.left, np.zeros(0, np.float32), rgb.shape).prepare(rgb)
            self.blinks = blinks if blinks.eyes else None  # none open, or all behind dark lenses
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
