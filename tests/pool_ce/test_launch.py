"""The launch step: a systemd unit where systemd runs and the unit is installed, else a detached process."""

from __future__ import annotations

from vmagent.pool_ce.launch import Launch
from vmagent.testing import make_config, run_command


def runs(actions):
    return [e["what"] for e in actions.entries if e["kind"] == "run"]


def test_under_systemd_the_slot_unit_is_started(tmp_path):
    """With /run/systemd/system and vmagent-slots.service installed, auto starts the unit."""
    (tmp_path / "run/systemd/system").mkdir(parents=True)
    (tmp_path / "etc/systemd/system").mkdir(parents=True)
    (tmp_path / "etc/systemd/system/vmagent-slots.service").write_text("[Service]\n")
    _, actions = run_command(Launch(), make_config(str(tmp_path)), dry_run=True)
    assert runs(actions) == ["systemctl start --no-block vmagent-slots.service"]


def test_without_systemd_or_unit_a_detached_process(tmp_path):
    """No systemd (or the unit not installed, or systemd_unit null): the slot manager runs detached."""
    (tmp_path / "run/systemd/system").mkdir(parents=True)
    _, actions = run_command(Launch(), make_config(str(tmp_path)), dry_run=True)
    assert len(runs(actions)) == 1 and runs(actions)[0].endswith("pool run &")
    (tmp_path / "etc/systemd/system").mkdir(parents=True)
    (tmp_path / "etc/systemd/system/vmagent-slots.service").write_text("[Service]\n")
    _, actions = run_command(
        Launch(), make_config(str(tmp_path)), {"systemd_unit": None}, dry_run=True
    )
    assert runs(actions)[0].endswith("pool run &")
