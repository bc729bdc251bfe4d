#!/usr/bin/env python3
"""Write ``lipsync/runtime/int8_calibration.npz``: the inputs the int8 backend calibrates and checks on.

    python scripts/make_int8_calibration.py

The library cannot read test data or call a TTS engine when it quantizes a
checkpoint, so what it needs ships inside the package (about 0.2 MB):

* ``face``: the example portrait's face (``assets/astronaut.jpg``, public
  domain), found with the OpenCV detector and padded like the pipeline does,
  then cut out with a 25 % margin on every side and resized to 144x144 BGR.
  ``face_box`` is where the 96x96 crop's box lies in it. At run time the
  backend draws augmented crops from it (box jitter, flips, exposure, colour
  balance, blur, noise) so that activations of other faces are covered too.
* ``mel_calibration`` / ``mel_heldout``: the model's mel spectrogram
  (:func:`lipsync.features.melspectrogram`, float16) of espeak-ng speech,
  sentences and voices disjoint between the two: the calibration set only
  sets the quantization ranges; the held-out set only checks the result.

espeak-ng's output is generated, not recorded, and carries no licence terms.
Different espeak-ng builds give slightly different audio; the file is made
once and committed, so every installation calibrates on the same data.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
OUT = ROOT / "lipsync" / "runtime" / "int8_calibration.npz"

#: (voice, words per minute, pitch 0-99, text)
CALIBRATION = [
    ("en-us", 175, 50, "The quick brown fox jumps over the lazy dog, while five wizards box and hop."),
    ("en-gb", 150, 40, "Peter piped a peck of pickled peppers; how many did he pipe, Peter asked."),
    ("en-us+f3", 190, 65, "She sells sea shells by the sea shore, and the shells she sells are surely real."),
    ("en-us+m3", 140, 35, "Would you believe a bowl of warm oatmeal could make my morning much better?"),
    ("de", 160, 50, "Zwoelf Boxkaempfer jagen Viktor quer ueber den grossen Sylter Deich."),
    ("es", 170, 55, "El veloz murcielago hindu comia feliz cardillo y kiwi, la ciguena tocaba el saxofon."),
]
HELDOUT = [
    ("en-us+f2", 165, 60, "Thank you for calling. Please leave a message after the tone, and we will be back soon."),
    ("fr", 165, 45, "Portez ce vieux whisky au juge blond qui fume, puis chantez avec moi."),
]


def speak(voice: str, wpm: int, pitch: int, text: str, tmp: Path) -> np.ndarray:
    from lipsync.media.audio import load_audio

    wav = tmp / "s.wav"
    subprocess.run(["espeak-ng", "-v", voice, "-s", str(wpm), "-p", str(pitch), "-w", str(wav), text], check=True)
    samples, _ = load_audio(wav, sample_rate=16000)
    return samples


def mel_of(lines, tmp: Path) -> np.ndarray:
    from lipsync import features

    pause = np.zeros(int(0.25 * features.SAMPLE_RATE), np.float32)  # a short pause between sentences
    rng = np.random.default_rng(0)
    parts = []
    for line in lines:
        parts += [speak(*line, tmp), pause + rng.normal(0, 1e-4, pause.shape).astype(np.float32)]
    return features.melspectrogram(np.concatenate(parts)).astype(np.float16)


def face_region() -> tuple[np.ndarray, np.ndarray]:
    import cv2

    from lipsync.face import HaarDetector, find_face
    from lipsync.media.images import load_image

    rgb = load_image(ROOT / "assets" / "astronaut.jpg")
    box = find_face(rgb, HaarDetector())
    h, w = box.height, box.width
    my, mx = h // 4, w // 4
    y1, y2, x1, x2 = box.y1 - my, box.y2 + my, box.x1 - mx, box.x2 + mx
    pad = max(0, -y1, -x1, y2 - rgb.shape[0], x2 - rgb.shape[1])
    big = cv2.copyMakeBorder(rgb, pad, pad, pad, pad, cv2.BORDER_REFLECT)
    region = big[y1 + pad : y2 + pad, x1 + pad : x2 + pad, ::-1]
    size = 144
    sy, sx = size / region.shape[0], size / region.shape[1]
    out = cv2.resize(np.ascontiguousarray(region), (size, size), interpolation=cv2.INTER_AREA)
    inner = np.array([my * sy, (my + h) * sy, mx * sx, (mx + w) * sx], np.float32)
    return out, inner


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        calib = mel_of(CALIBRATION, Path(tmp))
        held = mel_of(HELDOUT, Path(tmp))
    face, box = face_region()
    np.savez_compressed(OUT, face=face, face_box=box, mel_calibration=calib, mel_heldout=held)
    print(f"{OUT}: face {face.shape}, calibration mel {calib.shape}, held-out mel {held.shape}, "
          f"{OUT.stat().st_size / 1024:.0f} KiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
