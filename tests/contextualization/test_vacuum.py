"""Vacuum user data through a Vac-style substitution, cloud-init's own parser and check-config."""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from vmagent.client.registration import registration
from vmagent.config_check import check_file
from vmagent.errors import UsageError
from vmagent.userdata.render import load_site, render

REPO = Path(__file__).resolve().parents[2]
SITE = REPO / "examples/sites/cern-openstack.yaml"
SYSTEM_PYTHON = "/usr/bin/python3"  # the interpreter cloud-init is installed for
PROXY = (
    "-----BEGIN CERTIFICATE-----\nMIIBproxycert\n-----END CERTIFICATE-----\n"
    "-----BEGIN PRIVATE KEY-----\nMIIEproxykey\n-----END PRIVATE KEY-----"
)
# What Vac (or Vcycle, which adds the site) fills in for one VM of the machinetype.
PLATFORM = {
    "uuid": "0f4c6e2a-93b1-4d1e-8c52-6b1f2e9d7a10",
    "machinefeatures_url": "https://vac01.example.org/machinefeatures/vm07/",
    "jobfeatures_url": "https://vac01.example.org/jobfeatures/vm07/",
    "joboutputs_url": "https://vac01.example.org/joboutputs/vm07/",
    "machine_hostname": "vm07.vac01.example.org",
    "manager_hostname": "vac01.example.org",
    "space": "vac01.example.org",
    "machinetype": "lhcb-mc",
    "site": "CLOUD.CERN.ch",
    "option_enrolment_token": "vme_machinetype-credential",
    "option_x509_proxy": PROXY,
}
FORMATS = [
    pytest.param({"fmt": "mime"}, id="mime"),
    pytest.param({"fmt": "cloud-config"}, id="cloud-config"),
    pytest.param({"variant": "shell"}, id="shell"),
]
needs_cloud_init = pytest.mark.skipif(
    shutil.which("cloud-init") is None or not Path(SYSTEM_PYTHON).exists(),
    reason="cloud-init is not installed (apt-get install cloud-init)",
)
# Reads user data the way cloud-init does at boot (UserDataProcessor, then the cloud-config part
# handler's merge) and prints the merged cloud-config and every other part.
CLOUD_INIT_READER = r"""
import json, sys, tempfile
from cloudinit import handlers, helpers, user_data
from cloudinit.handlers.cloud_config import CloudConfigPartHandler
from cloudinit.safeyaml import load

blob = open(sys.argv[1], "rb").read()
paths = helpers.Paths({"cloud_dir": tempfile.mkdtemp()})
message = user_data.UserDataProcessor(paths).process(blob)
merged = tempfile.mktemp()
handler = CloudConfigPartHandler(paths, cloud_config_path=merged)
handler.cloud_fn = merged
handler.handle_part(None, handlers.CONTENT_START, None, None, None, None)
others = {}
for part in message.walk():
    if part.get_content_maintype() == "multipart":
        continue
    payload = part.get_payload(decode=True).decode()
    if part.get_content_type() == "text/cloud-config":
        handler.handle_part(None, "text/cloud-config", part.get_filename(), payload, None, dict(part))
    else:
        others[part.get_filename()] = [part.get_content_type(), payload]
seen = bool(handler.file_names)
handler.handle_part(None, handlers.CONTENT_END, None, None, None, None)
config = load(open(merged).read()) if seen else None
print(json.dumps({"cloud_config": config, "others": others}))
"""


def vac_substitute(data: bytes, values: dict) -> bytes:
    """Vac's rules: replace each known ##user_data_<name>##, then blank every leftover pattern."""
    text = data.decode("utf-8", "surrogateescape")
    for name, value in values.items():
        text = text.replace(f"##user_data_{name}##", value)
    text = re.sub(r"##user_data_[a-z0-9_]*##", "", text)
    return text.encode("utf-8", "surrogateescape")


def read_as_cloud_init(tmp_path: Path, data: bytes) -> dict:
    """The merged cloud-config and the other parts, as the real cloud-init reads ``data``."""
    raw = tmp_path / "user-data"
    raw.write_bytes(data)
    done = subprocess.run(
        [SYSTEM_PYTHON, "-c", CLOUD_INIT_READER, str(raw)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.splitlines()[-1])


def materialise(tmp_path: Path, data: bytes) -> Path:
    """Write the files the user data would write, below a root; return the vmagent config there."""
    root = tmp_path / "vm"
    read = read_as_cloud_init(tmp_path, data)
    scripts = [payload for ctype, payload in read["others"].values()]
    assert all(ctype == "text/x-shellscript" for ctype, _ in read["others"].values()), read
    if read["cloud_config"]:
        files = {f["path"]: f["content"] for f in read["cloud_config"]["write_files"]}
    else:
        files = bootstrap_files(scripts[0])
    for path, content in files.items():
        target = root / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(content)
    for script in scripts:
        run_proxy_lines(script, root)
    config = root / "etc/vmagent/vmagent.yaml"
    doc = yaml.safe_load(config.read_text())
    doc.setdefault("paths", {})["root"] = str(root)
    config.write_text(yaml.safe_dump(doc))
    return config


def run_proxy_lines(script: str, root: Path) -> None:
    """Run a script's lines that write the platform's proxy, with /etc below ``root``."""
    found = re.search(r"^# the X\.509 proxy.*?^\[ -z .*?$", script, re.S | re.M)
    if found:
        lines = found.group(0).replace("/etc/", f"{root}/etc/")
        done = subprocess.run(["sh", "-euc", lines], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr


def bootstrap_files(script: str) -> dict:
    """The files the shell bootstrap writes with here-documents and printf."""
    subprocess.run(["sh", "-n"], input=script, text=True, check=True, timeout=30)
    files = dict(re.findall(r"cat > (\S+) <<'VMAGENT_EOF'\n(.*?)VMAGENT_EOF\n", script, re.S))
    token = re.search(r"printf '%s' (.*) > /etc/vmagent/enrolment.token", script)
    assert token, script
    files["/etc/vmagent/enrolment.token"] = subprocess.run(
        ["sh", "-c", f"printf '%s' {token.group(1)}"], capture_output=True, text=True, timeout=30
    ).stdout
    return files


def check_config(path: Path) -> subprocess.CompletedProcess:
    """The real ``vmagent check-config`` on ``path``, in a child."""
    return subprocess.run(
        [sys.executable, "-m", "vmagent", "check-config", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
    )


def rendered(**kw) -> bytes:
    site = load_site(str(SITE))
    return render(site, "el9-large", "##user_data_option_enrolment_token##", vacuum=True, **kw)


@needs_cloud_init
@pytest.mark.parametrize("form", FORMATS)
def test_substituted_user_data_passes_check_config_with_the_platform_values(tmp_path, form):
    """After Vac's substitution, cloud-init writes a configuration that passes check-config, URLs filled in."""
    data = rendered(**form)
    for name in (
        "uuid",
        "machinefeatures_url",
        "jobfeatures_url",
        "joboutputs_url",
        "machine_hostname",
        "option_enrolment_token",
    ):
        assert f"##user_data_{name}##".encode() in data, name
    config = materialise(tmp_path, vac_substitute(data, PLATFORM))
    done = check_config(config)
    assert done.returncode == 0, done.stderr
    doc = yaml.safe_load(config.read_text())
    assert doc["instance"]["id"] == PLATFORM["uuid"]
    assert doc["mjf"]["upstream_machinefeatures"] == PLATFORM["machinefeatures_url"]
    assert doc["mjf"]["upstream_jobfeatures"] == PLATFORM["jobfeatures_url"]
    vac = [e for e in doc["monitor"]["endpoints"] if e["name"] == "vac"]
    assert vac[0]["options"]["joboutputs"] == PLATFORM["joboutputs_url"]
    token = config.parent / "enrolment.token"
    assert token.read_text() == PLATFORM["option_enrolment_token"]
    told = registration(check_file(str(config)), "https://manager.example.org")
    assert told["hostname"] == PLATFORM["machine_hostname"]
    assert told["instance_id"] == PLATFORM["uuid"]


@needs_cloud_init
@pytest.mark.parametrize("form", [FORMATS[0], FORMATS[2]])
def test_platform_proxy_reaches_the_vm_whole(tmp_path, form):
    """With --x509-proxy, the platform's multi-line proxy is written whole (0600), the pilot's proxy and the vac client certificate."""
    config = materialise(tmp_path, vac_substitute(rendered(x509_proxy=True, **form), PLATFORM))
    proxy = config.parent / "x509proxy.pem"
    assert proxy.read_text() == PROXY + "\n"
    assert proxy.stat().st_mode & 0o077 == 0
    doc = yaml.safe_load(config.read_text())
    credentials = [c for c in doc["pilot"]["commands"] if "check-credentials" in str(c)]
    assert credentials[0]["options"]["proxy_file"] == "/etc/vmagent/x509proxy.pem"
    vac = [e for e in doc["monitor"]["endpoints"] if e["name"] == "vac"]
    assert vac[0]["options"]["cert_file"] == "/etc/vmagent/x509proxy.pem"
    assert check_config(config).returncode == 0


@needs_cloud_init
@pytest.mark.parametrize("form", FORMATS)
def test_blanked_values_are_refused_by_check_config_naming_the_key(tmp_path, form):
    """A platform with no values for the VM blanks the patterns; check-config refuses, naming each key."""
    config = materialise(tmp_path, vac_substitute(rendered(**form), {}))
    done = check_config(config)
    assert done.returncode == 2, done.stderr
    for key in (
        "instance.id",
        "mjf.upstream_machinefeatures",
        "mjf.upstream_jobfeatures",
        "manager.token_file",
    ):
        assert f"{config}: {key}: " in done.stderr, (key, done.stderr)
    assert "instance.hostname" not in done.stderr  # a blanked name falls back, see below
    assert re.search(
        rf"{re.escape(str(config))}: monitor\.endpoints\.\d\.options\.joboutputs: is empty",
        done.stderr,
    )


@needs_cloud_init
def test_unsubstituted_patterns_are_refused_by_check_config_naming_the_key(tmp_path):
    """A VM whose platform never substituted (say base64 hid the patterns) is refused, each key named."""
    config = materialise(tmp_path, rendered())
    done = check_config(config)
    assert done.returncode == 2, done.stderr
    for key, pattern in (
        ("mjf.upstream_machinefeatures", "machinefeatures_url"),
        ("mjf.upstream_jobfeatures", "jobfeatures_url"),
        ("instance.hostname", "machine_hostname"),
    ):
        assert f"{config}: {key}: holds ##user_data_{pattern}##" in done.stderr, key
    assert (
        f"{config}: manager.token_file: /etc/vmagent/enrolment.token holds ##user_data_option_enrolment_token##"
        in done.stderr
    )


@needs_cloud_init
@pytest.mark.parametrize("form", [FORMATS[0], FORMATS[2]])
def test_blanked_hostname_falls_back_to_the_systems(tmp_path, form):
    """A platform that names no hostname blanks it: check-config passes and the VM registers with
    the system's hostname (the name is a label, the uuid identifies the VM)."""
    values = {k: v for k, v in PLATFORM.items() if k != "machine_hostname"}
    config = materialise(tmp_path, vac_substitute(rendered(**form), values))
    done = check_config(config)
    assert done.returncode == 0, done.stderr
    assert yaml.safe_load(config.read_text())["instance"]["hostname"] == ""
    told = registration(check_file(str(config)), "https://manager.example.org")
    assert told["hostname"] == socket.gethostname()


def test_vacuum_parts_are_never_base64(tmp_path):
    """Every MIME part of vacuum user data is 7bit or 8bit text, VO parts included."""
    site = load_site(str(SITE))
    (tmp_path / "vo.sh").write_text("#!/bin/sh\necho ##user_data_option_vo_secret## é\n")
    site["images"]["el9-large"]["extra_parts"] = [
        {"file": str(tmp_path / "vo.sh"), "type": "x-shellscript"}
    ]
    data = render(site, "el9-large", "##user_data_option_enrolment_token##", vacuum=True)
    encodings = re.findall(rb"Content-Transfer-Encoding: (\S+)", data)
    assert encodings and set(encodings) <= {b"7bit", b"8bit"}, encodings
    assert b"##user_data_option_vo_secret##" in data


def test_vacuum_user_data_over_the_limit_is_refused_not_gzipped(tmp_path):
    """Gzip would hide the patterns: vacuum user data over the limit exits 2 saying so."""
    vo = tmp_path / "vo.sh"
    vo.write_text("#!/bin/sh\n" + "echo compressible line\n" * 2000)
    site = tmp_path / "site.yaml"
    doc = yaml.safe_load(SITE.read_text())
    doc["manager"]["ca_file"] = str(REPO / "examples/sites" / doc["manager"]["ca_file"])
    doc["images"]["el9-large"]["extra_parts"] = [{"file": str(vo), "type": "x-shellscript"}]
    site.write_text(yaml.safe_dump(doc))
    done = subprocess.run(
        [sys.executable, "-m", "vmagent", "userdata", "render", "--site", str(site)]
        + ["--image", "el9-large", "--cloud", "ec2", "--vacuum"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, done.stderr
    assert "cannot be gzipped" in done.stderr and "over the ec2 limit" in done.stderr


def test_proxy_needs_a_format_that_keeps_its_lines():
    """A cloud-config document cannot take a multi-line proxy as substituted text: refused up front."""
    with pytest.raises(UsageError) as refused:
        rendered(x509_proxy=True, fmt="cloud-config")
    assert "--format mime" in (refused.value.hint or "")
