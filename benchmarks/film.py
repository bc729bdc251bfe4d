"""A film-like driving clip for the video benchmarks: 720x528, 146 frames at 23.976 fps, dark,
two faces, a hand-held drift and one cut.

No real film clip ships with this project or its installed packages, so this stands in for one:
the two public-domain portraits of the face corpus (Eileen Collins and Grace Hopper), graded dark,
on a dark background, with sensor noise; shot 1 (frames 0-79) is a two-shot drifting right, shot 2
(frames 80-145) a closer two-shot with the faces swapped, drifting left and zooming in.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

W, H, N, FPS, CUT = 720, 528, 146, 24000 / 1001, 80


def _shot(faces, size=(1000, 700)):
    """A wide dark canvas with the given (portrait, face height, x, y) pasted as head cut-outs."""
    import face_corpus as fc

    canvas = fc.canvas(*size, "dark")
    for p, fh, x, y in faces:
        p = fc.tone(fc.scaled(fc.head_crop(p), fh), gain=0.45, gamma=1.25)
        canvas, _ = fc.paste(canvas, p, x, y, oval=True)
    return canvas


def film_frames():
    """The clip's frames (RGB uint8), one at a time."""
    import cv2
    import face_corpus as fc

    rng = np.random.default_rng(7)
    a, b = fc.astronaut(), fc.hopper()
    shots = [_shot([(a, 120, 180, 180), (b, 110, 560, 200)]), _shot([(b, 170, 150, 120), (a, 150, 520, 140)])]
    for i in range(N):
        if i < CUT:
            t, img = i / CUT, shots[0]
            s, x0, y0 = 1.0, 60 + 90 * t + 3 * np.sin(i / 5), 70 + 10 * t + 2 * np.sin(i / 7)
        else:
            t, img = (i - CUT) / (N - CUT), shots[1]
            s, x0, y0 = 1.0 + 0.12 * t, 200 - 80 * t + 2 * np.sin(i / 4), 60 + 3 * np.cos(i / 6)
        m = np.array([[s, 0, -x0 * s], [0, s, -y0 * s]])
        frame = cv2.warpAffine(img, m, (W, H), flags=cv2.INTER_LINEAR)
        noise = rng.normal(0, 3.0, frame.shape)
        yield np.clip(frame + noise, 0, 255).astype(np.uint8)


def write_film(path: Path) -> Path:
    """The clip as H.264 (crf 20) at 24000/1001 fps."""
    import subprocess

    args = ["ffmpeg", "-v", "error", "-y", "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{W}x{H}",
            "-framerate", "24000/1001", "-i", "-", "-c:v", "libx264", "-preset", "veryfast", "-crf", "20",
            "-pix_fmt", "yuv420p", str(path)]
    proc = subprocess.Popen(args, stdin=subprocess.PIPE)
    try:
        for f in film_frames():
            proc.stdin.write(np.ascontiguousarray(f).tobytes())
    finally:
        proc.stdin.close()
        if proc.wait(timeout=300) != 0:
            raise RuntimeError("ffmpeg could not write the film clip")
    return Path(path)


if __name__ == "__main__":
    print(write_film(Path(sys.argv[1] if len(sys.argv) > 1 else "film.mp4")))
