"""Background work done in slices a server's clients do not feel.

A process working beside a server on this 2-core machine delays the server's slowest answers
in proportion to how long it holds a CPU at a stretch, even at the lowest priority
(``SCHED_IDLE``) and with the other core free. ``bench/cpu_neighbour.py`` measures it: one wrk
client's p99 beside a process that burns 6 % of a core, over the same without it, was 1.12 and
1.25 when that came as a 60 ms burst each second, 1.10 and 1.16 as 2 ms every 33 ms, and 1.03
and 0.97 as 0.5 ms every 8 ms (12 % of a core as 0.5 ms every 4 ms: 1.08).

So a :class:`Pacer`, called between small steps of such work, pauses once the work has run
:data:`SLICE_S` since the last pause. :meth:`Pacer.plan` sizes the pauses so that the work
expected spreads over the time there is for it: a light load gets long pauses, a heavy one
short ones (down to :data:`MIN_PAUSE_S`, a ninth of a core); work that even those would not
end in time is done flat out: a load that heavy keeps the server busy anyway, and there
bursts measured no worse than slices (``bench/shadow_cost.py`` at 16 connections: 0.91 in
bursts, 1.05 paced with pauses down to 1 ms).

Work resumed after a pause runs about twice as slow as the same work done at a stretch (its
caches went cold), so pacing costs CPU: it buys the server's clients their tail latency.
"""

from __future__ import annotations

import time
from collections.abc import Callable

__all__ = ["MAX_PAUSE_S", "MIN_PAUSE_S", "SLICE_S", "Pacer"]

SLICE_S = 0.0005  # work at a stretch
MIN_PAUSE_S = 0.004  # then a pause: at most a ninth of a core ...
MAX_PAUSE_S = 0.016  # ... and at least 3 % of one, however light the load


class Pacer:
    """Call it between steps of background work: it sleeps :attr:`pause_s` each time the work
    has run :data:`SLICE_S` since the last pause (wall time: a preempted slice ends sooner).
    ``clock`` and ``sleep``: ``time``'s, or a test's."""

    def __init__(self, slice_s: float = SLICE_S, clock: Callable[[], float] = time.perf_counter,
                 sleep: Callable[[float], None] = time.sleep) -> None:  # fmt: skip
        self.slice_s, self.pause_s = slice_s, MAX_PAUSE_S
        self.clock, self.sleep = clock, sleep
        self.paced = True
        self.pauses = 0  # how often it paused, in all
        self._since = clock()

    def start(self, paced: bool = True) -> None:
        """A new stretch of work: a full slice before the first pause; ``paced=False``: no pauses."""
        self.paced = paced
        self._since = self.clock()

    def plan(self, work_s: float, over_s: float) -> None:
        """Start a stretch of about ``work_s`` seconds of work that should end within ``over_s``."""
        pause = self.slice_s * (over_s / work_s - 1) if work_s > 0 else MAX_PAUSE_S
        self.start(paced=pause >= MIN_PAUSE_S)
        self.pause_s = min(MAX_PAUSE_S, max(MIN_PAUSE_S, pause))

    def __call__(self) -> None:
        if self.paced and self.clock() - self._since >= self.slice_s:
            self.sleep(self.pause_s)
            self.pauses += 1
            self._since = self.clock()
