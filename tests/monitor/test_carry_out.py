"""Carrying out validated instructions, and the beat timetable, without a monitor or an endpoint."""

from __future__ import annotations

import random
from pathlib import Path

from vmagent import mjf
from vmagent.core import layout
from vmagent.monitor import instructions, schedule
from vmagent.monitor.instructions import Instruction, carry_out
from vmagent.monitor.links import Link
from vmagent.monitor.policies import Decision
from vmagent.testing import make_config


def test_every_action_of_the_schema_has_a_handler():
    """Each action the instruction check accepts has its ``handle_<action>`` in HANDLERS."""
    assert tuple(instructions.HANDLERS) == instructions.ACTIONS
    for action, handler in instructions.HANDLERS.items():
        assert handler is getattr(instructions, f"handle_{action}")


def test_drain_and_shutdown_at_act_on_disk_and_decide_nothing(tmp_path, clock):
    """A drain writes both drain files with its reason; a shutdown_at moves the MJF shutdowntime."""
    config = make_config(tmp_path, [])
    drained = carry_out(Instruction(1, "drain", "http#0"), config, clock)
    moved = carry_out(
        Instruction(2, "shutdown_at", "http#0", shutdown_at=clock.time() + 900), config, clock
    )
    assert drained is None and moved is None
    assert Path(layout.drain_request(config)).read_text() == "requested by http\n"
    assert Path(layout.dirac_drain(config)).read_text() == "requested by http\n"
    shutdown = mjf.read_features(mjf.machine_dir(config)).values["shutdowntime"]
    assert shutdown == int(clock.time() + 900)


def test_a_halt_returns_its_decision_naming_the_sender(tmp_path, clock):
    """A halt instruction returns the instruction decision (vacuum code 100) with who asked and why."""
    config = make_config(tmp_path, [])
    decided = carry_out(Instruction(3, "halt", "vac#1", reason="site downtime"), config, clock)
    assert decided == Decision("instruction", "halt requested by vac: site downtime", 100)
    assert not Path(layout.drain_request(config)).exists()


def test_instructions_after_a_decision_are_still_carried_out(tmp_path, clock):
    """Once a decision is made, a later drain still drains and the first decision stands."""
    from vmagent.monitor.loop import Monitor

    config = make_config(tmp_path, [], monitor={"endpoints": [], "halt_action": "exit"})
    monitor = Monitor(config, clock=clock, endpoints={}, boot_time=clock.time())
    monitor.obey(Instruction(1, "halt", "http#0", reason="first"))
    monitor.obey(Instruction(2, "halt", "http#0", reason="second"))
    monitor.obey(Instruction(3, "drain", "http#0", reason="late drain"))
    assert monitor.decision is not None and monitor.decision.reason.endswith(": first")
    assert Path(layout.drain_request(config)).read_text() == "late drain\n"


class Plugin:
    """An endpoint plugin that only states its period."""

    def __init__(self, period):
        self.period = period


def test_delay_backs_off_doubling_up_to_the_period():
    """After failures the delay doubles from backoff_seconds, never past the link's own period."""
    settings = {
        "period_seconds": 60,
        "backoff_seconds": 10,
        "jitter_fraction": 0.0,
        "lifetime_seconds": None,
    }
    timetable = schedule.Schedule(settings, random.Random(1), boot_time=0.0)
    link = Link("http#0", Plugin(None), 10, None)
    assert [timetable.delay(link, n) for n in range(5)] == [60, 10, 20, 40, 60]
    assert timetable.delay(Link("vac#1", Plugin(15), 10, None), 3) == 15


def test_remaining_is_to_the_earlier_end():
    """The time left runs to the earlier of the shutdown time and boot time plus lifetime."""
    settings = {"lifetime_seconds": 3600}
    timetable = schedule.Schedule(settings, random.Random(1), boot_time=1000.0)
    assert timetable.remaining(2000.0, None) == 2600.0
    assert timetable.remaining(2000.0, 2500.0) == 500.0
    no_lifetime = schedule.Schedule({"lifetime_seconds": None}, random.Random(1), boot_time=0.0)
    assert no_lifetime.remaining(2000.0, None) is None
