"""Synthetic driving videos for the tests: the example portrait panned and zoomed along a known path."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np

from conftest import EXAMPLE

#: the OpenCV Haar box (x1, y1, x2, y2) of the face in the 512x512 example portrait
EXAMPLE_FACE = (177.0, 67.0, 270.0, 169.0)
SIZE = 256


def write_video(path: Path, frames, fps: float = 25, *, codec: list[str] | None = None, extra: list[str] | None = None) -> Path:
    """Encode RGB uint8 frames (all the same size) with ffmpeg; H.264 (crf 12) by default."""
    frames = iter(frames)
    first = next(frames)
    h, w = first.shape[:2]
    args = ["ffmpeg", "-v", "error", "-y", "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{w}x{h}",
            "-framerate", f"{fps:g}", "-i", "-", *(extra or []),
            *(codec or ["-c:v", "libx264", "-preset", "veryfast", "-crf", "12", "-pix_fmt", "yuv420p"]), str(path)]
    proc = subprocess.Popen(args, stdin=subprocess.PIPE)
    try:
        proc.stdin.write(np.ascontiguousarray(first).tobytes())
        for f in frames:
            proc.stdin.write(np.ascontiguousarray(f).tobytes())
    finally:
        proc.stdin.close()
        assert proc.wait(timeout=120) == 0
    return Path(path)


def portrait() -> np.ndarray:
    import cv2

    return np.ascontiguousarray(cv2.imread(str(EXAMPLE))[:, :, ::-1])


def pan_path(i: int, n: int) -> tuple[float, float, float]:
    """(crop side, x0, y0) of frame ``i`` of ``n``: a 300 px window zooming in to 250 px while
    moving 40 px right and 20 px down over the example portrait."""
    u = i / max(1, n - 1)
    return 300.0 - 50.0 * u, 70.0 + 40.0 * u, 20.0 + 20.0 * u


def pan_frame(img: np.ndarray, i: int, n: int) -> np.ndarray:
    import cv2

    s, x0, y0 = pan_path(i, n)
    k = SIZE / s
    m = np.array([[k, 0.0, -x0 * k], [0.0, k, -y0 * k]])
    return cv2.warpAffine(img, m, (SIZE, SIZE), flags=cv2.INTER_AREA)


def pan_truth(i: int, n: int) -> np.ndarray:
    """Where the example's face box is in frame ``i``: (x1, y1, x2, y2)."""
    s, x0, y0 = pan_path(i, n)
    k = SIZE / s
    x1, y1, x2, y2 = EXAMPLE_FACE
    return np.array([(x1 - x0) * k, (y1 - y0) * k, (x2 - x0) * k, (y2 - y0) * k])


def pan_frames(n: int) -> list[np.ndarray]:
    img = portrait()
    return [pan_frame(img, i, n) for i in range(n)]


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10.0 * np.log10(255.0**2 / mse)


def decode_frames(path: Path) -> np.ndarray:
    """Every frame of a video as (N, H, W, 3) uint8 RGB (small test videos only)."""
    import json

    info = json.loads(subprocess.run(
        ["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries", "stream=width,height", "-of", "json",
         str(path)], check=True, capture_output=True, text=True).stdout)["streams"][0]
    w, h = info["width"], info["height"]
    raw = subprocess.run(
        ["ffmpeg", "-v", "error", "-i", str(path), "-map", "0:v:0", "-f", "rawvideo", "-pix_fmt", "rgb24", "-"],
        check=True, capture_output=True,
    ).stdout
    return np.frombuffer(raw, np.uint8).reshape(-1, h, w, 3)


def speechlike(seconds: float, rate: int = 16000, pauses: tuple[tuple[float, float], ...] = ()) -> np.ndarray:
    """A 180 Hz tone in 4 Hz syllables (float32), silent over the ``pauses`` given as (start, end) seconds."""
    t = np.arange(int(seconds * rate)) / rate
    x = 0.3 * np.sin(2 * np.pi * 180 * t) * (0.55 + 0.45 * np.sin(2 * np.pi * 4 * t))
    for a, b in pauses:
        x[int(a * rate) : int(b * rate)] = 0.0
    return x.astype(np.float32)
