"""cgroup v2 payload groups: the file protocol on a directory laid out like a delegated group.

The kernel's own hierarchy is exercised in the real VM boot (tests/e2e): there the slot manager runs
in vmagent-slots.service and a payload over its memory limit is killed by the kernel.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from vmagent.errors import CgroupUnavailable
from vmagent.pool_ce import cgroups


def hierarchy(tmp_path, own="/system.slice/vmagent-slots.service", controllers="cpu memory pids"):
    mount = tmp_path / "cgroup"
    base = mount / own.lstrip("/")
    base.mkdir(parents=True)
    (mount / "cgroup.controllers").write_text("cpu memory pids\n")
    (base / "cgroup.controllers").write_text(controllers + "\n")
    (base / "cgroup.subtree_control").write_text("\n")
    (base / "cgroup.procs").write_text(f"{os.getpid()}\n")
    proc = tmp_path / "proc-self-cgroup"
    proc.write_text(f"0::{own}\n")
    return mount, base, proc


def test_setup_moves_itself_to_a_leaf_and_enables_memory(tmp_path):
    """The slot manager enters supervisor/, and the memory controller is handed to the children."""
    mount, base, proc = hierarchy(tmp_path)
    groups = cgroups.PayloadGroups.setup("i-1", str(mount), str(proc))
    assert groups.base == str(base)
    assert (base / "supervisor/cgroup.procs").read_text() == str(os.getpid())
    assert (base / "cgroup.subtree_control").read_text() == "+memory"


def test_payload_group_limits_memory_and_reports_usage(tmp_path):
    """A payload's group gets memory.max, no swap and OOM-kills the whole group; usage and oom are read back."""
    mount, base, proc = hierarchy(tmp_path)
    groups = cgroups.PayloadGroups.setup("i-1", str(mount), str(proc))
    (base / "payload-a_b").mkdir()
    for name in ("memory.swap.max", "memory.oom.group"):
        (base / "payload-a_b" / name).write_text("max\n")
    group = groups.create("a/b", 100)
    assert group == str(base / "payload-a_b")  # ids are made safe as one path component
    assert (base / "payload-a_b/memory.max").read_text() == str(100 * 2**20)
    assert (
        Path(groups.create("unlimited", None)) / "memory.max"
    ).read_text() == "max"  # a group all the same
    assert (base / "payload-a_b/memory.swap.max").read_text() == "0"
    assert (base / "payload-a_b/memory.oom.group").read_text() == "1"
    assert groups.usage("a/b") == {"peak_bytes": None, "oom_kills": None, "cpu_usec": None}
    (base / "payload-a_b/memory.peak").write_text("123456\n")
    (base / "payload-a_b/memory.events").write_text("low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n")
    (base / "payload-a_b/cpu.stat").write_text(
        "usage_usec 2500000\nuser_usec 2000000\nsystem_usec 500000\n"
    )
    assert groups.usage("a/b") == {"peak_bytes": 123456, "oom_kills": 1, "cpu_usec": 2500000}


def test_sweep_removes_groups_of_payloads_no_longer_running(tmp_path):
    """After a restart, empty groups of finished payloads go; those of re-adopted payloads stay."""
    mount, base, proc = hierarchy(tmp_path)
    groups = cgroups.PayloadGroups.setup("i-1", str(mount), str(proc))
    for name in ("payload-old", "payload-kept"):
        (base / name).mkdir()
    groups.sweep({"kept"})
    assert sorted(p.name for p in base.iterdir() if p.is_dir()) == ["payload-kept", "supervisor"]


@pytest.mark.parametrize(
    "case,expected",
    [
        ("v1", "no cgroup v2 hierarchy"),
        ("no-memory", "memory controller is not available"),
        ("busy", "cannot manage"),
    ],
)
def test_unusable_hierarchies_say_why(tmp_path, case, expected):
    """cgroup v1/hybrid systems, groups without the memory controller or not ours give a reason, not a crash."""
    mount, base, proc = hierarchy(
        tmp_path, controllers="cpu pids" if case == "no-memory" else "cpu memory pids"
    )
    if case == "v1":
        proc.write_text("4:memory:/user.slice\n")
    if case == "busy":  # the kernel refuses subtree_control while other processes share the group
        (base / "cgroup.subtree_control").chmod(0o444)
        (base / "cgroup.subtree_control").rename(base / "elsewhere")
        (base / "cgroup.subtree_control").mkdir()
        (base / "cgroup.procs").write_text("")
    with pytest.raises(CgroupUnavailable, match=expected):
        cgroups.PayloadGroups.setup("i-1", str(mount), str(proc))
    if case == "busy":  # nothing half-done: the slot manager is back in its own group
        assert (base / "cgroup.procs").read_text() == str(os.getpid())


def test_own_group_reads_the_unified_line(tmp_path):
    """The slot manager's own group is the cgroup v2 line of /proc/self/cgroup; None without one."""
    proc = tmp_path / "cgroup"
    proc.write_text("12:memory:/x\n0::/user.slice/session-1.scope\n")
    assert cgroups.own_group(str(proc)) == "/user.slice/session-1.scope"
    proc.write_text("12:memory:/x\n")
    assert cgroups.own_group(str(proc)) is None


def test_as_root_payload_groups_live_beside_systemds_slices(tmp_path, monkeypatch):
    """As root: <mount>/vmagent/<instance>, memory handed down at each level; the slot manager stays put
    (so systemd can restart its unit while payloads run)."""
    mount, base, proc = hierarchy(tmp_path)
    monkeypatch.setattr(cgroups.os, "geteuid", lambda: 0)
    for level in (
        mount,
        mount / "vmagent",
        mount / "vmagent/i-1_a",
    ):  # the kernel creates these files
        level.mkdir(exist_ok=True)
        (level / "cgroup.subtree_control").write_text("cpu\n")
    groups = cgroups.PayloadGroups.setup("i-1/a", str(mount), str(proc))
    assert groups.base == str(mount / "vmagent/i-1_a")
    for level in (mount, mount / "vmagent", mount / "vmagent/i-1_a"):
        assert (level / "cgroup.subtree_control").read_text() == "+memory"
    assert (
        not (base / "supervisor").exists()
        and (base / "cgroup.procs").read_text() == f"{os.getpid()}\n"
    )


def test_without_root_the_own_delegated_group_is_used(tmp_path, monkeypatch):
    """Not root: payload groups live below the slot manager's own delegated group, none below vmagent/."""
    mount, base, proc = hierarchy(tmp_path)
    (mount / "cgroup.subtree_control").write_text("cpu memory\n")
    monkeypatch.setattr(cgroups.os, "geteuid", lambda: 1000)
    assert cgroups.PayloadGroups.setup("i-1", str(mount), str(proc)).base == str(base)
    assert not (mount / "vmagent").exists()


def test_started_in_the_supervisor_leaf_its_parent_holds_the_payloads(tmp_path, monkeypatch):
    """Already in supervisor/ (systemd's DelegateSubgroup=): the leaf's parent is the base, nothing nested."""
    mount, leaf, proc = hierarchy(tmp_path, own="/system.slice/vmagent-slots.service/supervisor")
    service = leaf.parent
    (service / "cgroup.controllers").write_text("cpu memory pids\n")
    (service / "cgroup.subtree_control").write_text("\n")
    (leaf / "cgroup.controllers").write_text("\n")  # a leaf with processes hands nothing down
    monkeypatch.setattr(cgroups.os, "geteuid", lambda: 1000)
    groups = cgroups.PayloadGroups.setup("i-1", str(mount), str(proc))
    assert groups.base == str(service)
    assert (service / "cgroup.subtree_control").read_text() == "+memory"
    assert (
        not (leaf / "supervisor").exists()
        and (leaf / "cgroup.procs").read_text() == f"{os.getpid()}\n"
    )
    assert groups.path("p1") == str(service / "payload-p1")
