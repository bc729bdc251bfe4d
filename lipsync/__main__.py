"""``python -m lipsync``: the command line (see :mod:`lipsync.cli`)."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
