"""Blinks for a still portrait: the upper eyelids close over the eyes now and then.

A photo whose head moves while the eyes stay open looks dead. This module
plans natural blinks and draws them by moving each upper eyelid down over its
eye. Pure numpy/cv2 per frame; the eyelids come once per photo from the
offline face-mesh model (:mod:`lipsync.face.landmarks`).
``scripts/blink_judge.py`` measures how shut the drawn eye looks.

**When** (:func:`blink_schedule`): the first blink 1-3 s in, then gaps of 2 s
plus a gamma-distributed extra (shape 2, mean 1.8 s) capped so that every gap
lies between :data:`MIN_GAP_S` and :data:`MAX_GAP_S`: about 16 blinks a
minute at irregular intervals. A blink whose middle would fall in a strong
nod (:func:`lipsync.motion.nod_curve` over :data:`NOD_LIMIT`) waits until the
nod has passed. Seeded: the same clip gets the same blinks.

**How** (:data:`CLOSE_S`, :data:`HOLD_S`, :data:`OPEN_S`, about 0.25 s in all):
the lid closes quickly along a smoothstep, stays shut a moment and opens more
slowly. The frame nearest the middle of each blink is fully shut.

**Drawing** (:class:`Blinks`): per column of each eye, between the corners,
the upper lid's edge ``U`` moves to ``U + c (L - U)`` (``L`` the lower lid, ``c``
the closure), and the shut lid is drawn above it rather than stretched out of
a thin band of skin. Each eye is studied once, on the first frame that blinks:

* hard structure around it: pixels far darker or brighter than the skin or on
  a hard edge (a glasses rim, a lens' highlight, a brow);
* the lid's margin: the dark rows (lashes, lid line) just above ``U``, at most
  :data:`MARGIN` of the opening and 2 px; they ride down on the edge, fading as
  the lid shuts, and the new skin starts above them;
* the shut lid, painted once over the opening: the colour of the skin around,
  painted in (OpenCV's inpainting, with the eye, its margin and any hard
  structure left out, so that a rim's colour never runs into the lid), a little
  darker towards the lashes; the fine texture of the photo's own skin, quilted
  from small clean patches (of the lid skin above the eye where there is room,
  else of the skin around) and scaled to the fine detail (a robust Laplacian
  variance) of the lid skin above the eye, or where a rim leaves too little of
  it of the skin right around the eye, so that the lid is skin, not a smear;
  and a faint crease a third of the way down (:data:`CREASE`; none on eyes
  under about 12 px wide, where it reads as the open eye's outline);
* the lash colour: the darkest 5 % of the pixels along the upper lid's margin;
* whether the eye is hidden behind a dark lens (its opening all dark and flat:
  no white of the eye, no iris edge, no catchlight): then nothing is drawn
  there, and a photo whose eyes are all hidden gets no blinks.

Per frame the painted lid slides down with the edge (at ``c = 1`` it lies as
painted) and a soft dark lash line follows the edge (half-thickness
:data:`LASH` of the eye's width, 1.6 times that at the outer corner, lighter at
the inner end) with strength ``c (2 - c)``: nothing at ``c = 0``, full when shut,
where it lies along the lower lid. All of it goes through each eye's mask
(:meth:`Blinks.mask`): the opening, its moving margin and the lash line's soft
edge under the lower lid, less any hard structure outside the opening (a rim
that touches the corners or runs just under the lower lid stays as it was).
No pixel outside the mask changes. About 0.1 ms per blink frame for a 100-230 px
face and 0.4 ms for a 565 px one (two loaded cores); the study costs a few ms once.
"""

from __future__ import annotations

import logging
import math
import threading

import numpy as np

log = logging.getLogger("lipsync")

__all__ = ["CLOSE_S", "HOLD_S", "OPEN_S", "SEED", "Blinks", "blink_profile", "blink_schedule", "plan_blinks"]

CLOSE_S = 0.09  #: the lid closes in this long
HOLD_S = 0.04  #: and stays shut this long
OPEN_S = 0.13  #: and opens in this long (about 0.25 s in all)
MIN_GAP_S, MAX_GAP_S = 2.0, 6.0  #: time between the starts of two blinks
FIRST_S = (1.0, 3.0)  #: the first blink starts in this range
NOD_LIMIT = 0.35  #: a blink's middle never falls where the nod curve is above this
SEED = 20240611
MARGIN = 0.35  #: the upper lid's margin (lashes, lid line) reaches at most this share of the opening (+2 px) above it
LASH = 0.03  #: the drawn lash line's half-thickness, as a share of the eye's width (1.6 times that at the outer corner)
CREASE = 0.25  #: the shut lid's crease darkens the skin by this much at most
LUMA = np.array([0.299, 0.587, 0.114], np.float32)


def _smooth(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)


def blink_profile(t: np.ndarray) -> np.ndarray:
    """Closure in [0, 1] at ``t`` seconds after a blink's start (0 outside the blink)."""
    t = np.asarray(t, np.float64)
    close = _smooth(t / CLOSE_S)
    opening = 1.0 - _smooth((t - CLOSE_S - HOLD_S) / OPEN_S)
    return np.where((t < 0) | (t > CLOSE_S + HOLD_S + OPEN_S), 0.0, np.minimum(close, opening))


def blink_schedule(
    n_frames: int, fps: float, nods: np.ndarray | None = None, *, seed: int = SEED
) -> tuple[np.ndarray, np.ndarray]:
    """When to blink in a clip of ``n_frames`` at ``fps``.

    Args:
        nods: optional (n_frames,) nod depth per frame (:func:`lipsync.motion.nod_curve`).

    Returns:
        (closure per frame (n_frames,) float32 in [0, 1], the frame of each blink's middle (k,) int).
    """
    rng = np.random.default_rng(seed)
    closure = np.zeros(n_frames, np.float32)
    mids: list[int] = []
    duration = CLOSE_S + HOLD_S + OPEN_S
    peak = CLOSE_S + HOLD_S / 2
    start = rng.uniform(*FIRST_S)
    last = -math.inf
    span = n_frames / fps
    while start + duration <= span:
        mid = round((start + peak) * fps)  # the shut moment falls on a frame
        while nods is not None and mid < n_frames and nods[mid] > NOD_LIMIT:
            mid += 1  # wait for the nod to pass
        start = mid / fps - peak
        if math.isfinite(last) and start - last > MAX_GAP_S:  # a long nod pushed it too late: blink just before the nod instead
            mid = round((last + MAX_GAP_S + peak) * fps)
            start = mid / fps - peak
        if start + duration > span:
            break
        t = np.arange(n_frames) / fps - start
        closure = np.maximum(closure, blink_profile(t).astype(np.float32))
        mids.append(mid)
        last = start
        extra = min(rng.gamma(2.0, 0.9), MAX_GAP_S - MIN_GAP_S - 0.5)  # room for a nod's delay
        start = last + MIN_GAP_S + extra
    return closure, np.asarray(mids, int)


def _smooth_cols(v: np.ndarray, sigma: float) -> np.ndarray:
    """Per-column values (W,) smoothed along the columns."""
    import cv2

    a = np.ascontiguousarray(v, np.float32).reshape(1, -1)
    return cv2.GaussianBlur(a, (0, 0), sigmaX=max(sigma, 0.3), sigmaY=0.01, borderType=cv2.BORDER_REPLICATE).reshape(-1)


def _detail(lap: np.ndarray) -> float:
    """Fine detail of Laplacian values, robustly: (1.4826 x their median absolute deviation) squared."""
    if lap.size == 0:
        return 0.0
    return float((1.4826 * np.median(np.abs(lap - np.median(lap)))) ** 2)


class _Eye:
    """One eye: its region, its shut lid (painted once per photo) and that lid drawn closed by ``c``."""

    def __init__(self, upper: np.ndarray, lower: np.ndarray, shape: tuple[int, ...], index: int = 0):
        h, w = shape[:2]
        up = upper[np.argsort(upper[:, 0])]
        lo = lower[np.argsort(lower[:, 0])]
        xa, xb = float(min(up[0, 0], lo[0, 0])), float(max(up[-1, 0], lo[-1, 0]))
        outer, inner = float(upper[0, 0]), float(upper[-1, 0])  # the landmarks run from the outer corner inwards
        x0, x1 = max(0, int(math.floor(xa))), min(w, int(math.ceil(xb)) + 1)
        xs = np.arange(x0, x1, dtype=np.float32)
        u = np.interp(xs, up[:, 0], up[:, 1]).astype(np.float32)
        low = np.maximum(np.interp(xs, lo[:, 0], lo[:, 1]).astype(np.float32), u)
        gap = low - u
        self.width = max(1.0, abs(outer - inner))
        s = np.clip((xs - inner) / (outer - inner if outer != inner else 1.0), 0.0, 1.0)  # 0 inner .. 1 outer corner
        self.lash_w = (max(0.55, LASH * self.width) * (1.0 + 0.6 * s)).astype(np.float32)
        y0 = max(0, int(math.floor(float((u - MARGIN * gap).min()))) - 4)
        y1 = min(h, int(math.ceil(float((low + 2.5 * self.lash_w).max()))) + 2)
        self.roi = (y0, y1, x0, x1)  # rows and columns of the frame that may change (narrowed once studied)
        self.valid = x1 > x0 and y1 > y0 and float(gap.max()) > 0.5
        self.u, self.low, self.gap = u - y0, low - y0, gap  # per column, rows of the region
        self.inside = (xs >= xa - 0.5) & (xs <= xb + 0.5)
        self.s = s
        ends = np.clip(np.minimum(xs - xa, xb - xs) / 2.0 + 0.25, 0.0, 1.0)
        # the lash line: lighter at the inner end, soft at the corners
        self.taper = ((0.55 + 0.45 * np.clip(s / 0.3, 0.0, 1.0)) * ends * self.inside).astype(np.float32)
        self.seed = SEED + index
        self.hidden = False  #: behind a dark lens (known once studied): nothing is drawn
        self.Y = np.arange(y1 - y0, dtype=np.float32)[:, None]
        self.gx = np.broadcast_to(np.arange(x1 - x0, dtype=np.float32)[None, :], (y1 - y0, x1 - x0)).copy()
        self.ready = False

    # ------------------------------------------------------------------ once per photo

    def prepare(self, frame: np.ndarray) -> None:
        """Study the photo around this eye once (see the module's docstring) and paint the shut lid."""
        import cv2

        y0, y1, x0, x1 = self.roi
        fh, fw = frame.shape[:2]
        m = int(math.ceil(max(float(self.gap.max()) * 2.0, 0.4 * self.width))) + 3  # the skin around the eye
        cy0, cy1, cx0, cx1 = max(0, y0 - m), min(fh, y1 + m), max(0, x0 - m), min(fw, x1 + m)
        ctx = np.ascontiguousarray(frame[cy0:cy1, cx0:cx1])
        oy, ox = y0 - cy0, x0 - cx0  # the region inside the context
        H, W = y1 - y0, x1 - x0
        cols = slice(ox, ox + W)
        f = ctx.astype(np.float32)
        lum = f @ LUMA
        u, L, g = self.u + oy, self.low + oy, self.gap  # per column, rows of the context
        Yc = np.arange(ctx.shape[0], dtype=np.float32)[:, None]
        Y = self.Y
        open_ = (g > 0.5) & self.inside

        def in_cols(rows: np.ndarray) -> np.ndarray:  # (context rows, region columns) -> the context's shape
            out = np.zeros(lum.shape, bool)
            out[:, cols] = rows
            return out

        # the skin's brightness (most of what is around the eye is skin), and hard structure: far darker than
        # the skin (a glasses rim, a brow), a highlight (on a lens) or a hard edge
        eye = in_cols(self.inside[None, :] & (Yc >= (u - MARGIN * g - 3.0)[None, :]) & (Yc <= L[None, :] + 1.5))
        skin = float(np.percentile(lum[~eye], 70)) if (~eye).any() else float(np.percentile(lum, 70))
        grad = np.zeros_like(lum)
        dy, dx = np.abs(np.diff(lum, axis=0)), np.abs(np.diff(lum, axis=1))
        grad[:-1], grad[1:] = dy, np.maximum(grad[1:], dy)
        grad[:, :-1], grad[:, 1:] = np.maximum(grad[:, :-1], dx), np.maximum(grad[:, 1:], dx)
        bright = (lum > skin + 0.6 * (255.0 - skin)) & (lum > 1.12 * skin)
        structure = (lum < 0.55 * skin) | bright | (grad > 0.3 * skin)
        hard = cv2.dilate(structure.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
        glare = cv2.dilate(bright.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
        # an eye behind a dark lens: its opening all dark and flat, no white of the eye, no iris edge, no catchlight
        seen = lum[oy : oy + H, cols][open_[None, :] & (Y > self.u[None, :] + 0.5) & (Y < self.low[None, :] - 0.5)]
        spread = float(np.percentile(seen, 90) - np.percentile(seen, 10)) if seen.size >= 4 else skin
        self.hidden = seen.size >= 4 and float((seen < 0.5 * skin).mean()) > 0.85 and spread < 0.1 * skin

        # the upper lid's margin: the dark rows (lashes, lid line) from the lid's edge up, at most MARGIN of the
        # opening and 2 pixels; the shut lid's new skin starts above them
        lashy = lum < 0.8 * skin
        pad = np.zeros(W, np.float32)
        for j in np.flatnonzero(open_):
            k = min(lum.shape[0] - 1, max(0, int(round(float(u[j])))))
            while k >= 1 and float(u[j]) - (k - 1) <= MARGIN * float(g[j]) + 2.0 and lashy[k - 1, ox + j]:
                k -= 1
            pad[j] = float(u[j]) - k + 1.0
        if open_.any():
            pad = np.where(open_, pad, float(np.median(pad[open_])))
        wide = np.pad(pad, 1, mode="edge")
        pad = np.maximum(_smooth_cols(np.maximum.reduce([wide[:-2], wide[1:-1], wide[2:]]), 1.0), 1.0)
        F = self.u - pad  # per column, the region row where the new skin starts
        moving = in_cols(self.inside[None, :] & (Yc >= (F + oy - 1.0)[None, :]) & (Yc <= L[None, :] + 1.5))

        # the shut lid's colour: the skin around painted in over the eye (its margin and any hard structure left
        # out, so that a rim's colour never runs into the lid)
        holes = ((eye | moving | hard) * 255).astype(np.uint8)
        smooth = cv2.inpaint(ctx, holes, 3, cv2.INPAINT_TELEA)
        colour = cv2.GaussianBlur(smooth.astype(np.float32), (0, 0), 1.0)[oy : oy + H, cols]

        # its fine texture: small patches of the photo's own clean skin (no structure, skin-bright, not the eye,
        # no edge) quilted over it, from the lid skin above the eye where there is room for them (else from the
        # skin around), scaled to the fine detail of that lid skin, wrinkles and all (else of the skin right
        # around the eye: two openings above and below it, 0.3 eye widths beyond its corners)
        hi = f - cv2.GaussianBlur(f, (0, 0), 1.0)
        lap = cv2.Laplacian(lum, cv2.CV_32F, ksize=1)
        odd = cv2.dilate((np.abs(lum - skin) > 0.25 * skin).astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
        clean = ~moving & ~hard & ~odd
        band = in_cols(open_[None, :] & (Yc >= (u - g - 2.0)[None, :]) & (Yc <= (u - MARGIN * g - 2.0)[None, :]))
        ring = np.zeros(lum.shape, bool)
        reach = int(math.ceil(0.3 * self.width))
        ring[
            max(0, int((u - 2 * g).min()) - 2) : int(math.ceil(float((L + 2 * g).max()))) + 3,
            max(0, ox - reach) : ox + W + reach,
        ] = True
        skinny = ring & ~moving & ~eye & ~odd
        ref = lap[band & skinny]
        if ref.size < 30:
            ref = lap[skinny]
        if clean.any():
            edge = np.abs(lap - np.median(lap[clean])) > 3.0 * math.sqrt(_detail(lap[clean])) + 1.0
            clean &= cv2.dilate(edge.astype(np.uint8), np.ones((3, 3), np.uint8)) == 0
        tex = self._quilt(hi, clean.astype(np.uint8), band, (H, W))
        if ref.size >= 10 and tex.any():
            own = cv2.Laplacian(np.ascontiguousarray(tex @ LUMA), cv2.CV_32F, ksize=1).ravel()
            tex *= float(np.clip(math.sqrt(_detail(ref) / max(_detail(own), 1e-6)), 0.5, 2.5))

        # the shut lid: that colour, a little darker towards the lashes, the texture, and a faint crease a third of
        # the way down (it comes into view as the lid shuts; none on a small eye, where it reads as an outline)
        t = np.clip((Y - F[None, :]) / np.maximum(g + pad, 1.0)[None, :], 0.0, 1.0)
        wc = np.maximum(0.5, 0.4 * self.lash_w)[None, :]
        size = min(1.0, max(0.0, (self.width - 12.0) / 20.0))
        along = np.maximum(np.sin(np.pi * self.s), 0.0) ** 0.7 * self.inside
        crease = CREASE * size * along[None, :] / (1.0 + ((Y - (F + 0.3 * g)[None, :]) / wc) ** 4)
        lid = np.clip(colour * (1.0 - 0.08 * t * t - crease)[..., None] + tex, 0, 255)

        # the lashes' colour: the photo's own darkest lash and lid-line pixels (the darkest 5 % along the margin)
        zone = np.zeros(lum.shape, bool)
        zone[oy : oy + H, cols] = open_[None, :] & (Y >= F[None, :] - 0.5) & (Y <= self.u[None, :] + 1.0)
        if zone.any():
            self.lash = f[zone & (lum <= np.percentile(lum[zone], 5))].mean(axis=0).astype(np.float32)
        else:
            self.lash = np.percentile(f.reshape(-1, 3), 5, axis=0).astype(np.float32)

        # the mask: the opening, the lid's moving margin and the lash line's soft edge below the lower lid, less
        # hard structure outside the opening (the margin moves, lashes and all, where the eye is open, but not a
        # lens' highlight on it; at the corners and just under the lower lid a rim may touch the eye and stays).
        # Soft along the bottom.
        bottom = self.low + 2.5 * self.lash_w + 0.5
        region = self.inside[None, :] & (Y >= F[None, :] - 0.5) & (Y <= bottom[None, :])
        top = np.where(g >= 1.5, F - 0.5, self.u - 0.5)
        under = self.low + np.where(g < 0.4 * float(g.max()), -0.25, 0.5)
        outside = (Y < top[None, :]) | (Y > under[None, :]) | (g < 1.5)[None, :]
        keep = (hard[oy : oy + H, cols] & outside) | (glare[oy : oy + H, cols] & (Y < self.u[None, :] - 0.5))
        mask = (region & ~keep) * np.clip(bottom[None, :] + 0.5 - Y, 0.0, 1.0) * (not self.hidden)

        # from here on only the rows that can change
        rows = np.flatnonzero(mask.max(axis=1) > 0)
        r0, r1 = (int(rows[0]), int(rows[-1]) + 1) if rows.size else (0, 1)
        self.roi = (y0 + r0, y0 + r1, x0, x1)
        self.mask = np.ascontiguousarray(mask[r0:r1], np.float32)
        self.lid = np.ascontiguousarray(lid[r0:r1], np.float32)
        self.F, self.u, self.low = F - r0, self.u - r0, self.low - r0
        self.Y = self.Y[r0:r1] - r0
        self.gx = np.ascontiguousarray(self.gx[r0:r1])
        self.inv_w = (1.0 / self.lash_w).astype(np.float32)
        self.ready = True

    def _quilt(self, hi: np.ndarray, clean: np.ndarray, band: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
        """``shape`` covered with P x P patches of ``hi`` whose pixels are all ``clean``, picked at random (seeded)
        among those starting in ``band`` (about 0.12 eye widths, smaller if the band has room for fewer than 4),
        else anywhere clean; zeros if none."""
        import cv2

        H, W = shape
        tex = np.zeros((H, W, 3), np.float32)
        for P in range(max(2, int(round(0.12 * self.width))), 1, -1):
            starts = cv2.erode(
                clean, np.ones((P, P), np.uint8), anchor=(0, 0), borderType=cv2.BORDER_CONSTANT, borderValue=0
            )
            starts[max(0, starts.shape[0] - P + 1) :] = 0
            starts[:, max(0, starts.shape[1] - P + 1) :] = 0
            cy, cx = np.nonzero(starts & band)
            if cy.size >= 4:
                break
        if cy.size < 4:
            cy, cx = np.nonzero(starts)
        if not cy.size:
            return tex
        by, bx = np.mgrid[0:H:P, 0:W:P]
        pick = np.random.default_rng(self.seed).integers(0, cy.size, by.shape)
        sy, sx = cy[pick], cx[pick]
        for i in range(P):
            for k in range(P):
                yy, xx = by + i, bx + k
                ok = (yy < H) & (xx < W)
                tex[yy[ok], xx[ok]] = hi[sy[ok] + i, sx[ok] + k]
        return tex

    # ------------------------------------------------------------------ per frame

    def draw(self, frame: np.ndarray, c: float) -> None:
        """Draw the upper lid closed by ``c`` in (0, 1] in ``frame`` (in place)."""
        import cv2

        if not self.ready:
            self.prepare(frame)
        if self.hidden:
            return
        y0, y1, x0, x1 = self.roi
        roi = frame[y0:y1, x0:x1]
        orig = roi.astype(np.float32)
        Y, F = self.Y, self.F
        shift = np.float32(c) * self.gap
        E = self.u + shift  # the upper lid's edge
        # the shut lid's skin slides down with the edge (at c = 1 it lies as painted) over the eye
        out = cv2.remap(self.lid, self.gx, Y + (self.gap - shift), cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        if c < 1.0:  # the photo's own margin and lashes ride on the edge, fading as the lid shuts
            moved = cv2.remap(orig, self.gx, Y - shift, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
            out += ((Y >= F + shift) * np.float32(1.0 - c))[..., None] * (moved - out)
        out -= orig
        out *= (((Y >= F) & (Y <= E)) * self.mask)[..., None]
        out += orig
        # the lash line along the edge: nothing at c = 0, full when shut
        d = (Y - E) * self.inv_w
        d *= d
        d *= d
        a = np.float32(c * (2.0 - c)) * self.taper / (1.0 + d * d) * self.mask
        out += a[..., None] * (self.lash - out)
        roi[:] = np.clip(out + 0.5, 0, 255).astype(np.uint8)


class Blinks:
    """Eyelids per frame: ``apply(frame, t)`` closes them by the schedule's closure at frame ``t``.

    The first frame drawn with a closure above 0 (or :meth:`mask`) studies the photo around each eye once
    (see the module's docstring): every frame after it must show the same photo around the eyes, as a
    photo's frames do before the head moves (the mouth is pasted far below them).

    Args:
        right, left: the two eyes (:class:`lipsync.face.landmarks.Eye`), image pixels.
        closure: (n,) closure per frame in [0, 1] (:func:`blink_schedule`).
        shape: the frames' shape.
        mids: the frame of each blink's middle.
    """

    def __init__(self, right, left, closure: np.ndarray, shape: tuple[int, ...], mids: np.ndarray | None = None):
        self.closure = np.asarray(closure, np.float32)
        self.mids = np.asarray([] if mids is None else mids, int)
        self.eyes = [
            e for e in (_Eye(right.upper, right.lower, shape, 0), _Eye(left.upper, left.lower, shape, 1)) if e.valid
        ]

    def __len__(self) -> int:
        return len(self.mids)

    def prepare(self, frame: np.ndarray) -> Blinks:
        """Study ``frame``'s photo around the eyes now (else the first blink frame does) and drop the eyes hidden
        behind dark lenses (nothing of an eye to close there); returns self."""
        for eye in self.eyes:
            if not eye.ready:
                eye.prepare(frame)
        self.eyes = [e for e in self.eyes if not e.hidden]
        return self

    def mask(self, frame: np.ndarray) -> np.ndarray:
        """(H, W) float32 in [0, 1]: how much of each pixel of ``frame``'s photo a blink may draw over (0: the
        pixel never changes)."""
        out = np.zeros(frame.shape[:2], np.float32)
        for eye in self.eyes:
            if not eye.ready:
                eye.prepare(frame)
            y0, y1, x0, x1 = eye.roi
            out[y0:y1, x0:x1] = np.maximum(out[y0:y1, x0:x1], eye.mask)
        return out

    def apply(self, frame: np.ndarray, t: int) -> np.ndarray:
        """Close the eyelids in ``frame`` (in place) by frame ``t``'s closure; returns ``frame``."""
        c = float(self.closure[t]) if 0 <= t < len(self.closure) else 0.0
        return self.close(frame, c)

    def close(self, frame: np.ndarray, c: float) -> np.ndarray:
        """Close the eyelids in ``frame`` (in place) by closure ``c`` in [0, 1] (a live stream's own schedule)."""
        if c <= 0.0:
            return frame
        for eye in self.eyes:
            eye.draw(frame, min(float(c), 1.0))
        return frame


_mesh_lock = threading.Lock()
_meshes: dict = {}  # model path -> FaceMesh: loaded once per process (per model file), not once per clip or visitor


def find_eyes(rgb: np.ndarray, box):
    """(eyelids of the face in ``box``, "") from the face-mesh model, or (None, "off: why not").

    The model loads once per process and model file (a changed ``LIPSYNC_FACE_LANDMARKS`` loads
    the new one); one caller runs it at a time. Never raises for a missing or broken model: a
    clip or a live session goes on without blinks.
    """
    from .face.landmarks import FaceMesh, LandmarksUnavailable, model_path

    try:
        with _mesh_lock:
            path = str(model_path())
            mesh = _meshes.get(path)
            if mesh is None:
                _meshes.clear()
                mesh = _meshes[path] = FaceMesh(path)
            return mesh(rgb, box), ""
    except LandmarksUnavailable as e:
        log.warning("no blinks: %s", e)
        return None, f"off: {e}"
    except Exception as e:  # noqa: BLE001 - a broken model must not stop the video
        log.warning("no blinks: the landmark model failed: %s", e)
        return None, f"off: the landmark model failed ({type(e).__name__}: {e})"


def plan_blinks(source, speech, n_frames: int, opts) -> tuple[Blinks | None, str]:
    """The blinks of a clip, or None and the reason there are none (never raises for a missing model).

    Args:
        source: the face source (only a photo blinks: a video's eyes move by themselves).
        speech: the soundtrack (nods come from it when the head moves).
        n_frames: frames in the clip.
        opts: :class:`~lipsync.options.GenerateOptions` (``blink``, ``fps``, ``motion``).
    """
    if not opts.blink:
        return None, "off (asked for)"
    if source.kind != "photo":
        return None, "off: a video's own eyes blink"
    eyes, why = find_eyes(source.plain if source.plain is not None else source.image, source.box)
    if eyes is None:
        return None, why
    nods = None
    if opts.motion > 0:
        from .motion import nod_curve

        nods = nod_curve(speech.samples, speech.sample_rate, n_frames, opts.fps)
    closure, mids = blink_schedule(n_frames, opts.fps, nods)
    blinks = Blinks(eyes.right, eyes.left, closure, source.image.shape, mids)
    if not blinks.eyes:
        return None, "off: no open eyes found in the photo"
    if not blinks.prepare(source.image).eyes:
        return None, "off: no open eyes found in the photo (behind dark glasses)"
    return blinks, f"on: {len(mids)} blinks in {n_frames / opts.fps:.1f} s (eyelids from the face mesh)"
