"""Render user data: a site description and an image name in, multipart MIME (or one part) out.

Templates are jinja2 with StrictUndefined; every value goes in through ``tojson`` (JSON is YAML), so
no site value can change the document's structure. Secrets (the enrolment token) are written with
mode 0600 and never logged.
"""

from __future__ import annotations

import gzip
import json
import os
import shlex
import sys
from email.charset import Charset
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from importlib import resources
from typing import Any, Dict, List, Optional
from urllib.parse import urlsplit

import jinja2
import yaml

from .. import config as vm_config
from ..config import apply_defaults, validation_problems
from ..core.files import write_atomic
from ..errors import ConfigError, UsageError
from . import vacuum as vac

LIMITS = {
    "ec2": 16384,
    "openstack": 65535 * 3 // 4,
    "gce": 256 * 1024,
}  # raw bytes (OpenStack: base64 <= 65535)
OS_PACKAGES = {
    "el": ["python3"],
    "debian": ["python3", "python3-venv"],
    "ubuntu": ["python3", "python3-venv"],
}
UNITS = ("vmagent-monitor.service", "vmagent-pilot.service", "vmagent-slots.service")


def templates() -> Any:
    return resources.files("vmagent.contextualization")


def load_site(path: str) -> Dict[str, Any]:
    """Read and validate a site description; ``ConfigError`` lists every problem as ``file: path: message``."""
    site = vm_config.yaml_document(vm_config.read_text(path), path)
    schema = json.loads(templates().joinpath("site.schema.json").read_text())
    problems = validation_problems(schema, site)
    if problems:
        raise ConfigError(path, problems)
    apply_defaults(schema, site)
    for name, image in site["images"].items():
        for item in image["extra_parts"]:
            apply_defaults(
                schema["properties"]["images"]["additionalProperties"]["properties"]["extra_parts"][
                    "items"
                ],
                item,
            )
        if image["endpoint"] not in site["endpoints"]:
            problems.append(
                (
                    f"images.{name}.endpoint",
                    f"{image['endpoint']!r} is not one of the endpoints: "
                    + ", ".join(sorted(site["endpoints"])),
                )
            )
    if problems:
        raise ConfigError(path, problems)
    site["_dir"] = os.path.dirname(os.path.abspath(path))
    return site


def agent_config(
    site: Dict[str, Any], image_name: str, vacuum: bool = False, x509_proxy: bool = False
) -> Dict[str, Any]:
    """vmagent's own configuration for a VM of this image; it passes ``vmagent check-config``.

    With ``vacuum`` it holds the platform's patterns, and passes once the platform filled them in.
    """
    image = site["images"][image_name]
    commands: List[Any] = ["check-node", "check-credentials", "setup-disks"]
    if image["cvmfs_repositories"]:
        commands.append(
            {"name": "install-cvmfs", "options": {"repositories": image["cvmfs_repositories"]}}
        )
    if image["dirac_version"] or image["cs_servers"]:
        commands.append({"name": "install-dirac", "options": {"version": image["dirac_version"]}})
        commands.append({"name": "configure-dirac", "options": {"cs_servers": image["cs_servers"]}})
    commands += ["setup-mjf", "launch"]
    if image["pilot_commands"] is not None:
        commands = list(image["pilot_commands"])
    doc = {
        "instance": {
            "site": site["site"],
            "ce": image["endpoint"],
            "image": image_name,
            "vo": image.get("vo") or site["vo"],
            "running_pod": image["running_pod"],
        },
        "manager": {
            "url": site["manager"]["url"],
            "token_file": "/etc/vmagent/enrolment.token",
            "ca_file": "/etc/vmagent/ca.pem" if site["manager"]["ca_file"] else None,
        },
        "pilot": {"commands": commands},
        "mjf": {"lifetime_seconds": image["lifetime_seconds"]},
        "slots": {"source": "manager", "cores": image["cores"], **image["slots"]},
        "monitor": {
            "endpoints": [{"name": "http"}, {"name": "log"}],
            "halt_action": "poweroff",
            "no_payloads_seconds": 1800,
            "lifetime_seconds": image["lifetime_seconds"],
            **image["monitor"],
        },
    }
    if vacuum:  # the platform fills these in when it creates the VM
        vac.configure(doc, x509_proxy)
    checked = vac.filled(doc) if vacuum else doc
    vm_config.from_dict(checked, f"rendered configuration for image {image_name}")  # never junk
    return doc


def render(
    site: Dict[str, Any],
    image_name: str,
    enrolment_token: str,
    *,
    cloud: Optional[str] = None,
    fmt: str = "mime",
    variant: str = "cloud-init",
    vacuum: bool = False,
    x509_proxy: bool = False,
) -> bytes:
    """The user data for one VM of ``image_name``, within the cloud's size limit.

    ``vacuum``: every part stays plain text (8bit, never base64 or gzip) so that the platform's
    substitution sees the ``##user_data_...##`` patterns; ``x509_proxy`` adds the platform's proxy.
    """
    _vacuum_usage(vacuum, x509_proxy, fmt, variant)
    if image_name not in site["images"]:
        known = ", ".join(sorted(site["images"]))
        raise UsageError(f"no image {image_name!r} in the site description; images: {known}")
    image = site["images"][image_name]
    cloud = cloud or site["endpoints"][image["endpoint"]]["cloud"]
    env = jinja2.Environment(
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["shellquote"] = shlex.quote
    pip = ["/opt/vmagent/bin/pip", "install", "--no-cache-dir", site["vmagent"]["pip_spec"]]
    if site["vmagent"]["index_url"]:
        pip += ["--index-url", site["vmagent"]["index_url"]]
    links = site["vmagent"]["find_links"]
    if links:
        pip += ["--no-index", "--find-links", links]
        if links.startswith("http://"):  # a site's own plain-HTTP wheel mirror
            pip += ["--trusted-host", urlsplit(links).hostname or ""]
    values = {
        "site": site["site"],
        "image_name": image_name,
        "preinstalled": image["vmagent_preinstalled"],
        "vmagent_config": yaml.safe_dump(
            agent_config(site, image_name, vacuum, x509_proxy), sort_keys=False
        ),
        "x509_proxy_lines": vac.proxy_lines() if x509_proxy else "",
        "ca_pem": _read(site, site["manager"]["ca_file"]) if site["manager"]["ca_file"] else "",
        "enrolment_token": enrolment_token,
        "units": [
            {
                "name": u,
                "text": resources.files("vmagent.monitor")
                .joinpath("units")
                .joinpath(u)
                .read_text(),
            }
            for u in UNITS
        ],
        "os_packages": OS_PACKAGES[_family(image["os"])],
        "pip_command": ["sh", "-c", f"python3 -m venv /opt/vmagent && {shlex.join(pip)}"],
    }
    name = "bootstrap.sh.j2" if variant == "shell" else "cloud-config.yaml.j2"
    text = env.from_string(templates().joinpath("templates").joinpath(name).read_text()).render(
        **values
    )
    if variant == "shell" or fmt == "cloud-config":
        data = text.encode()
    else:
        extra = [
            (_read(site, p["file"]), p["type"], f"vo-part-{i}")
            for i, p in enumerate(image["extra_parts"])
        ]
        if x509_proxy:  # sorted before cloud-init's runcmd script, which starts vmagent
            extra.insert(0, (vac.proxy_script(), "x-shellscript", "00-vmagent-x509-proxy.sh"))
        data = _mime(text, extra, vacuum)
    if vacuum:
        return _fit_vacuum(data, cloud, image_name, x509_proxy)
    return _fit(data, cloud, image_name)


def _vacuum_usage(vacuum: bool, x509_proxy: bool, fmt: str, variant: str) -> None:
    if x509_proxy and not vacuum:
        raise UsageError("--x509-proxy is the vacuum platform's proxy: it needs --vacuum")
    if x509_proxy and fmt == "cloud-config" and variant != "shell":
        raise UsageError(
            "the platform's X.509 proxy spans lines, which a cloud-config document cannot take "
            "as substituted text",
            hint="use --format mime (the default) or --variant shell",
        )


def _mime(cloud_config: str, extra: List[Any], vacuum: bool = False) -> bytes:
    """Multipart MIME; for a vacuum platform every part 8bit, so its patterns stay visible."""
    charset: Any = "utf-8"
    if vacuum:
        charset = Charset("utf-8")
        charset.body_encoding = None  # no base64: the platform substitutes in the raw text
    message = MIMEMultipart()
    part = MIMEText(cloud_config, "cloud-config", charset)
    part.add_header("Content-Disposition", 'attachment; filename="vmagent.cfg"')
    message.attach(part)
    for text, subtype, filename in extra:
        part = MIMEText(text, subtype, charset)
        part.add_header("Content-Disposition", f'attachment; filename="{filename}"')
        message.attach(part)
        if subtype == "cloud-config":
            part.add_header("Merge-Type", "list(append)+dict(recurse_array)+str()")
    return message.as_bytes()


def _fit_vacuum(data: bytes, cloud: str, image_name: str, x509_proxy: bool) -> bytes:
    """Within the limit with room for what the platform fills in; gzip would hide the patterns."""
    room = vac.PROXY_GROWTH if x509_proxy else vac.GROWTH
    limit = LIMITS[cloud]
    if len(data) + room <= limit:
        return data
    raise UsageError(
        f"vacuum user data for {image_name} is {len(data)} bytes; with {room} bytes for what the "
        f"platform fills in it is over the {cloud} limit of {limit} bytes, and it cannot be "
        "gzipped: the platform substitutes its ##user_data_...## patterns in the raw text",
        hint="move VO parts into the image (images/packer)",
    )


def _fit(data: bytes, cloud: str, image_name: str) -> bytes:
    limit = LIMITS[cloud]
    if len(data) <= limit:
        return data
    packed = gzip.compress(data, mtime=0)
    if len(packed) <= limit:
        return packed
    raise UsageError(
        f"user data for {image_name} is {len(data)} bytes ({len(packed)} gzipped), over the "
        f"{cloud} limit of {limit} bytes",
        hint="move VO parts into the image (images/packer)",
    )


def _family(os_name: str) -> str:
    return (
        "el" if os_name.startswith("el") else "ubuntu" if os_name.startswith("ubuntu") else "debian"
    )


def _read(site: Dict[str, Any], path: str) -> str:
    full = path if os.path.isabs(path) else os.path.join(site["_dir"], path)
    try:
        with open(full, encoding="utf-8") as fh:
            return fh.read()
    except OSError as exc:
        raise ConfigError(full, [("", f"cannot read: {exc.strerror}")]) from None


def write(data: bytes, out: Optional[str]) -> None:
    """``data`` to stdout, or to file ``out``: 0600, flushed to disk, renamed over it (never readable by others)."""
    if not out:
        sys.stdout.buffer.write(data)
        return
    write_atomic(out, data, 0o600, durable=True)
