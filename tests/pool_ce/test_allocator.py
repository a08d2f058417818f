"""The core allocator and the masonry policies."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vmagent.errors import AllocationError
from vmagent.pool_ce.allocator import Allocator
from vmagent.pool_ce.masonry import (
    Backfill,
    Fifo,
    Greedy,
    PoolView,
    RunningPayload,
    RuntimeLearner,
    WaitingPayload,
)

events = st.lists(
    st.tuples(
        st.sampled_from(["start", "finish", "crash", "drain", "adopt"]),
        st.integers(0, 9),
        st.integers(1, 8),
        st.integers(0, 4000),
    ),
    max_size=60,
)


@settings(max_examples=200, deadline=None)
@given(events)
def test_never_over_allocates_or_leaks(sequence):
    """For any sequence of start, finish, crash, drain and adopt events, cores and memory add up."""
    alloc = Allocator(range(8), 8000)
    model = {}
    for kind, n, cores, memory in sequence:
        pid = f"p{n}"
        try:
            if kind == "start":
                cpus = alloc.allocate(pid, cores, memory)
                assert len(cpus) == cores
                model[pid] = (set(cpus), memory)
            elif kind in ("finish", "crash"):
                alloc.release(pid)
                model.pop(pid)
            elif kind == "drain":
                alloc.drain()
            elif kind == "adopt":
                alloc.adopt(pid, [cores - 1], memory)
                model[pid] = ({cores - 1}, memory)
        except AllocationError:
            pass
        busy = [cpu for cpus, _ in model.values() for cpu in cpus]
        assert len(busy) == len(set(busy)), "a CPU is double-booked"
        assert alloc.free_cores == 8 - len(busy) >= 0
        assert alloc.free_memory_mb == 8000 - sum(m for _, m in model.values()) >= 0
        assert {k: set(v[0]) for k, v in alloc.held().items()} == {
            k: v[0] for k, v in model.items()
        }


def test_drain_refuses_new_work_but_releases():
    """After drain nothing new is allocated, but running payloads can still release."""
    alloc = Allocator(range(2), 100)
    alloc.allocate("a", 1, 10)
    alloc.drain()
    with pytest.raises(AllocationError):
        alloc.allocate("b", 1, 10)
    alloc.release("a")
    assert alloc.free_cores == 2


def view(waiting, running=(), free=4, total=4, shutdown=None, now=0.0):
    return PoolView(
        now,
        shutdown,
        total,
        16000,
        free,
        16000 - sum(r.memory_mb for r in running),
        tuple(running),
        tuple(waiting),
    )


def wait(pid, cores, runtime, memory=0):
    return WaitingPayload(pid, cores, memory, runtime)


def test_backfill_reserves_for_whole_node_payload():
    """Backfill holds cores for a whole-node payload and only backfills what ends before it can start."""
    running = [RunningPayload("r", 2, 0, 0.0, 100.0)]
    waiting = [wait("whole", 4, 50), wait("long", 1, 500), wait("short", 1, 60)]
    assert Backfill().decide(view(waiting, running, free=2)) == ["short"]
    assert Greedy().decide(view(waiting, running, free=2)) == ["long", "short"]
    assert Fifo().decide(view(waiting, running, free=2)) == []


def test_backfill_keeps_margin_before_shutdown():
    """A payload that would not finish before the VM's shutdown (with margin) is not started."""
    waiting = [wait("long", 1, 3600), wait("short", 1, 600)]
    assert Backfill().decide(view(waiting, shutdown=1800.0)) == ["short"]


def test_memory_is_a_second_dimension():
    """Payloads that fit the cores but not the memory are not started together."""
    waiting = [wait("a", 1, 10, memory=10000), wait("b", 1, 10, memory=10000)]
    assert Backfill().decide(view(waiting)) == ["a"]


def test_learner_corrects_poor_estimates():
    """Observed runtimes of a kind correct its declared estimates."""
    learner = RuntimeLearner(default_runtime=100)
    for _ in range(5):
        learner.observe("sim", 100, 300)
    assert learner.estimate("sim", 100) == pytest.approx(300)
    assert learner.estimate("other", None) == 100


def test_near_shutdown_likeliest_to_finish_first():
    """Near the shutdown, payloads sure to finish go in priority order, then the likeliest of the rest."""
    spread = tuple(float(s) for s in range(100, 1100, 100))  # 100 s .. 1000 s, ten samples
    waiting = [
        WaitingPayload("unlikely", 1, 0, 500, "k", tuple(s * 3 for s in spread)),  # 1 in 10
        WaitingPayload("even", 1, 0, 500, "k", tuple(s * 1.2 for s in spread)),  # 4 in 10
        WaitingPayload("sure", 1, 0, 100, "k", tuple(s / 2 for s in spread)),  # all
        WaitingPayload("likely", 1, 0, 300, "k", tuple(s * 0.8 for s in spread)),
    ]  # 6 in 10
    policy = Backfill(confident=0.9, hopeful=0.3)
    decided = policy.decide(view(waiting, free=4, shutdown=500.0))
    assert decided == ["sure", "likely", "even"]
    assert policy.finish_chance(view(waiting, shutdown=500.0), waiting[1]) == pytest.approx(0.4)
    assert policy.finish_chance(view(waiting), waiting[0]) == 1.0  # no shutdown known


def test_end_game_goes_longest_first_without_reserving():
    """With less time left than the median estimate, likely payloads go longest first, nothing reserved."""
    running = [RunningPayload("r", 3, 0, 0.0, 500.0)]
    waiting = [
        wait("whole", 4, 300),
        wait("short", 1, 100),
        wait("mid", 1, 500),
        wait("long", 1, 650),
        *(wait(f"too-long-{i}", 1, 1000 + 100 * i) for i in range(4)),
    ]
    end = view(waiting, running, free=1, shutdown=750.0)  # median estimate 825 s, 750 s left
    assert not Backfill().in_end_game(view(waiting, running, free=1, shutdown=2000.0))
    assert Backfill().in_end_game(end) and not Backfill(end_game=0).in_end_game(end)
    # the longest that fits the time left (650 s + 65 s margin); 'short' stays for the last minutes
    assert Backfill().decide(end) == ["long"]
    # before the end game: 'whole' is reserved from t=500 and only 'short' ends before that
    assert Backfill(end_game=0).decide(end) == ["short"]


def test_overrunning_payload_is_expected_to_need_more_time():
    """A running payload past its estimate holds the reservation a further share of its run so far."""
    running = [RunningPayload("late", 2, 0, 0.0, 1000.0)]
    waiting = [wait("whole", 4, 100), wait("mid", 1, 400), wait("long", 1, 900)]
    # at t=2000 'late' has run 2000 s, 1000 s over: expected to end at 2500, so 'mid' (ends 2400) fits
    assert Backfill(overrun_fraction=0.25).decide(view(waiting, running, free=2, now=2000.0)) == [
        "mid"
    ]


def test_running_payload_end_follows_its_spread_and_run_so_far():
    """With a spread, a running payload ends at a quantile of the runtimes still possible after its run so far."""
    spread = tuple(float(s) for s in range(100, 1100, 100))  # 100 s .. 1000 s
    running = RunningPayload("r", 1, 0, 0.0, 300.0, spread)
    policy = Backfill(running_quantile=0.5)
    assert policy.expected_end(0.0, running) == 600.0  # the median of all ten
    assert policy.expected_end(650.0, running) == 900.0  # 700 .. 1000 are left
    assert (
        policy.expected_end(1200.0, running) == 1500.0
    )  # past all of them: a further quarter of its run
    assert (
        Backfill().expected_end(200.0, RunningPayload("r", 1, 0, 0.0, 300.0)) == 300.0
    )  # no spread


def test_reservation_uses_what_is_now_known_of_running_payloads():
    """A stale estimated end (from when the payload started) gives way to the spread learnt since."""
    waiting = [wait("whole", 4, 100), wait("long", 1, 500)]
    stale = [RunningPayload("r", 2, 0, 0.0, 100.0)]
    learnt = [RunningPayload("r", 2, 0, 0.0, 100.0, (800.0, 900.0, 1000.0))]
    # the stale end reserves from t=100, which 'long' would delay; the learnt one from t=1000
    assert Backfill().decide(view(waiting, stale, free=2, now=50.0)) == []
    assert Backfill().decide(view(waiting, learnt, free=2, now=50.0)) == ["long"]


def test_learner_spread_follows_observed_ratios():
    """The spread scales the declared runtime by every observed ratio; without one, observed runtimes."""
    learner = RuntimeLearner(default_runtime=100, quantile=0.5)
    assert learner.spread("sim", 100) == ()
    for ratio in (0.5, 2.0, 1.0):
        learner.observe("sim", 100, 100 * ratio)
    assert learner.spread("sim", 10) == pytest.approx((5.0, 10.0, 20.0))
    assert learner.estimate("sim", 10) == pytest.approx(10.0)
    assert learner.spread("sim", None) == pytest.approx((50.0, 100.0, 200.0))
