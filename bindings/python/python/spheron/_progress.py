"""Progress display for the long steps of renting (bidding, verifying, launching).

Each rent gets its own display, fed only that rent's events (two rents at once, from threads
or ``asyncio.gather``, never show each other's progress). It draws with ``rich`` when it is
installed, else ``tqdm`` (``tqdm.auto``: a widget in Jupyter), else plain lines; install
either with ``pip install 'spheron[progress]'``.
"""

from __future__ import annotations

import importlib
import sys
import time
from typing import IO, Any, Callable, Optional, Union

from ._native import ProgressEvent

#: What ``progress=`` accepts: ``None`` (a display on a terminal or in a Jupyter notebook,
#: silent otherwise), ``True`` / ``False`` (always / never), or a callable receiving each
#: ``ProgressEvent``.
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

#: The steps of a successful rent, in order (a bar's positions).
_STEPS = ["published", "bids_in", "matched", "verifying", "verified", "escrow_locked", "launching", "running"]

#: Steps after which a rent's display is done.
_FINAL = {"running", "no_match", "settled"}

#: The drawing styles, best first.
STYLES = ("rich", "tqdm", "plain")


def _importable(name: str) -> bool:
    try:
        importlib.import_module(name)
    except ImportError:
        return False
    return True


def in_notebook() -> bool:
    """Whether this runs in a Jupyter kernel (where stderr is no terminal but a cell's
    output shows what is written to it)."""
    ipython = sys.modules.get("IPython")
    if ipython is None:
        return False
    get = getattr(ipython, "get_ipython", None)
    shell = get() if callable(get) else None
    return shell is not None and type(shell).__name__ == "ZMQInteractiveShell"


def default_style() -> str:
    """``rich`` when it is installed, else ``tqdm``, else ``plain``."""
    for style in STYLES[:-1]:
        if _importable(style):
            return style
    return "plain"


class ProgressDisplay:
    """Shows one rent's steps with the time since its order was published, e.g.
    ``spheron order 12 [ 0.21s] verifying  ams-hyperscale claims h100-sxm``.

    ``style`` is ``"rich"``, ``"tqdm"`` or ``"plain"`` (default: the best installed, see
    :func:`default_style`; ``"plain"`` when a ``stream`` is given). Plain lines and rich go
    to ``stream`` (default stderr); tqdm draws one bar per rent."""

    def __init__(self, stream: Optional[IO[str]] = None, *, style: Optional[str] = None) -> None:
        if style is None:
            style = "plain" if stream is not None else default_style()
        if style not in STYLES:
            raise ValueError(f"style must be one of {', '.join(STYLES)}, not {style!r}")
        self._stream = stream if stream is not None else sys.stderr
        self._start: Optional[float] = None
        self.style: str = style
        self._console: Any = None
        self._bar: Any = None
        if style == "rich":
            console = importlib.import_module("rich.console")
            self._console = console.Console(file=self._stream, highlight=False)

    def _line(self, event: ProgressEvent, elapsed: float) -> str:
        label = _LABELS.get(event.kind, event.kind)
        return f"spheron order {event.order} [{elapsed:5.2f}s] {label:<10} {event.message}"

    def __call__(self, event: ProgressEvent) -> None:
        now = time.monotonic()
        if self._start is None or event.kind == "published":
            self._start = now
        elapsed = now - self._start
        if self.style == "rich":
            text = importlib.import_module("rich.text").Text(self._line(event, elapsed))
            self._console.print(text)
        elif self.style == "tqdm":
            self._draw_bar(event, elapsed)
        else:
            self._stream.write(self._line(event, elapsed) + "\n")
            self._stream.flush()

    def _draw_bar(self, event: ProgressEvent, elapsed: float) -> None:
        if self._bar is None:
            auto = importlib.import_module("tqdm.auto")
            self._bar = auto.tqdm(
                total=len(_STEPS), desc=f"spheron order {event.order}", unit="step", file=self._stream, leave=True
            )
        if event.kind in _STEPS:
            self._bar.n = _STEPS.index(event.kind) + 1
        self._bar.set_postfix_str(f"{_LABELS.get(event.kind, event.kind)}: {event.message}", refresh=False)
        self._bar.refresh()
        if event.kind in _FINAL:
            self._bar.close()
            self._bar = None


def resolve(progress: Progress) -> Optional[Callable[[ProgressEvent], object]]:
    """The callback for a ``progress=`` argument: a new display for each rent."""
    if progress is None:
        isatty = getattr(sys.stderr, "isatty", None)
        shown = (isatty is not None and isatty()) or in_notebook()
        return ProgressDisplay() if shown else None
    if progress is True:
        return ProgressDisplay()
    if progress is False:
        return None
    if callable(progress):
        return progress
    raise TypeError(f"progress must be None, a bool or a callable, not {type(progress).__name__}")
