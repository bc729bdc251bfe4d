"""Synthesis speed of the voices: real-time factor = seconds of audio / seconds of wall time.

    .venv/bin/python benchmarks/tts_rtf.py [--repeats 5] [--threads N] [--skip-full]

Runs offline. espeak-ng is the real engine. The Coqui path runs lipsync.tts
end to end (ModelManager -> Synthesizer -> VITS) on randomly initialised VITS
models saved where a downloaded ``tts_models/en/vctk/vits`` lives: a tiny one
(the test stand-in) and one with the released model's architecture (default
VitsArgs, 109 speakers), since the real weights cannot be downloaded here.

Random weights cost the same compute per phoneme and per output frame as
trained ones, but a random duration predictor gives phonemes almost no length
(the released-size model says a whole sentence in 0.4 s). So each model's
``length_scale`` is first calibrated to a natural speaking rate
(:data:`CHARS_PER_S`), which makes the decoder produce as many frames as a
trained voice would; the factor is printed.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

CHARS_PER_S = 14.0  #: a natural English reading rate (about 160 words per minute)
TEXT = (
    "The quick brown fox jumps over the lazy dog. "
    "A talking portrait needs a voice, and this sentence gives it one. "
    "Speech synthesis should run faster than real time, even on a small computer."
)


def calibrate(model) -> float:
    """Set the loaded VITS' length_scale so it speaks about CHARS_PER_S; return the factor."""
    import numpy as np
    import torch

    from lipsync.speech import activity as audio

    # The Synthesizer cuts each sentence at its first 0.8 s of "silence"; random
    # weights speak so quietly that it would cut them short: keep all they say.
    model.tts.synthesizer.tts_config.audio["do_trim_silence"] = False
    vits = model.tts.synthesizer.tts_model
    vits.length_scale = 1.0
    sentence = "The quick brown fox jumps over the lazy dog."
    with torch.inference_mode():
        wav = np.asarray(model.tts.tts(sentence, speaker="p225", split_sentences=False), np.float32)
    rng = audio.active_range(wav, model.sample_rate)
    got = max((rng[1] - rng[0]) if rng else len(wav), 256) / model.sample_rate
    scale = (len(sentence) / CHARS_PER_S) / got
    vits.length_scale = scale
    return scale


def measure(voice: str, repeats: int, prepare=None) -> dict:
    from lipsync.speech import tts

    t0 = time.perf_counter()
    first = tts.synthesize("Hello there.", voice)  # loads the model (Coqui) and warms up
    cold = time.perf_counter() - t0
    note = prepare() if prepare else ""
    walls, audios = [], []
    for i in range(repeats):
        t0 = time.perf_counter()
        s = tts.synthesize(TEXT + f" Run {i + 1}.", voice)
        walls.append(time.perf_counter() - t0)
        audios.append(s.duration_s)
    rtfs = [a / w for a, w in zip(audios, walls)]
    return {
        "voice": voice + note,
        "cold_s": cold,
        "audio_s": statistics.mean(audios),
        "wall_s": statistics.median(walls),
        "rtf": statistics.median(rtfs),
        "rtf_range": (min(rtfs), max(rtfs)),
        "rate": first.sample_rate,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--skip-full", action="store_true", help="skip the released-size VITS")
    a = p.parse_args()
    os.environ["HF_HUB_OFFLINE"] = "1"  # never download
    import torch

    if a.threads:
        torch.set_num_threads(a.threads)
    from test_tts import build_random_vits

    from lipsync.speech import tts
    from lipsync.speech.coqui import load_model

    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads, {os.cpu_count()} cores")
    rows = [measure("espeak:en-us", a.repeats)]
    speakers = list(tts.VCTK_SPEAKERS) + [f"x{i}" for i in range(109 - len(tts.VCTK_SPEAKERS))]
    for size in ["tiny"] + ([] if a.skip_full else ["full"]):
        with tempfile.TemporaryDirectory(prefix=f"tts-{size}-") as home:
            t0 = time.perf_counter()
            d = build_random_vits(Path(home), speakers, size=size)
            mb = (d / "model_file.pth").stat().st_size / 1e6
            print(f"built random {size} VITS ({mb:.0f} MB) in {time.perf_counter() - t0:.1f} s")
            os.environ["TTS_HOME"] = home

            def prepare(size=size, mb=mb):
                scale = calibrate(load_model(tts.VCTK))
                return f" [random {size} VITS, {mb:.0f} MB, length_scale {scale:.3g}]"

            rows.append(measure("coqui:vctk/p225", a.repeats, prepare))
    print()
    print(f"load average {os.getloadavg()[0]:.1f} (other work on the machine slows every number down)")
    print(f"{'voice':66} {'rate':>6} {'cold s':>7} {'audio s':>8} {'wall s':>7} {'RTF':>7}  range")
    for r in rows:
        lo, hi = r["rtf_range"]
        print(
            f"{r['voice']:66} {r['rate']:>6} {r['cold_s']:7.2f} {r['audio_s']:8.2f} {r['wall_s']:7.2f} "
            f"{r['rtf']:7.2f}  {lo:.2f}-{hi:.2f}"
        )
    print("RTF = seconds of audio / seconds of wall time per call, median of the runs (> 1: faster than real time).")
    print('cold s = the first call ("Hello there."): model load and warm-up (Coqui);')
    print("audio s / wall s = one call of the 3-sentence text (median wall time).")


if __name__ == "__main__":
    main()
