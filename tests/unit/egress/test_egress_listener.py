"""The proxy's CPU budget, on fake clocks: what the sandbox makes the proxy do is capped."""

from __future__ import annotations

import pytest

from hutch.egress.listener import CpuBudget


class Clocks:
    def __init__(self) -> None:
        self.cpu_s = 0.0
        self.wall_s = 0.0

    def cpu(self) -> float:
        return self.cpu_s

    def wall(self) -> float:
        return self.wall_s

    def busy(self, seconds: float, share: float) -> None:
        """`seconds` of wall time during which the thread used `share` of a core."""
        self.wall_s += seconds
        self.cpu_s += seconds * share


def budget(clocks: Clocks, share: float = 0.5, burst: float = 2.0) -> CpuBudget:
    return CpuBudget(share, burst, cpu=clocks.cpu, wall=clocks.wall)


def test_use_within_the_share_never_pauses() -> None:
    clocks = Clocks()
    b = budget(clocks)
    for _ in range(10_000):
        clocks.busy(0.02, 0.49)
        assert b.overdraft() == 0.0


def test_a_burst_passes_then_a_busy_thread_is_held_to_the_share() -> None:
    clocks = Clocks()
    b = budget(clocks, share=0.5, burst=2.0)
    # A whole core for 4 s uses 4 s and earns 2 s: the 2 s burst covers exactly that.
    for _ in range(200):
        clocks.busy(0.02, 1.0)
        assert b.overdraft() == pytest.approx(0.0, abs=1e-9)
    # Then every busy tick must be paid for with a pause: used/wall converges to the share.
    start_cpu, start_wall = clocks.cpu_s, clocks.wall_s
    for _ in range(5_000):
        clocks.busy(0.02, 1.0)
        pause = b.overdraft()
        assert pause > 0.0
        clocks.busy(pause, 0.0)  # the loop sleeps: wall time passes, no CPU is used
        assert b.overdraft() == pytest.approx(0.0, abs=1e-9)
    used = (clocks.cpu_s - start_cpu) / (clocks.wall_s - start_wall)
    assert used == pytest.approx(0.5, rel=1e-6)


def test_idle_time_refills_the_burst_but_no_more() -> None:
    clocks = Clocks()
    b = budget(clocks, share=0.5, burst=2.0)
    clocks.busy(3600.0, 0.0)  # an hour idle banks at most the burst
    assert b.overdraft() == 0.0
    clocks.busy(4.0, 1.0)  # 4 s of a core: 2 s of burst + 2 s earned
    assert b.overdraft() == pytest.approx(0.0, abs=1e-9)
    clocks.busy(1.0, 1.0)  # one more second: 0.5 s over, paid back at 0.5 core
    assert b.overdraft() == pytest.approx(1.0)
