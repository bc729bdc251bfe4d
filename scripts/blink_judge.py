"""Judge the blinks on four faces: does the shut eye read as shut, does the lid keep its skin, does anything else move?

Faces: the two corpus portraits (tests/face_corpus.py: the astronaut, assets/astronaut.jpg; Grace Hopper, with
real glasses, tests/data/faces/grace_hopper.jpg), the corpus's "clear_glasses" case (the astronaut with heavy
dark rims drawn round the eyes, face_corpus.glasses), and a small face in a large photo (the astronaut's head
scaled to a 100 px face by the corpus's hand-marked box, pasted into a 1600x1200 landscape, then brought to the
working size as the pipeline does: 1280x960, an 80 px face, which the face finder boxes at 98 px).

For each face, one blink (lipsync.blink's schedule and drawing on the face-mesh eyelids of the photo) is drawn
and the landmark models are run again on the output frame at the blink's middle (fully shut). Printed per eye:

* EAR %: the eye aspect ratio at mid-blink as a share of the open eye's, as MediaPipe's iris model sees it
  (tests/eye_closure.py: a 64x64 close-up per eye, the measure of how shut an eye looks; target <= 30 %), and
  as the face mesh sees it (its eyelids barely follow the eye: an eye painted out entirely reads 59-96 %,
  so this column shows that the mesh is no judge of closure, not how well the lid is drawn).
* texture %: the fine detail of the shut lid over what was the eye's opening (the lash line left out), as a
  share of that of the photo's own lid skin above the eye, or of the skin all around the eye (marked "around")
  where a rim or a brow leaves under 30 pixels of skin above it. Fine detail: a robust Laplacian variance
  (tests/eye_closure.py; a few edges in the sample do not count). The samples are small (20-70 pixels on
  the smaller faces), so the figure moves by tens of percent with the sample: it tells a flat lid from skin
  (the same lids drawn without their texture read 1-4 %, 9-26 % on the small face), not more.
* outside: the largest change of any pixel outside the blink's mask over the whole blink (must be 0); rim: on
  the glasses face, how many of the drawn rim's pixels changed (must be 0).
* ms: the time to draw one blink frame (both eyes), median over the blink's frames; prep ms: the study of the
  photo around the eyes, once per photo (on the first frame that blinks).

And the drawing time on a large face (the astronaut's head scaled up to a 512 px face, which the face finder
boxes at 565 px). "face px" is the height of the face finder's box.

    .venv/bin/python scripts/blink_judge.py
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from eye_closure import IrisEyes, lid_skin_texture, shut_lid_texture  # noqa: E402
from face_corpus import astronaut, canvas, glasses, head_crop, hopper, paste, scaled  # noqa: E402
from lipsync.blink import Blinks, blink_schedule  # noqa: E402
from lipsync.face.detect import find_face, offline_detector  # noqa: E402
from lipsync.face.landmarks import FaceMesh, eye_aspect_ratio  # noqa: E402
from lipsync.media.images import load_image  # noqa: E402

FPS = 25.0
TARGET = 30.0  #: mid-blink EAR as a share of the open eye's, at most (iris model)


def small_face() -> np.ndarray:
    """The astronaut's head at a 100 px face in a 1600x1200 landscape, at the pipeline's working size."""
    q = scaled(head_crop(astronaut()), 100)
    rgb, _ = paste(canvas(1600, 1200, "gradient", seed=4), q, 1000, 300)
    return load_image(rgb)


def faces() -> list[tuple[str, np.ndarray, np.ndarray | None]]:
    """(name, picture, the drawn rim's pixels or None)."""
    a = astronaut()
    g = glasses(a, dark=False)
    rim = np.abs(g.rgb.astype(int) - a.rgb).max(axis=2) > 40
    return [
        ("astronaut", a.rgb, None),
        ("hopper (glasses)", hopper().rgb, None),
        ("astronaut, drawn rims", g.rgb, rim),
        ("small face, 1280x960", small_face(), None),
    ]


def draw_ms(blinks: Blinks, photo: np.ndarray, closures, repeat: int = 5) -> float:
    """Median time to draw one blink frame, ms (the photo already studied)."""
    times = []
    for _ in range(repeat):
        for c in closures:
            frame = photo.copy()
            t = time.perf_counter()
            blinks.close(frame, float(c))
            times.append(time.perf_counter() - t)
    return 1000 * statistics.median(times)


def judge(name: str, photo: np.ndarray, rim, mesh: FaceMesh, iris: IrisEyes) -> tuple[dict, list[str]]:
    box = find_face(photo, offline_detector())
    lm = mesh(photo, box)
    closure, mids = blink_schedule(int(10 * FPS), FPS)
    blinks = Blinks(lm.right, lm.left, closure, photo.shape, mids)
    m = int(mids[0])
    shut = blinks.apply(photo.copy(), m)  # the first frame studies the photo
    t = time.perf_counter()
    Blinks(lm.right, lm.left, closure, photo.shape, mids).mask(photo)  # the study again, OpenCV warmed up
    prep = 1000 * (time.perf_counter() - t)
    frames = np.flatnonzero(closure > 0)
    frames = frames[(frames >= m - 5) & (frames <= m + 6)]  # this blink
    mask = blinks.mask(photo) > 0
    outside, rim_moved = 0, 0
    for k in frames:
        out = blinks.apply(photo.copy(), int(k))
        diff = np.abs(out.astype(int) - photo).max(axis=2)
        outside = max(outside, int(diff[~mask].max(initial=0)))
        if rim is not None:
            rim_moved = max(rim_moved, int((diff[rim] > 0).sum()))
    ms = draw_ms(blinks, photo, closure[frames])
    after = mesh(shut, box)
    rows, worst = [], 0.0
    for side, eye, eye2, left in (("right", lm.right, after.right, False), ("left", lm.left, after.left, True)):
        ear_iris = 100 * iris.ear(shut, eye, left) / iris.ear(photo, eye, left)
        ear_mesh = 100 * eye_aspect_ratio(eye2) / eye_aspect_ratio(eye)
        ref, where = lid_skin_texture(photo, eye)
        tex = 100 * shut_lid_texture(shut, eye) / ref
        worst = max(worst, ear_iris)
        rows.append(
            f"| {name} | {box.y2 - box.y1:.0f} | {side} | {ear_iris:.0f} % | {ear_mesh:.0f} % | {tex:.0f} %{' (around)' if where == 'around' else ''} "
            f"| {outside} | {'-' if rim is None else rim_moved} | {ms:.2f} | {prep:.1f} |"
        )
    return {"worst": worst, "outside": outside, "rim": rim_moved, "ms": ms}, rows


def main() -> int:
    mesh, iris = FaceMesh(), IrisEyes()
    print("| face | face px | eye | EAR % (iris) | EAR % (mesh) | texture % | outside | rim | ms | prep ms |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    results = []
    for name, photo, rim in faces():
        res, rows = judge(name, photo, rim, mesh, iris)
        results.append(res)
        print("\n".join(rows))
    # the drawing time on a 512 px face
    big = scaled(head_crop(astronaut()), 512).rgb
    box = find_face(big, offline_detector())
    lm = mesh(big, box)
    closure, mids = blink_schedule(int(10 * FPS), FPS)
    blinks = Blinks(lm.right, lm.left, closure, big.shape, mids)
    blinks.apply(big.copy(), int(mids[0]))
    frames = np.flatnonzero(closure > 0)[:8]
    ms = draw_ms(blinks, big, closure[frames])
    print(
        f"\nthe astronaut's head scaled up ({big.shape[1]}x{big.shape[0]}, a {box.y2 - box.y1:.0f} px face box): "
        f"{ms:.2f} ms per blink frame"
    )
    ok = all(r["worst"] <= TARGET and r["outside"] == 0 and r["rim"] == 0 for r in results)
    print(
        f"target (iris EAR <= {TARGET:.0f} % on every eye, nothing outside the mask, no rim pixel): "
        f"{'met' if ok else 'NOT met'}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
