"""Importing DIRAC Pilot pilot.json files (old and new schema, a site dump) as vmagent configurations."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from vmagent.errors import ConfigError
from vmagent.pilot.dirac_import import convert, convert_file

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures/dirac"
OLD_FIXTURE = str(Path(__file__).parent / "fixtures/pilot.json")
FULL = ["check-node", "install-dirac", "configure-dirac", "setup-mjf", "launch"]


def cli(*argv, env=None):
    """Run the real vmagent CLI in a child process; its exit code, stdout and stderr."""
    done = subprocess.run(
        [sys.executable, "-m", "vmagent", *argv],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert "Traceback" not in done.stderr, done.stderr
    return done.returncode, done.stdout, done.stderr


def imported(tmp_path, fixture, *args, env=None):
    """Import a fixture with the real CLI into a file; the parsed config, its report and the file."""
    out = tmp_path / "vmagent.yaml"
    code, _, err = cli(
        "pilot", "import-dirac", str(FIXTURES / fixture), *args, "-o", str(out), env=env
    )
    assert code == 0, err
    report = [line[len("import-dirac: ") :] for line in err.splitlines()]
    return yaml.safe_load(out.read_text()), report, out


def steps(config):
    """The pipeline's command names and each command's options by name."""
    commands = config["pilot"]["commands"]
    names = [c if isinstance(c, str) else c["name"] for c in commands]
    options = {c["name"]: c.get("options", {}) for c in commands if isinstance(c, dict)}
    return names, options


def assert_checks(path):
    """check-config, run for real on the written file, passes."""
    code, _, err = cli("check-config", str(path))
    assert code == 0, err


def not_carried(report):
    """The option paths the report lists as not carried."""
    return {line.split(" ")[2] for line in report if line.startswith("not carried: ")}


def test_new_schema_vo_setup_and_ce(tmp_path):
    """New schema, lhcb on an HTCondorCE: commands, version, project, CVMFS and CS as DIRAC takes them."""
    config, report, out = imported(
        tmp_path, "new_schema.json", "--vo", "lhcb", "--ce", "htc01.example.org"
    )
    names, options = steps(config)
    assert names == FULL
    assert options["install-dirac"] == {
        "version": "v11.0.4",
        "project": "LHCb",
        "cvmfs_locations": ["/cvmfs/lhcb.cern.ch"],
    }
    configure = options["configure-dirac"]
    assert configure["cs_servers"] == [
        "dips://cs1.example.org:9135/Configuration/Server",
        "dips://cs2.example.org:9135/Configuration/Server",
    ]
    assert (
        configure["setup"] == "Example-Production" and configure["local_ce"] == "Pool/Singularity"
    )
    assert config["instance"] == {
        "vo": "lhcb",
        "site": "LCG.Example.org",
        "ce": "htc01.example.org",
        "queue": "grid",
    }
    assert "commands: /Defaults/Pilot/Commands/HTCondorCE (GridCEType HTCondorCE)" in report
    assert any("CommandExtensions LHCbPilot" in line for line in report)
    assert any("'$VO_LHCB_SW_DIR'" in line for line in report)
    assert {"/lhcb/Defaults/Pilot/PilotLogLevel", "/Defaults/Pilot/RemoteLogging"} <= not_carried(
        report
    )
    assert "RegisterPilot: no vmagent equivalent" in " ".join(report)
    assert_checks(out)


def test_merge_order_follows_dirac(tmp_path):
    """Sections merge /Defaults/Pilot, /<setup>/Pilot, /<vo>/Defaults/Pilot, /<vo>/<setup>/Pilot, /<vo>/Pilot."""
    doc = json.loads((FIXTURES / "new_schema.json").read_text())
    versions = []
    for drop in (
        [],
        ["Pilot"],
        ["Pilot", "Example-Production"],
        ["Pilot", "Example-Production", "Defaults"],
    ):
        for key in drop:
            doc["lhcb"].pop(key, None)
        config, _ = convert(json.loads(json.dumps(doc)), vo="lhcb", ce="htc01.example.org")
        versions.append(steps(config)[1]["install-dirac"]["version"])
    doc.pop("Example-Production")
    config, _ = convert(doc, vo="lhcb", ce="htc01.example.org")
    versions.append(steps(config)[1]["install-dirac"]["version"])
    assert versions == ["v11.0.4", "v11.0.2", "v11.0.1", "v8.0.45", "v8.0.40"]


def test_cvmfs_locations_string_is_split(tmp_path):
    """A comma-separated CVMFS_locations string becomes its paths, never single characters."""
    config, report, out = imported(
        tmp_path, "new_schema.json", "--vo", "gridpp", "--ce", "arc01.example.org"
    )
    names, options = steps(config)
    assert options["install-dirac"]["cvmfs_locations"] == [
        "/cvmfs/grid.cern.ch",
        "/cvmfs/dirac.egi.eu",
    ]
    assert "project" not in options["install-dirac"]  # Extensions "None": no extension
    assert names == FULL  # ConfigureArchitectureWithoutCLI is configure-dirac
    assert {
        "/gridpp/Pilot/UploadSE",
        "/gridpp/Pilot/UploadPath",
        "/gridpp/Pilot/RemoteLoggerURL",
        "/gridpp/Pilot/pilotFileServer",
        "/gridpp/Pilot/CheckVersion",
        "/CEs/arc01.example.org/InstallDIRACInContainer",
    } <= not_carried(report)
    assert not any("Extensions" in line for line in report)
    assert_checks(out)


def test_integration_version_and_vo_commands(tmp_path):
    """Version 'integration' (unpinned) passes check-config; a VO's Commands list is looked up as DIRAC does."""
    config, report, out = imported(
        tmp_path, "new_schema.json", "--vo", "belle", "--ce", "cloud.example.org"
    )
    names, options = steps(config)
    assert options["install-dirac"]["version"] == "integration"
    assert names == FULL and options["configure-dirac"]["local_ce"] == "Pool"
    assert "commands: /belle/Pilot/Commands/Defaults (GridCEType Cloud)" in report
    assert any(line.startswith("BelleAddTags: no vmagent equivalent") for line in report)
    assert any("CE types ARC, HTCondorCE of the latter are unused" in line for line in report)
    assert_checks(out)


def test_old_schema_commands_per_ce_type_then_defaults(tmp_path):
    """Old schema: a setup's Commands for one CE type leave the Defaults' other CE types in place."""
    config, report, out = imported(tmp_path, "old_schema.json", "--ce", "arc01.example.org")
    names, options = steps(config)
    assert names == FULL
    assert "commands: /Setups/Defaults/Commands/ARC (GridCEType ARC)" in report
    assert not any("no Commands" in line for line in report)
    assert options["configure-dirac"]["cs_servers"] == [
        "dips://cs.example.org:9135/Configuration/Server"
    ]
    assert (
        options["configure-dirac"]["local_ce"] == "Pool/Sudo"
        and config["instance"]["queue"] == "long"
    )
    assert options["install-dirac"] == {
        "version": "v8.0.50",
        "cvmfs_locations": ["/cvmfs/grid.cern.ch", "/cvmfs/dirac.egi.eu"],
    }
    assert {
        "/Setups/Example-Certification/CheckVersion",
        "/Setups/Example-Certification/Logging",
        "/Setups/Example-Certification/NagiosProbes",
        "/Setups/Example-Certification/NagiosPutURL",
        "/Setups/Defaults/GenericPilotGroup",
        "/Setups/Defaults/GenericPilotDN",
    } <= not_carried(report)
    assert_checks(out)


def test_old_schema_setup_commands_for_its_ce_type(tmp_path):
    """Old schema: the setup's own list for the CE's GridCEType wins, VO variants are named."""
    config, report, out = imported(tmp_path, "old_schema.json", "--ce", "condor01.example.org")
    names, options = steps(config)
    assert names == FULL
    assert (
        "commands: /Setups/Example-Certification/Commands/HTCondorCE (GridCEType HTCondorCE)"
        in report
    )
    assert any(line.startswith("ExampleAddTags: no vmagent equivalent") for line in report)
    assert any("CommandExtensions ExamplePilot" in line for line in report)
    assert (
        config["instance"]["queue"] == "condor" and options["configure-dirac"]["local_ce"] == "Pool"
    )
    assert_checks(out)


def test_old_schema_integration_and_configuration_server_string(tmp_path):
    """Old schema: Setups/Defaults/ConfigurationServer (a comma string) and Version integration are read."""
    config, report, out = imported(tmp_path, "old_integration.json")
    names, options = steps(config)
    assert names == ["check-node", "install-dirac"]
    assert options["install-dirac"]["version"] == "integration"
    assert config["instance"] == {
        "vo": "",
        "site": "DIRAC.CI.org",
        "ce": "ce.ci.example.org",
        "queue": "ciqueue",
    }
    assert "CE ce.ci.example.org: the only one in CEs, taken" in report
    assert_checks(out)
    doc = json.loads((FIXTURES / "old_integration.json").read_text())
    doc["Setups"]["CI"]["Commands"]["TEST"].append("ConfigureBasics")
    config, _ = convert(doc)
    assert steps(config)[1]["configure-dirac"]["cs_servers"] == [
        "dips://ci-cs.example.org:9135/Configuration/Server",
        "dips://ci-cs2.example.org:9135/Configuration/Server",
    ]


def test_site_dump(tmp_path):
    """A realistic site dump: LHCb on a cloud CE takes LHCb's Cloud commands, project and CVMFS."""
    config, report, out = imported(
        tmp_path, "site_dump.json", "--vo", "LHCb", "--ce", "cern-openstack"
    )
    names, options = steps(config)
    assert names == FULL
    assert options["install-dirac"] == {
        "version": "v11.0.4",
        "project": "LHCb",
        "cvmfs_locations": ["/cvmfs/lhcb.cern.ch", "/cvmfs/lhcbdev.cern.ch"],
    }
    assert len(options["configure-dirac"]["cs_servers"]) == 3
    assert "commands: /LHCb/Pilot/Commands/Cloud (GridCEType Cloud)" in report
    assert any(line.startswith("LHCbAddCVMFSTags: no vmagent equivalent") for line in report)
    assert {
        "/LHCb/Pilot/RemoteLogging",
        "/LHCb/Pilot/UploadSE",
        "/LHCb/Pilot/pilotRepo",
        "/LHCb/Pilot/GenericPilotDN",
        "/Defaults/Pilot/PilotLogLevel",
        "/CEs/cern-openstack/InstallDIRACInContainer",
    } <= not_carried(report)
    assert_checks(out)
    boinc, _ = convert(json.loads((FIXTURES / "site_dump.json").read_text()), ce="boinc.example")
    assert (
        steps(boinc)[0] == FULL and steps(boinc)[1]["configure-dirac"]["local_ce"] == "Singularity"
    )


def test_missing_cs_is_a_named_gap_that_check_config_refuses(tmp_path):
    """No CS server anywhere: no placeholder, a named gap, and check-config refuses the file."""
    config, report, out = imported(tmp_path, "no_cs.json", "--vo", "dteam")
    assert "cs_servers" not in steps(config)[1]["configure-dirac"]
    assert any(line.startswith("gap: no ConfigurationServers") for line in report)
    assert "example" not in out.read_text().split("pilot:")[1]
    code, _, err = cli("check-config", str(out))
    assert code == 2 and "cs_servers" in err


def test_plugin_declaring_a_dirac_command_runs_it(tmp_path):
    """A VO plugin command that declares a DIRAC command name takes its place in the pipeline."""
    site = tmp_path / "site"
    (site / "vo_tags").mkdir(parents=True)
    (site / "vo_tags/__init__.py").write_text(
        "class AddTags:\n"
        '    """Add the VO\'s CVMFS tags."""\n'
        '    name = "lhcb-add-cvmfs-tags"\n'
        '    dirac_commands = ("LHCbAddCVMFSTags",)\n'
        "    options_schema = {'type': 'object', 'additionalProperties': False}\n"
        "    def run(self, ctx):\n"
        "        return {}\n"
    )
    info = site / "vo_tags-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: vo-tags\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(
        "[vmagent.pilot_commands]\nlhcb-add-cvmfs-tags = vo_tags:AddTags\n"
    )
    env = {**os.environ, "PYTHONPATH": str(site)}
    config, report, out = imported(
        tmp_path, "site_dump.json", "--vo", "LHCb", "--ce", "cern-openstack", env=env
    )
    names, _ = steps(config)
    assert names == [
        "check-node",
        "install-dirac",
        "configure-dirac",
        "lhcb-add-cvmfs-tags",
        "setup-mjf",
        "launch",
    ]
    assert any("LHCbAddCVMFSTags by lhcb-add-cvmfs-tags" in line for line in report)
    code, _, err = cli("check-config", str(out), env=env)
    assert code == 0, err


def test_old_fixture_vo_section_is_named_not_read():
    """A file with Setups: a VO section is listed as not read, the old schema's rules apply."""
    text, report = convert_file(OLD_FIXTURE, vo="lhcb")
    assert any(line.startswith("not carried: /lhcb = ") and "VO section" in line for line in report)
    assert "version: v8.0.50" in text and "NoneDIRAC" not in text and "project" not in text


def test_unknown_vo_and_ce_are_clear_errors():
    """An unknown VO names the VO sections; an unknown CE names the CEs."""
    with pytest.raises(ConfigError) as refused:
        convert_file(str(FIXTURES / "new_schema.json"), vo="atlas")
    assert "no section for VO 'atlas'; VO sections: belle, gridpp, lhcb" in refused.value.message
    with pytest.raises(ConfigError) as unknown:
        convert_file(str(FIXTURES / "new_schema.json"), ce="nowhere")
    assert "no such CE; CEs: arc01.example.org" in unknown.value.message
