"""The Space's entry: the talking-portrait web app (the code is in :mod:`lipsync.webapp`).

Run it with ``python app.py [--host 0.0.0.0] [--port 7860] [--share]``. It runs
unchanged as a Hugging Face Space (ZeroGPU included): a Space cannot install
this project, so the package is imported from the repository's root, beside this file.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from lipsync.webapp import main  # noqa: E402 - after the path is set

if __name__ == "__main__":
    main()
