"""Limits that a stage enforces and the options expose, kept below both.

:mod:`lipsync.options` offers them as knobs' defaults and :mod:`lipsync.speech`
enforces them; defining them here (no imports) lets both read the same number
without either importing the other.
"""

from __future__ import annotations

__all__ = ["MAX_CHARS"]

MAX_CHARS = 1000  #: default text length limit, in characters of the cleaned text
