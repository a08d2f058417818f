"""User data for vacuum platforms (Vac, Vcycle): the ``##user_data_...##`` patterns they fill in.

The platform substitutes in the raw user data it was given, then blanks every pattern it has no
value for. So every part must stay readable as text (no base64, no gzip), and every value vmagent
takes from the platform is a pattern in the rendered files: the platform's machine features and job
outputs URLs, the VM's own job features URL (its life's bound), the VM's uuid as its instance id
and its hostname as the platform named it, the machinetype's enrolment credential and, when
the machinetype makes one, the X.509 proxy (the pilot's proxy and the vac endpoint's client
certificate). ``vmagent check-config`` refuses a configuration that
still holds a pattern or a blanked URL (``config_check.vacuum_leftovers``).
"""

from __future__ import annotations

from typing import Any, Dict, Mapping

from ..config_check import VACUUM_PATTERN as PATTERN

TOKEN = "##user_data_option_enrolment_token##"
PROXY = "##user_data_option_x509_proxy##"
PROXY_FILE = "/etc/vmagent/x509proxy.pem"
UUID = "##user_data_uuid##"
MACHINEFEATURES = "##user_data_machinefeatures_url##"
JOBFEATURES = "##user_data_jobfeatures_url##"
HOSTNAME = "##user_data_machine_hostname##"
JOBOUTPUTS = "##user_data_joboutputs_url##"
# What the platform may add when it substitutes: URLs and a uuid of some hundred bytes, an X.509
# proxy (certificate, key and the chain it was signed with) of a few kilobytes.
GROWTH = 1024
PROXY_GROWTH = 8192
# Values of the platform's kind, used to check the configuration as the VM will see it.
SAMPLES = {
    UUID: "6ba7b810-9dad-11d1-80b4-00c04fd430c8",
    MACHINEFEATURES: "https://vac.example.org/machinefeatures/",
    JOBFEATURES: "https://vac.example.org/jobfeatures/",
    HOSTNAME: "vm01.vac.example.org",
    JOBOUTPUTS: "https://vac.example.org/joboutputs/",
}


def configure(doc: Dict[str, Any], x509_proxy: bool) -> None:
    """Put the platform's patterns into vmagent's configuration ``doc`` (in place)."""
    doc["instance"]["id"] = UUID
    doc["instance"]["hostname"] = HOSTNAME  # blanked: the system's hostname (only a label)
    doc["mjf"]["upstream_machinefeatures"] = MACHINEFEATURES
    doc["mjf"]["upstream_jobfeatures"] = JOBFEATURES
    vac: Dict[str, Any] = {"joboutputs": JOBOUTPUTS}
    doc["monitor"]["endpoints"].append({"name": "vac", "options": vac})
    if not x509_proxy:
        return
    vac["cert_file"] = PROXY_FILE  # Vcycle's joboutputs take a PUT only with the VM's certificate
    commands = doc["pilot"]["commands"]
    for index, command in enumerate(commands):
        if command == "check-credentials":
            commands[index] = {"name": "check-credentials", "options": {"proxy_file": PROXY_FILE}}


def filled(doc: Mapping[str, Any]) -> Any:
    """``doc`` with the patterns replaced by sample values: the configuration a VM will get."""
    if isinstance(doc, Mapping):
        return {key: filled(value) for key, value in doc.items()}
    if isinstance(doc, list):
        return [filled(value) for value in doc]
    if isinstance(doc, str):
        return PATTERN.sub(lambda found: SAMPLES.get(found.group(0), "x"), doc)
    return doc


def proxy_script() -> str:
    """A shell part that writes the platform's X.509 proxy (several lines) to ``PROXY_FILE``."""
    return "#!/bin/sh\n" + proxy_lines()


def proxy_lines() -> str:
    """Shell lines writing the proxy: a here-document keeps its lines whole.

    A substituted proxy spans lines, which no YAML string of a cloud-config part survives. A
    blanked pattern writes no file.
    """
    return (
        "# the X.509 proxy the vacuum platform made for this VM (user_data_proxy = True)\n"
        "umask 077\n"
        "mkdir -p /etc/vmagent\n"
        "proxy=$(cat <<'VMAGENT_EOF'\n"
        f"{PROXY}\n"
        "VMAGENT_EOF\n"
        ")\n"
        f'[ -z "$proxy" ] || printf \'%s\\n\' "$proxy" > {PROXY_FILE}\n'
    )
