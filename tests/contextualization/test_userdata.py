"""Rendering user data from a site description, validated by the real cloud-init and vmagent."""

from __future__ import annotations

import email
import gzip
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from vmagent import config as vm_config
from vmagent.errors import ConfigError, UsageError
from vmagent.userdata.render import LIMITS, load_site, render

REPO = Path(__file__).resolve().parents[2]
SITE = REPO / "examples/sites/cern-openstack.yaml"
needs_cloud_init = pytest.mark.skipif(
    shutil.which("cloud-init") is None,
    reason="cloud-init is not installed (apt-get install cloud-init)",
)


def cloud_config_of(data: bytes) -> str:
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    message = email.message_from_bytes(data)
    parts = [p for p in message.walk() if p.get_content_type() == "text/cloud-config"]
    return parts[0].get_payload(decode=True).decode()


@needs_cloud_init
@pytest.mark.parametrize("image", ["el9-large", "debian12-appliance"])
def test_every_example_image_passes_cloud_init_schema(tmp_path, image):
    """Each example image's cloud-config part is valid for the real 'cloud-init schema' and within limits."""
    site = load_site(str(SITE))
    data = render(site, image, "enrol-secret-token")
    cloud = site["endpoints"][site["images"][image]["endpoint"]]["cloud"]
    assert len(data) <= LIMITS[cloud]
    part = tmp_path / "part.yaml"
    part.write_text(cloud_config_of(data))
    done = subprocess.run(
        ["cloud-init", "schema", "--config-file", str(part)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    doc = yaml.safe_load(part.read_text())
    schema = json.loads(_cloud_init_schema())
    known = {key for part in schema["$defs"].values() for key in part.get("properties", {})}
    assert set(doc) <= known, set(doc) - known


def _cloud_init_schema() -> str:
    import glob

    found = glob.glob(
        "/usr/lib/python3/dist-packages/cloudinit/config/schemas/schema-cloud-config-v1.json"
    )
    if not found:
        pytest.skip("cloud-init's schema file is not where Debian puts it")
    return Path(found[0]).read_text()


def test_embedded_config_passes_check_config_and_token_is_private():
    """The vmagent configuration inside is valid, and the enrolment token is written with mode 0600."""
    site = load_site(str(SITE))
    doc = yaml.safe_load(cloud_config_of(render(site, "el9-large", "enrol-secret-token")))
    files = {f["path"]: f for f in doc["write_files"]}
    config = vm_config.parse(files["/etc/vmagent/vmagent.yaml"]["content"], "rendered")
    assert [c.name for c in config.commands][-2:] == ["setup-mjf", "launch"]
    assert files["/etc/vmagent/enrolment.token"]["permissions"] == "0600"
    assert files["/etc/vmagent/enrolment.token"]["content"] == "enrol-secret-token"
    assert "enrol-secret-token" not in files["/etc/vmagent/vmagent.yaml"]["content"]
    assert "packages" not in yaml.safe_load(
        cloud_config_of(render(site, "debian12-appliance", "t"))
    )


def test_too_large_user_data_is_gzipped_or_refused(tmp_path):
    """User data over the cloud's limit is gzipped when that fits, and refused with a clear message if not."""
    site = load_site(str(SITE))
    site["images"]["el9-large"]["extra_parts"] = [
        {"file": str(tmp_path / "vo.sh"), "type": "x-shellscript"}
    ]
    (tmp_path / "vo.sh").write_text("#!/bin/sh\n" + "echo compressible line\n" * 2000)
    packed = render(site, "el9-large", "t", cloud="ec2")
    assert packed[:2] == b"\x1f\x8b" and len(packed) <= LIMITS["ec2"]
    (tmp_path / "vo.sh").write_bytes(b"#!/bin/sh\n# " + os.urandom(40000).hex().encode())
    with pytest.raises(UsageError) as refused:
        render(site, "el9-large", "t", cloud="ec2")
    assert "over the ec2 limit of 16384 bytes" in refused.value.message


def test_bad_site_description_names_file_and_key(tmp_path):
    """A wrong site description is refused with 'file: path: message' lines."""
    bad = tmp_path / "site.yaml"
    bad.write_text(
        yaml.safe_dump(
            {
                "site": "X",
                "endpoints": {"e": {"cloud": "azure"}},
                "images": {"i": {"endpoint": "nope", "os": "el9"}},
                "manager": {"url": "ftp://x"},
            }
        )
    )
    with pytest.raises(ConfigError) as refused:
        load_site(str(bad))
    text = refused.value.message
    assert f"{bad}: endpoints.e.cloud:" in text and f"{bad}: manager.url:" in text


def test_shell_bootstrap_and_vacuum_variant(tmp_path):
    """The shell bootstrap is valid sh; the vacuum variant leaves the platform's patterns to fill in."""
    out = tmp_path / "bootstrap.sh"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "vmagent",
            "userdata",
            "render",
            "--site",
            str(SITE),
            "--image",
            "el9-large",
            "--variant",
            "shell",
            "--token-file",
            os.devnull,
            "-o",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2 and "no enrolment token" in done.stderr
    token = tmp_path / "token"
    token.write_text("tok")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "vmagent",
            "userdata",
            "render",
            "--site",
            str(SITE),
            "--image",
            "el9-large",
            "--variant",
            "shell",
            "--token-file",
            str(token),
            "-o",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert subprocess.run(["sh", "-n", str(out)]).returncode == 0
    assert "chmod 0600 /etc/vmagent/enrolment.token" in out.read_text()
    site = load_site(str(SITE))
    text = cloud_config_of(
        render(site, "el9-large", "##user_data_option_enrolment_token##", vacuum=True)
    )
    assert "##user_data_joboutputs_url##" in text and "##user_data_machinefeatures_url##" in text
