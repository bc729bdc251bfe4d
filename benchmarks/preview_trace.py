#!/usr/bin/env python3
"""``app.py`` with a timeline: what ``benchmarks/preview.py --app --trace`` starts instead of the app.

It runs the real app (same arguments) after wrapping, for measurement only, the
page's Generate handler (its start, the stages it reports, each segment it
yields) and Gradio's streaming video output (each segment's turn into a stream
chunk, and its parts: ffprobe, decoding the audio, muxing), each event written
as ``[unix time, what]`` to the JSON-lines file ``$LIPSYNC_TRACE``. (The page's
``PreviewVideo`` hands the library's segments over without Gradio's processing, so
those events now show only for chunks that take Gradio's way.) Gradio's
internals are wrapped by name: where a Gradio release renames them, that part
of the timeline is left out (and said so), the app still runs.
"""

from __future__ import annotations

import functools
import json
import os
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

_out = open(os.environ.get("LIPSYNC_TRACE", "trace.jsonl"), "a", buffering=1)
_lock = threading.Lock()


def mark(what: str) -> None:
    with _lock:
        _out.write(json.dumps([time.time(), what]) + "\n")


def _wrap_gradio() -> None:
    import gradio.components.video as gv

    real = gv.Video.stream_output

    async def stream_output(self, value, output_id, first_chunk):
        name = Path(str(value)).name if value else None
        mark(f"gradio chunk start {name}")
        out = await real(self, value, output_id, first_chunk)
        mark(f"gradio chunk done {name}")
        return out

    gv.Video.stream_output = stream_output
    for owner, name, static in ((gv.Video, "probe_chunk", True), (gv.Video, "mux_segment", True),
                                (gv, "decode_file_to_pcm", False)):
        fn = getattr(owner, name, None)
        if fn is None:
            mark(f"(gradio has no {name}: not traced)")
            continue

        def timed(*a, _fn=fn, _name=name, **k):
            t = time.time()
            try:
                return _fn(*a, **k)
            finally:
                mark(f"gradio   {_name} {time.time() - t:.3f} s")

        setattr(owner, name, staticmethod(timed) if static else timed)


def _wrap_handler() -> None:
    import lipsync.webapp.handlers as h

    real_make, real_reporter = h.make_generate_live, h.progress_reporter

    def make_generate_live(engine=None):
        fn = real_make(engine)

        @functools.wraps(fn)
        def traced(*a, **k):
            mark("handler start")
            for out in fn(*a, **k):
                first = out[0]
                if isinstance(first, str):
                    mark(f"handler yields {Path(first).name}")
                yield out
            mark("handler end")

        return traced

    def progress_reporter(progress):
        report, seen = real_reporter(progress), set()

        def traced(stage, done, total):
            if stage not in seen:
                seen.add(stage)
                mark(f"stage {stage}")
            return report(stage, done, total)

        return traced

    h.make_generate_live, h.progress_reporter = make_generate_live, progress_reporter


if __name__ == "__main__":
    try:
        _wrap_gradio()
    except Exception as e:  # noqa: BLE001 - a measurement aid: the app runs regardless
        mark(f"(gradio's streaming not traced: {e})")
    _wrap_handler()  # before the page is built: it takes the handler by name
    from lipsync.webapp import main

    main(sys.argv[1:])
