"""Progress lines for steps that take more than a few seconds, on stderr so that stdout stays the result."""

from __future__ import annotations

import sys
import time

_START = time.monotonic()


def progress(message: str) -> None:
    """One line saying what is happening now, with the seconds since the command started."""
    print(f"[{time.monotonic() - _START:5.0f}s] {message}", file=sys.stderr, flush=True)
