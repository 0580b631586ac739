"""The pacer that slices a shadow's work (serving/pacing.py): when it pauses, how it sizes its
pauses from the work planned, and that flat out it never pauses. What bench/cpu_neighbour.py
measured is why it exists; here a test's clock runs it, and no duration is asserted."""

from __future__ import annotations

import pytest

from nbdeploy.serving.pacing import MAX_PAUSE_S, MIN_PAUSE_S, SLICE_S, Pacer


class Clock:
    """Time that moves only when told to (work) or slept in (pauses)."""

    def __init__(self) -> None:
        self.now, self.slept = 0.0, []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def test_it_pauses_once_a_slice_has_run_and_not_before() -> None:
    clock = Clock()
    pace = Pacer(clock=clock, sleep=clock.sleep)
    pace.plan(work_s=0.01, over_s=0.1)
    clock.now += SLICE_S / 2
    pace()
    assert pace.paced and pace.pauses == 0
    clock.now += SLICE_S / 2
    pace()
    assert pace.pauses == 1 and clock.slept == [pytest.approx(SLICE_S * (0.1 / 0.01 - 1))]
    pace()  # right after a pause a new slice begins
    assert pace.pauses == 1


def test_the_pauses_spread_the_planned_work_over_the_time_given() -> None:
    pace = Pacer()
    pace.plan(work_s=0.05, over_s=1.0)  # 100 slices over a second: a pause of 9.5 ms after each
    assert pace.paced and pace.pause_s == pytest.approx(SLICE_S * (1.0 / 0.05 - 1))
    pace.plan(work_s=0.0, over_s=1.0)  # nothing known to do: the longest pause
    assert pace.paced and pace.pause_s == MAX_PAUSE_S
    pace.plan(work_s=1e-6, over_s=1.0)
    assert pace.pause_s == MAX_PAUSE_S
    heaviest = SLICE_S / (SLICE_S + MIN_PAUSE_S)  # of a second: the most work still paced
    pace.plan(work_s=heaviest * 0.99, over_s=1.0)
    assert pace.paced and MIN_PAUSE_S <= pace.pause_s < 1.02 * MIN_PAUSE_S


def test_work_that_even_the_shortest_pauses_would_not_end_in_time_is_done_flat_out() -> None:
    clock = Clock()
    pace = Pacer(clock=clock, sleep=clock.sleep)
    pace.plan(work_s=1.01 * SLICE_S / (SLICE_S + MIN_PAUSE_S), over_s=1.0)
    assert not pace.paced
    clock.now += 3 * SLICE_S
    pace()
    assert pace.pauses == 0 and not clock.slept
    pace.plan(work_s=0.01, over_s=1.0)  # the next stretch is light again: paced
    clock.now += SLICE_S
    pace()
    assert pace.paced and pace.pauses == 1
