"""A progress bar under a cell for long jobs (batch scoring): an HTML ``<progress>`` element
with its text, and the text alone where HTML is not shown; redrawn at most twice a second."""

from __future__ import annotations

import time
from collections.abc import Callable

from nbdeploy.reprs import esc

__all__ = ["progress_bar"]


def _text(what: str, done: int, total: int | None) -> str:
    if total:
        return f"{what}: {done:,} of {total:,} rows ({100 * done / total:.0f} %)"
    return f"{what}: {done:,} rows"


def progress_bar(what: str) -> Callable[[int, int | None], None]:
    """``update(done, total)``; the bar appears at the first update."""
    from IPython.display import display

    handle, last = None, 0.0

    def update(done: int, total: int | None) -> None:
        nonlocal handle, last
        now = time.monotonic()
        if handle is not None and now - last < 0.5 and done != total:
            return
        last = now
        text = _text(what, done, total)
        bar = f'<progress value="{done}" max="{total}"></progress> ' if total else ""
        data = {"text/plain": text, "text/html": f"<div>{bar}{esc(text)}</div>"}
        if handle is None:
            handle = display(data, raw=True, display_id=True)
        else:
            handle.update(data, raw=True)

    return update
