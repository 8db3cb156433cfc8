"""Progress display for the long steps of renting (bidding, verifying, launching)."""

from __future__ import annotations

import sys
import time
from typing import IO, Callable, Optional, Union

from ._native import ProgressEvent

#: What ``progress=`` accepts: ``None`` (a display on a terminal, silent otherwise),
#: ``True`` / ``False`` (always / never), or a callable receiving each ``ProgressEvent``.
Progress = Union[None, bool, Callable[[ProgressEvent], object]]

_LABELS = {
    "published": "bidding",
    "bids_in": "ranking",
    "matched": "matched",
    "verifying": "verifying",
    "verified": "verified",
    "challenge_failed": "failover",
    "no_match": "no match",
    "escrow_locked": "escrow",
    "launching": "launching",
    "running": "running",
    "settled": "settled",
}


class ProgressDisplay:
    """Writes one line per step to a stream (stderr by default), with the time since the
    order was published, e.g. ``spheron [ 0.21s] verifying  ams-hyperscale claims h100-sxm``."""

    def __init__(self, stream: Optional[IO[str]] = None) -> None:
        self._stream = stream if stream is not None else sys.stderr
        self._start: Optional[float] = None

    def __call__(self, event: ProgressEvent) -> None:
        now = time.monotonic()
        if self._start is None or event.kind == "published":
            self._start = now
        label = _LABELS.get(event.kind, event.kind)
        self._stream.write(f"spheron [{now - self._start:5.2f}s] {label:<10} {event.message}\n")
        self._stream.flush()


def resolve(progress: Progress) -> Optional[Callable[[ProgressEvent], object]]:
    """The callback for a ``progress=`` argument."""
    if progress is None:
        isatty = getattr(sys.stderr, "isatty", None)
        return ProgressDisplay() if isatty is not None and isatty() else None
    if progress is True:
        return ProgressDisplay()
    if progress is False:
        return None
    if callable(progress):
        return progress
    raise TypeError(f"progress must be None, a bool or a callable, not {type(progress).__name__}")
