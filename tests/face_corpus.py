"""A corpus of portraits with known face boxes, made from two public-domain photos.

Every case is an (H, W, 3) uint8 RGB array as the pipeline sees it (it went
through ``lipsync.load_image``, so frames over 1280 pixels are scaled down and
EXIF orientation is applied) and the ground-truth box of the face that
``find_face(..., face_index=0)`` must return: the largest face, from about the
top of the forehead to the chin and from cheek to cheek, as (x1, y1, x2, y2).
Face-free cases have ``truth=None``: the finder must raise ``NoFaceError``.

Sources (both works of the US federal government, public domain):
  assets/astronaut.jpg                NASA portrait of Eileen Collins, 512x512
  tests/data/faces/grace_hopper.jpg   US Navy portrait of Grace Hopper, 512x600
                                      (as shipped in matplotlib's sample data)

The ground-truth boxes of the two originals were marked by hand; every
transform moves them with the pixels.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from lipsync.media.images import load_image

HERE = Path(__file__).resolve().parent
ASTRONAUT = HERE.parent / "assets" / "astronaut.jpg"
HOPPER = HERE / "data" / "faces" / "grace_hopper.jpg"

#: a returned face counts as found when its box overlaps the truth by at least this IoU
HIT_IOU = 0.4

Box = tuple[float, float, float, float]  # x1, y1, x2, y2


@dataclass(frozen=True)
class Portrait:
    rgb: np.ndarray
    face: Box  # hand-marked face box
    eyes: tuple[tuple[float, float], tuple[float, float]]  # (x, y) of the two pupils


@dataclass(frozen=True)
class Case:
    name: str
    category: str
    rgb: np.ndarray
    truth: Box | None  # None: no face in the picture


def iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def astronaut() -> Portrait:
    rgb = np.asarray(Image.open(ASTRONAUT).convert("RGB"))
    return Portrait(rgb, (176, 66, 272, 172), ((202, 100), (247, 100)))


def hopper() -> Portrait:
    rgb = np.asarray(Image.open(HOPPER).convert("RGB"))
    return Portrait(rgb, (158, 145, 362, 332), ((215, 200), (305, 200)))


# ---------------------------------------------------------------- transforms


def _affine_points(m: np.ndarray, pts) -> np.ndarray:
    pts = np.asarray(pts, np.float64).reshape(-1, 2)
    if m.shape == (2, 3):
        return pts @ m[:, :2].T + m[:, 2]
    h = np.c_[pts, np.ones(len(pts))] @ m.T
    return h[:, :2] / h[:, 2:3]


def _box_through(m: np.ndarray, box: Box) -> Box:
    x1, y1, x2, y2 = box
    p = _affine_points(m, [(x1, y1), (x2, y1), (x2, y2), (x1, y2)])
    return (p[:, 0].min(), p[:, 1].min(), p[:, 0].max(), p[:, 1].max())


def head_crop(p: Portrait, margin: float = 0.8) -> Portrait:
    """The face with ``margin`` face-heights of context on each side (clipped)."""
    x1, y1, x2, y2 = p.face
    m = margin * (y2 - y1)
    h, w = p.rgb.shape[:2]
    cx1, cy1 = max(0, int(x1 - m)), max(0, int(y1 - m))
    cx2, cy2 = min(w, int(x2 + m)), min(h, int(y2 + 1.6 * m))
    return _shift(Portrait(p.rgb[cy1:cy2, cx1:cx2].copy(), p.face, p.eyes), -cx1, -cy1)


def _shift(p: Portrait, dx: float, dy: float) -> Portrait:
    x1, y1, x2, y2 = p.face
    (ex1, ey1), (ex2, ey2) = p.eyes
    return Portrait(p.rgb, (x1 + dx, y1 + dy, x2 + dx, y2 + dy), ((ex1 + dx, ey1 + dy), (ex2 + dx, ey2 + dy)))


def scaled(p: Portrait, face_height: float) -> Portrait:
    s = face_height / (p.face[3] - p.face[1])
    h, w = p.rgb.shape[:2]
    rgb = cv2.resize(p.rgb, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)
    (ex1, ey1), (ex2, ey2) = p.eyes
    return Portrait(rgb, tuple(v * s for v in p.face), ((ex1 * s, ey1 * s), (ex2 * s, ey2 * s)))


def paste(canvas: np.ndarray, p: Portrait, x: int, y: int, oval: bool = False) -> tuple[np.ndarray, Portrait]:
    """Put ``p`` on ``canvas`` with its top-left corner at (x, y); ``oval`` feathers a head cut-out."""
    out = canvas.copy()
    h, w = p.rgb.shape[:2]
    if oval:
        alpha = np.zeros((h, w), np.float32)
        x1, y1, x2, y2 = p.face
        centre = (int((x1 + x2) / 2), int((y1 + y2) / 2 - 0.1 * (y2 - y1)))
        axes = (int(0.85 * (x2 - x1)), int(0.95 * (y2 - y1)))
        cv2.ellipse(alpha, centre, axes, 0, 0, 360, 1.0, -1)
        k = max(3, (int(0.15 * (x2 - x1)) | 1))
        alpha = cv2.GaussianBlur(alpha, (k, k), 0)[..., None]
        region = out[y : y + h, x : x + w].astype(np.float32)
        out[y : y + h, x : x + w] = (alpha * p.rgb + (1 - alpha) * region).astype(np.uint8)
    else:
        out[y : y + h, x : x + w] = p.rgb
    return out, _shift(p, x, y)


def canvas(w: int, h: int, kind: str, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if kind == "dark":
        return np.full((h, w, 3), (18, 20, 26), np.uint8)
    if kind == "black":
        return np.zeros((h, w, 3), np.uint8)
    if kind == "white":
        return np.full((h, w, 3), 245, np.uint8)
    if kind == "grey":
        return np.full((h, w, 3), 128, np.uint8)
    if kind == "noise":
        return rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    if kind == "gradient":  # sky over ground: a landscape-like picture with a horizon
        t = np.linspace(0, 1, h, dtype=np.float32)[:, None, None]
        sky = (1 - t) * np.array([70, 120, 200], np.float32) + t * np.array([200, 220, 240], np.float32)
        ground = np.array([60, 90, 40], np.float32) + rng.normal(0, 12, (h, w, 3)).astype(np.float32)
        horizon = (np.arange(h)[:, None, None] > int(h * 0.62)) * np.ones((1, w, 1))
        img = np.where(horizon > 0, ground, np.broadcast_to(sky, (h, w, 3)))
        return np.clip(img, 0, 255).astype(np.uint8)
    raise ValueError(kind)


def rotated(p: Portrait, degrees: float) -> Portrait:
    """In-plane tilt about the face centre; the truth keeps its size around the moved centre."""
    x1, y1, x2, y2 = p.face
    c = ((x1 + x2) / 2, (y1 + y2) / 2)
    m = cv2.getRotationMatrix2D(c, degrees, 1.0)
    h, w = p.rgb.shape[:2]
    rgb = cv2.warpAffine(p.rgb, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return Portrait(rgb, p.face, p.eyes)  # rotation about the centre leaves the centre in place


def turned(p: Portrait, degrees: float) -> Portrait:
    """The picture turned like a card about the vertical axis through the face.

    A pinhole camera three face-widths away sees the far side shrink and the
    near side grow: a rough stand-in for a head turned by ``degrees``.
    """
    x1, y1, x2, y2 = p.face
    h, w = p.rgb.shape[:2]
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    d = 3.0 * (x2 - x1)
    a = math.radians(degrees)

    def project(x, y):
        dx, dy = x - cx, y - cy
        z = d + dx * math.sin(a)
        return cx + d * dx * math.cos(a) / z, cy + d * dy / z

    src = np.float32([(0, 0), (w, 0), (w, h), (0, h)])
    dst = np.float32([project(x, y) for x, y in src])
    m = cv2.getPerspectiveTransform(src, dst)
    rgb = cv2.warpPerspective(p.rgb, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    eyes = _affine_points(m, p.eyes)
    return Portrait(rgb, _box_through(m, p.face), (tuple(eyes[0]), tuple(eyes[1])))


def flipped(p: Portrait) -> Portrait:
    w = p.rgb.shape[1]
    x1, y1, x2, y2 = p.face
    (ex1, ey1), (ex2, ey2) = p.eyes
    return Portrait(p.rgb[:, ::-1].copy(), (w - x2, y1, w - x1, y2), ((w - ex2, ey2), (w - ex1, ey1)))


def tone(p: Portrait, gain: float = 1.0, bias: float = 0.0, gamma: float = 1.0, pivot: float = 0.0) -> Portrait:
    x = p.rgb.astype(np.float32) / 255.0
    x = np.power(x, gamma)
    x = (x - pivot) * gain + pivot + bias / 255.0
    return Portrait(np.clip(x * 255.0 + 0.5, 0, 255).astype(np.uint8), p.face, p.eyes)


def glasses(p: Portrait, dark: bool) -> Portrait:
    """Draw glasses on the face: sunglasses (filled lenses) or clear lenses with heavy rims."""
    rgb = p.rgb.copy()
    x1, y1, x2, y2 = p.face
    fw = x2 - x1
    rx, ry = int(0.17 * fw), int(0.11 * fw)
    t = max(2, int(0.035 * fw))
    (ex1, ey1), (ex2, ey2) = p.eyes
    for ex, ey in ((ex1, ey1), (ex2, ey2)):
        c = (int(ex), int(ey))
        if dark:
            cv2.ellipse(rgb, c, (rx, ry), 0, 0, 360, (22, 22, 28), -1, cv2.LINE_AA)
        cv2.ellipse(rgb, c, (rx, ry), 0, 0, 360, (35, 25, 20), t, cv2.LINE_AA)
    color = (35, 25, 20)
    cv2.line(rgb, (int(ex1 + rx), int(ey1)), (int(ex2 - rx), int(ey2)), color, t, cv2.LINE_AA)  # bridge
    cv2.line(rgb, (int(ex1 - rx), int(ey1)), (int(x1), int(ey1 + 0.05 * fw)), color, t, cv2.LINE_AA)  # arms
    cv2.line(rgb, (int(ex2 + rx), int(ey2)), (int(x2), int(ey2 + 0.05 * fw)), color, t, cv2.LINE_AA)
    return Portrait(rgb, p.face, p.eyes)


def side_lit(p: Portrait, shadow: float) -> Portrait:
    """Light from one side: the picture darkens left to right down to ``shadow`` of its level."""
    h, w = p.rgb.shape[:2]
    x1, _, x2, _ = p.face
    ramp = np.clip((np.arange(w, dtype=np.float32) - x1) / max(1.0, x2 - x1), 0, 1)
    gain = (1.0 - (1.0 - shadow) * ramp)[None, :, None]
    return Portrait((p.rgb.astype(np.float32) * gain).astype(np.uint8), p.face, p.eyes)


def noisy(p: Portrait, sigma: float, seed: int = 0) -> Portrait:
    noise = np.random.default_rng(seed).normal(0, sigma, p.rgb.shape)
    return Portrait(np.clip(p.rgb + noise, 0, 255).astype(np.uint8), p.face, p.eyes)


def motion_blurred(p: Portrait, length: int) -> Portrait:
    kernel = np.zeros((length, length), np.float32)
    kernel[length // 2] = 1.0 / length
    return Portrait(cv2.filter2D(p.rgb, -1, kernel), p.face, p.eyes)


def close_up(p: Portrait, size: int = 512) -> Portrait:
    """A selfie-like crop: the face fills most of the frame, the hair's top cut off."""
    x1, y1, x2, y2 = p.face
    fh = y2 - y1
    cx = (x1 + x2) / 2
    top, bottom = int(y1 + 0.15 * fh), int(y2 + 0.25 * fh)
    left, right = int(cx - 0.55 * (bottom - top)), int(cx + 0.55 * (bottom - top))
    crop = _shift(Portrait(p.rgb[top:bottom, left:right].copy(), p.face, p.eyes), -left, -top)
    return scaled(crop, size * fh / (bottom - top))


def jpeg_bytes(rgb: np.ndarray, quality: int, exif: bytes | None = None) -> bytes:
    buf = io.BytesIO()
    kw = {"exif": exif} if exif else {}
    Image.fromarray(rgb).save(buf, "JPEG", quality=quality, **kw)
    return buf.getvalue()


def requantised(p: Portrait, quality: int) -> Portrait:
    return Portrait(np.asarray(Image.open(io.BytesIO(jpeg_bytes(p.rgb, quality))).convert("RGB")), p.face, p.eyes)


def blurred_lowres(p: Portrait, factor: int) -> Portrait:
    h, w = p.rgb.shape[:2]
    small = cv2.resize(p.rgb, (w // factor, h // factor), interpolation=cv2.INTER_AREA)
    return Portrait(cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR), p.face, p.eyes)


_EXIF_STORE = {  # orientation -> how a camera stores the upright picture
    3: Image.Transpose.ROTATE_180,
    6: Image.Transpose.ROTATE_90,
    8: Image.Transpose.ROTATE_270,
}


def exif_file(p: Portrait, orientation: int, path: Path) -> np.ndarray:
    """Write the upright picture as a phone would (pixels turned, EXIF Orientation set) and load it back."""
    stored = Image.fromarray(p.rgb).transpose(_EXIF_STORE[orientation])
    exif = Image.Exif()
    exif[0x0112] = orientation
    path.write_bytes(jpeg_bytes(np.asarray(stored), 90, exif.tobytes()))
    return load_image(path)


# ---------------------------------------------------------------- the corpus


def _finish(name: str, category: str, rgb: np.ndarray, truth: Box | None) -> Case:
    """Pass the picture through load_image like the pipeline, scaling the truth with it."""
    h, w = rgb.shape[:2]
    out = load_image(np.ascontiguousarray(rgb))
    if truth is not None:
        sx, sy = out.shape[1] / w, out.shape[0] / h
        if (out.shape[1], out.shape[0]) != (w - w % 2, h - h % 2):
            truth = (truth[0] * sx, truth[1] * sy, truth[2] * sx, truth[3] * sy)
        # a face cut by the frame (a close-up) counts by its visible part
        oh, ow = out.shape[:2]
        truth = (max(0.0, truth[0]), max(0.0, truth[1]), min(float(ow), truth[2]), min(float(oh), truth[3]))
    return Case(name, category, out, truth)


def _small(p: Portrait, face_h: int, size: tuple[int, int], bg: str, at: tuple[float, float], oval=False, seed=0):
    q = scaled(head_crop(p), face_h)
    w, h = size
    x = int(at[0] * (w - q.rgb.shape[1]))
    y = int(at[1] * (h - q.rgb.shape[0]))
    rgb, q = paste(canvas(w, h, bg, seed), q, x, y, oval=oval)
    return rgb, q.face


def build_corpus(tmp: Path) -> list[Case]:
    """All cases, faces first; ``tmp`` receives the EXIF-tagged files."""
    a, g = astronaut(), hopper()
    cases: list[Case] = []

    def add(name, category, rgb, truth):
        cases.append(_finish(name, category, rgb, truth))

    def add_p(name, category, p: Portrait):
        add(name, category, p.rgb, p.face)

    # -- plain portraits
    add_p("astronaut", "portrait", a)
    add_p("hopper", "portrait", g)  # real glasses
    add_p("astronaut_flip", "portrait", flipped(a))

    # -- small faces in big frames (face heights are in the working-size picture)
    add("dark_1920_70px", "small", *_small(a, 105, (1920, 1080), "dark", (0.3, 0.4)))  # 70 px once scaled
    add("black_oval_1280_60px", "small", *_small(a, 60, (1280, 720), "black", (0.7, 0.3), oval=True))
    add("dark_oval_1280_90px", "small", *_small(g, 90, (1280, 960), "dark", (0.2, 0.6), oval=True))
    add("white_1280_48px", "small", *_small(a, 48, (1280, 720), "white", (0.8, 0.2)))
    add("grey_1280_64px", "small", *_small(g, 64, (1280, 960), "grey", (0.5, 0.5)))
    add("noise_1280_80px", "small", *_small(a, 80, (1280, 720), "noise", (0.1, 0.7), seed=3))
    add("sky_1280_56px", "small", *_small(g, 56, (1280, 720), "gradient", (0.6, 0.15), seed=4))
    add("dark_1024_40px", "small", *_small(a, 40, (1024, 768), "dark", (0.45, 0.45)))

    # -- light
    add_p("underexposed", "light", tone(a, gain=0.35))
    add_p("underexposed_hopper", "light", tone(g, gain=0.3))
    add_p("overexposed", "light", tone(a, gain=1.5, bias=40))
    add_p("low_contrast", "light", tone(a, gain=0.35, pivot=0.5))
    add_p("gamma_dark", "light", tone(g, gamma=2.2))
    add_p("gamma_bright", "light", tone(a, gamma=0.45))
    add_p("side_lit", "light", side_lit(a, 0.25))
    add_p("side_lit_hopper", "light", side_lit(flipped(g), 0.3))
    add_p("night_noise", "light", noisy(tone(a, gain=0.3), 10, seed=1))

    # -- in-plane tilt
    for deg in (-20, -10, 10, 20):
        add_p(f"tilt_{deg:+d}", "tilt", rotated(a, deg))
    add_p("tilt_hopper_+15", "tilt", rotated(g, 15))
    add_p("tilt_hopper_-18", "tilt", rotated(g, -18))

    # -- turned head (perspective warp about the vertical axis)
    for deg in (-20, 20):
        add_p(f"turn_{deg:+d}", "turn", turned(a, deg))
    add_p("turn_hopper_+20", "turn", turned(g, 20))
    add_p("turn_flip_-15", "turn", turned(flipped(a), -15))

    # -- glasses
    add_p("sunglasses", "glasses", glasses(a, dark=True))
    add_p("clear_glasses", "glasses", glasses(a, dark=False))
    add_p("sunglasses_hopper", "glasses", glasses(g, dark=True))

    # -- compression and low resolution
    add_p("jpeg_q10", "quality", requantised(a, 10))
    add_p("jpeg_q5_hopper", "quality", requantised(g, 5))
    add_p("lowres_x4", "quality", blurred_lowres(a, 4))
    add_p("motion_blur", "quality", motion_blurred(g, 11))
    add_p("close_up", "portrait", close_up(a))
    add_p("close_up_hopper", "portrait", close_up(g))

    # -- phone photos stored sideways with an EXIF Orientation tag
    for o in (3, 6, 8):
        cases.append(Case(f"exif_{o}", "exif", exif_file(a, o, tmp / f"exif_{o}.jpg"), a.face))
    cases.append(Case("exif_6_hopper", "exif", exif_file(g, 6, tmp / "exif_6_hopper.jpg"), g.face))

    # -- groups: the largest face must come first
    c = canvas(1280, 720, "grey")
    big = scaled(head_crop(a), 150)
    mid = scaled(head_crop(g), 110)
    small = scaled(head_crop(a), 80)
    rgb, _ = paste(c, small, 20, 300)
    rgb, m = paste(rgb, mid, 330, 120)
    rgb, b = paste(rgb, big, 1280 - big.rgb.shape[1] - 10, 200)
    add("group_three", "group", rgb, b.face)

    c = canvas(1100, 640, "white")
    big = scaled(head_crop(g), 160)
    small = scaled(head_crop(a), 120)
    rgb, s = paste(c, small, 30, 60)
    rgb, b = paste(rgb, big, 560, 40)
    add("group_two", "group", rgb, b.face)

    c = canvas(1200, 700, "dark")
    left = scaled(head_crop(a), 100)
    right = scaled(head_crop(flipped(a)), 130)
    rgb, _ = paste(c, left, 60, 150, oval=True)
    rgb, r = paste(rgb, right, 640, 120, oval=True)
    add("group_twins_dark", "group", rgb, r.face)

    # -- combinations
    q = rotated(glasses(scaled(head_crop(a), 90), dark=True), 12)
    rgb, q = paste(canvas(1280, 720, "dark"), q, 800, 200)
    add("small_tilted_sunglasses", "combo", rgb, q.face)
    q = turned(tone(scaled(head_crop(g), 110), gain=0.45), -15)
    rgb, q = paste(canvas(1280, 960, "black"), q, 200, 400, oval=True)
    add("small_turned_dark", "combo", rgb, q.face)

    # -- no face at all
    add("plain_canvas", "no_face", canvas(800, 600, "grey"), None)
    add("noise", "no_face", canvas(640, 480, "noise", seed=7), None)
    add("landscape", "no_face", canvas(1280, 720, "gradient", seed=8), None)
    headless = a.rgb.copy()
    headless[:190, 130:330] = cv2.GaussianBlur(headless[:190, 130:330], (0, 0), 25)
    add("astronaut_without_head", "no_face", headless, None)
    headless = g.rgb.copy()
    headless[90:360, 120:400] = cv2.GaussianBlur(headless[90:360, 120:400], (0, 0), 25)
    add("hopper_without_head", "no_face", headless, None)
    return cases


def evaluate(detector, cases: list[Case]):
    """Run ``find_face`` on every case: rows of (case, hit, iou, box or error name)."""
    from lipsync.errors import NoFaceError
    from lipsync.face import find_face

    rows = []
    for c in cases:
        try:
            b = find_face(c.rgb, detector, face_index=0, pads=(0, 0, 0, 0))
        except NoFaceError:
            rows.append((c, c.truth is None, 0.0, "NoFaceError"))
            continue
        if c.truth is None:
            rows.append((c, False, 0.0, b))
            continue
        v = iou((b.x1, b.y1, b.x2, b.y2), c.truth)
        rows.append((c, v >= HIT_IOU, v, b))
    return rows
