"""Plugins: every built-in fits its group's interface; third-party ones are found, checked and named."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from vmagent import interfaces, plugins
from vmagent.errors import PluginError
from vmagent.testing import write_config

BUILT_INS = {
    "vmagent.pilot_commands": {
        "exec",
        "check-node",
        "check-credentials",
        "setup-disks",
        "install-cvmfs",
        "install-dirac",
        "configure-dirac",
        "setup-mjf",
        "launch",
    },
    "vmagent.endpoints": {"http", "vac", "log"},
    "vmagent.payload_sources": {"spool", "manager"},
    "vmagent.masonry_policies": {"greedy", "fifo", "backfill"},
    "vmagent.halt_actions": {"poweroff", "exit"},
}


def distribution(site, name, version, group, entries, module):
    """A distribution as pip installs it: ``<name>-<version>.dist-info`` and a module beside it."""
    info = site / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n\n")
    lines = "".join(f"{key} = {value}\n" for key, value in entries.items())
    (info / "entry_points.txt").write_text(f"[{group}]\n{lines}")
    module_name, source = module
    (site / f"{module_name}.py").write_text(textwrap.dedent(source))


@pytest.mark.parametrize("group", sorted(BUILT_INS))
def test_every_built_in_fits_its_protocol(group):
    """Each built-in of the group is registered by vmagent and has what its Protocol requires."""
    found = plugins.installed(group)
    assert BUILT_INS[group] <= set(found)
    for name in BUILT_INS[group]:
        (plugin,) = found[name]
        assert plugin.distribution == "vmagent"
        assert interfaces.misfits(group, plugins.load_resolved(plugin)) == [], name


def test_misfits_name_what_is_missing():
    """A class missing a method, an attribute, or taking the wrong arguments is described exactly."""

    class Halfway:
        name = "halfway"

        def __init__(self, config):
            pass

        def send(self, heartbeat):
            return []

    assert interfaces.misfits("vmagent.endpoints", Halfway) == [
        "cannot be built with (config, options)",
        "no attribute 'options_schema'",
        "send() does not take 2 arguments",
        "no method halting()",
    ]
    assert interfaces.misfits("vmagent.masonry_policies", "fifo") == ["is a str, not a class"]


def test_a_plugin_that_does_not_fit_is_reported_by_check_config(tmp_path):
    """check-config names the misfit plugin, its distribution and version, and what it lacks: exit 2."""
    site = tmp_path / "site"
    broken = """
        class Broken:
            name = "broken"

            def __init__(self, config, options):
                pass

            def send(self, heartbeat, sample):
                return []
    """
    distribution(
        site,
        "vmagent-broken",
        "2.0",
        "vmagent.endpoints",
        {"broken": "broken:Broken"},
        ("broken", broken),
    )
    path = write_config(
        tmp_path, [], monitor={"endpoints": [{"name": "broken"}], "halt_action": "exit"}
    )
    env = {**os.environ, "PYTHONPATH": str(site)}
    done = subprocess.run(
        [sys.executable, "-m", "vmagent", "check-config", path],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        f"{path}: monitor.endpoints.0.name: plugin 'broken' in vmagent.endpoints from "
        "vmagent-broken 2.0 (broken:Broken) does not fit the endpoint interface: "
        "no attribute 'options_schema'; no method halting()"
    ]


def test_third_party_plugins_are_found_on_sys_path(tmp_path, monkeypatch):
    """A distribution on sys.path is found from its entry_points.txt; a name given twice is refused."""
    site = tmp_path / "site"
    policy = """
        class Lifo:
            name = "lifo"

            def decide(self, view):
                return [w.id for w in reversed(view.waiting)]
    """
    distribution(
        site,
        "masonry-extra",
        "1.2",
        "vmagent.masonry_policies",
        {"lifo": "lifo:Lifo"},
        ("lifo", policy),
    )
    monkeypatch.syspath_prepend(str(site))
    plugin = plugins.resolve("vmagent.masonry_policies", "lifo")
    assert (plugin.distribution, plugin.version, plugin.value) == (
        "masonry-extra",
        "1.2",
        "lifo:Lifo",
    )
    assert plugins.load("vmagent.masonry_policies", "lifo").name == "lifo"
    distribution(
        tmp_path / "other",
        "fifo-clone",
        "0.1",
        "vmagent.masonry_policies",
        {"fifo": "fifo_clone:Fifo"},
        ("fifo_clone", "class Fifo: pass\n"),
    )
    monkeypatch.syspath_prepend(str(tmp_path / "other"))
    with pytest.raises(PluginError) as caught:
        plugins.resolve("vmagent.masonry_policies", "fifo")
    assert "is provided twice: fifo-clone (fifo_clone:Fifo), vmagent" in caught.value.message


def test_resolving_never_imports_importlib_metadata():
    """Resolving and loading every built-in leaves importlib.metadata unimported (the monitor's memory)."""
    probe = (
        "import sys\n"
        "from vmagent import plugins\n"
        "for group in plugins.GROUPS.values():\n"
        "    for name in plugins.installed(group):\n"
        "        plugins.load(group, name)\n"
        "print('importlib.metadata' in sys.modules)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=120
    )
    assert done.stdout.strip() == "False", done.stderr
