"""A real VM: Debian 12 under QEMU, contextualised by rendered user data, working for a real manager.

Opt in with VMAGENT_E2E=1 (CI sets it). Needs root, debootstrap, qemu-system-x86, qemu-utils and
genisoimage. The guest reaches only two host services, each on 127.0.0.1, through QEMU guestfwd:
the manager (10.0.2.100:8443) and a directory of wheels (10.0.2.101:8080); nothing else.
"""

from __future__ import annotations

import http.server
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import threading
import time
from functools import partial
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.e2e
REPO = Path(__file__).resolve().parents[2]
TOOLS = ("debootstrap", "qemu-system-x86_64", "qemu-img", "genisoimage", "mkfs.ext4")
WANTED = os.environ.get("VMAGENT_E2E") == "1"
MISSING = [t for t in TOOLS if shutil.which(t) is None]
if not WANTED:
    pytest.skip("real VM boot: set VMAGENT_E2E=1 to run it", allow_module_level=True)
if MISSING or os.geteuid() != 0:
    pytest.skip(
        f"real VM boot needs root and {', '.join(MISSING) or 'nothing else'}",
        allow_module_level=True,
    )
pytest.importorskip("fastapi", reason="the manager needs vmagent[manager]")

from vmagent.manager import testing  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
import vmimage  # noqa: E402

DEPENDENCIES = ["psutil", "requests", "pyyaml", "jinja2", "cryptography", "jsonschema"]
# Slot managers that are not root, each in a unit delegated to it (Delegate=yes): the other cgroup v2 path,
# their own group split into a supervisor leaf and payload groups. memory_limit cgroup: fail, not fall back
# to RLIMIT_AS. Run by the pipeline before launch, so the monitor's halt policies take no notice of them.
NONROOT = "/var/tmp/nonroot"
SLOTS_JOURNAL = "/var/tmp/vmagent-slots.journal"
UNITS_VERIFY = (
    "/var/tmp/vmagent-units.verify"  # what the guest's systemd says of vmagent's unit files
)
UNITS = ("vmagent-monitor.service", "vmagent-pilot.service", "vmagent-slots.service")
NEWER_THAN = {
    "bullseye": {"PrivateIPC"}
}  # sandboxing settings the suite's systemd (247) does not know
CAT_CGROUP = {"command": ["cat", "/proc/self/cgroup"], "memory_mb": 32}
NONROOT_RUNS = {  # unit: its payloads, one unit after the other
    "vmagent-nonroot.service": {
        "nonroot-small": CAT_CGROUP,
        "nonroot-big": {"command": ["python3", "-c", "b = b'x' * (256 * 2**20)"], "memory_mb": 64},
    },
    # started in its group's supervisor leaf already, where systemd 254's DelegateSubgroup=supervisor puts it
    "vmagent-nonroot-sub.service": {"nonroot-sub": CAT_CGROUP},
}


def nonroot_script() -> str:
    """Shell that writes the non-root slot managers' files below NONROOT and runs them as nobody."""

    def put(name: str, text: str) -> str:
        return f"printf '%s\\n' {shlex.quote(text)} > {NONROOT}/{name}"

    config = {
        "paths": {k: f"{NONROOT}/{k}" for k in ("state_dir", "log_dir", "run_dir", "scratch")},
        "slots": {
            "source": "spool",
            "spool_dir": f"{NONROOT}/spool",
            "memory_limit": "cgroup",
            "poll_seconds": 1,
        },
    }
    # a file, since systemd would take the $ of a command line for its own variables
    leaf = (
        "g=/sys/fs/cgroup$(sed -n 's/^0:://p' /proc/self/cgroup)/supervisor\n"
        'mkdir $g && echo $$ > $g/cgroup.procs && exec "$@"'
    )
    lines = [
        f"mkdir -p {NONROOT}/spool/incoming",
        put("vmagent.yaml", json.dumps(config)),
        put("leaf.sh", leaf),
    ]
    for unit, payloads in NONROOT_RUNS.items():
        lines += [
            put(f"spool/incoming/{i}.json", json.dumps({"id": i, **p})) for i, p in payloads.items()
        ]
        start = "" if unit == "vmagent-nonroot.service" else f"/bin/sh {NONROOT}/leaf.sh "
        lines += [
            f"chown -R nobody: {NONROOT}",
            f"systemd-run --wait --collect --unit={unit} -p User=nobody -p Delegate=yes "
            f"-p StandardError=append:{NONROOT}/{unit}.log {start}/opt/vmagent/bin/vmagent "
            f"-c {NONROOT}/vmagent.yaml pool run --exit-when-idle",
            f"echo exit status $? >> {NONROOT}/{unit}.log",
        ]
    return "\n".join(lines)


def wait_until(condition: str, seconds: int = 300) -> str:
    """Shell that waits until the shell ``condition`` holds, trying each second for up to ``seconds``
    (journald writes when it gets to it; a loaded host makes the guest slow)."""
    return f"for i in $(seq {seconds}); do if {condition}; then break; fi; sleep 1; done"


def in_journal(text: str) -> str:
    return f"journalctl --no-pager -u vmagent-slots.service | grep -qF {shlex.quote(text)}"


def crash_and_readopt(survivor: str, greedy: str) -> str:
    """Shell that kills the slot manager while ``survivor`` runs, once ``greedy`` has ended and the state
    says so (a kill while a payload starts leaves it to the recovery from pid files, which knows less of
    it), waits for the restarted one to re-adopt ``survivor``, then keeps the journal in SLOTS_JOURNAL
    (written whatever happened, for the assertions to show)."""
    pool = "/var/lib/vmagent/pool"
    settled = (
        f"grep -qsF '\"{greedy}\"' {pool}/results.jsonl && grep -qsF '\"{survivor}\"' {pool}/state.json "
        f"&& ! grep -qsF '\"{greedy}\"' {pool}/state.json"
    )
    return "\n".join(
        [
            wait_until(settled),
            "systemctl kill --signal=KILL --kill-who=main vmagent-slots.service",
            wait_until(in_journal(f"re-adopted {survivor} (pid")),
            f"journalctl --no-pager -u vmagent-slots.service > {SLOTS_JOURNAL}",
            f"systemd-analyze verify {' '.join(f'/etc/systemd/system/{u}' for u in UNITS)} > {UNITS_VERIFY} 2>&1",
            f"echo verify done >> {UNITS_VERIFY}",
        ]
    )


def wait_for(probe, seconds: float = 60):
    """``probe()``'s first true answer, asked every second; its last answer once ``seconds`` have passed."""
    deadline = time.monotonic() + seconds
    found = probe()
    while not found and time.monotonic() < deadline:
        time.sleep(1)
        found = probe()
    return found


def wheels(target: Path, log, python: str) -> None:
    """vmagent's wheel, built from this checkout, and its dependencies for the guest's Python."""
    target.mkdir()
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(target), str(REPO)],
        check=True,
        stdout=log,
        stderr=log,
    )
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "-q",
            "--only-binary=:all:",
            "--python-version",
            python,
            "--implementation",
            "cp",
            "--platform",
            "manylinux2014_x86_64",
            "--platform",
            "manylinux_2_17_x86_64",
            "--platform",
            "manylinux_2_28_x86_64",
            "--platform",
            "any",
            "-d",
            str(target),
            *DEPENDENCIES,
        ],
        check=True,
        stdout=log,
        stderr=log,
    )


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


def serve(directory: Path):
    handler = partial(QuietHandler, directory=str(directory))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.mark.parametrize("suite,os_name", [("bookworm", "debian12"), ("bullseye", "debian11")])
def test_vm_boots_works_and_halts(tmp_path, suite, os_name):
    """The VM installs vmagent, registers, runs the queued payloads (one over its memory limit, one across
    a crash and restart of the slot manager), halts itself; the manager shows it all."""
    with open(tmp_path / "build.log", "w") as log:
        image = vmimage.build(log, suite)
        wheels(tmp_path / "wheels", log, vmimage.SUITES[suite])
    wheel_server = serve(tmp_path / "wheels")
    state = tmp_path / "manager"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "vmagent",
            "manager",
            "init",
            "--state-dir",
            str(state),
            "--name",
            "10.0.2.100",
        ],
        check=True,
        capture_output=True,
    )
    manager = testing.start_manager(str(state), extra=["--heartbeat-period", "5"])
    try:
        admin = manager.client()
        ids = [
            admin.submit(
                {
                    "id": f"e2e-{i}",
                    "command": ["python3", "-c", f"print(sum(range({i + 1} * 10**6)))"],
                    "cores": 1,
                    "wall_estimate_seconds": 30,
                }
            )
            for i in range(3)
        ]
        # still running when the slot manager is SIGKILLed: the restarted one must adopt it (the kill
        # waits for the greedy payload's end, some 30 s under TCG; a restart takes as long again)
        survivor = admin.submit(
            {
                "id": "e2e-long",
                "command": ["sleep", "150"],
                "cores": 1,
                "wall_estimate_seconds": 150,
            }
        )
        # 256 MB written by a payload allowed 64 MB: the kernel kills it in its cgroup v2 group
        greedy = admin.submit(
            {
                "id": "e2e-oom",
                "command": ["python3", "-c", "b = b'x' * (256 * 2**20)"],
                "cores": 1,
                "memory_mb": 64,
                "wall_estimate_seconds": 30,
            }
        )
        token = admin.enrol(site="E2E.local", ce="qemu", image="e2e-image", ttl_seconds=3600)[
            "enrolment_token"
        ]
        (tmp_path / "token").write_text(token)
        site = {
            "site": "E2E.local",
            "vo": "e2e",
            "endpoints": {"qemu": {"cloud": "openstack"}},
            "images": {
                "e2e-image": {
                    "endpoint": "qemu",
                    "os": os_name,
                    "lifetime_seconds": 3600,
                    "pilot_commands": [
                        {
                            "name": "check-node",
                            "options": {"min_scratch_free_mb": 100, "min_memory_mb_per_core": 100},
                        },
                        "check-credentials",
                        "setup-mjf",
                        # its failure shows in the assertions below, not as a pipeline without launch
                        {
                            "name": "exec",
                            "timeout": 180,
                            "on_failure": "continue",
                            "options": {"argv": ["sh", "-c", nonroot_script()]},
                        },
                        "launch",
                        # the slot manager crashes while payloads run; systemd restarts it (its
                        # journal, kept in a file the test reads, shows the adoption)
                        {
                            "name": "exec",
                            "timeout": 900,
                            "options": {"argv": ["sh", "-c", crash_and_readopt(survivor, greedy)]},
                        },
                    ],
                    "slots": {"poll_seconds": 2},
                    "monitor": {
                        "period_seconds": 5,
                        "check_seconds": 2,
                        "no_payloads_seconds": 20,
                        "fizzle_seconds": 600,
                    },
                }
            },
            "manager": {"url": "https://10.0.2.100:8443", "ca_file": str(state / "ca.pem")},
            "vmagent": {"pip_spec": "vmagent", "find_links": "http://10.0.2.101:8080/"},
        }
        (tmp_path / "site.yaml").write_text(yaml.safe_dump(site))
        seed = tmp_path / "seed"
        seed.mkdir()
        subprocess.run(
            [
                sys.executable,
                "-m",
                "vmagent",
                "userdata",
                "render",
                "--site",
                str(tmp_path / "site.yaml"),
                "--image",
                "e2e-image",
                "--token-file",
                str(tmp_path / "token"),
                "--format",
                "cloud-config",
                "-o",
                str(seed / "user-data"),
            ],
            check=True,
        )
        (seed / "meta-data").write_text(
            f"instance-id: e2e-{int(time.time())}\nlocal-hostname: vmagent-e2e\n"
        )
        subprocess.run(
            [
                "genisoimage",
                "-quiet",
                "-output",
                str(tmp_path / "seed.iso"),
                "-volid",
                "cidata",
                "-joliet",
                "-rock",
                str(seed / "user-data"),
                str(seed / "meta-data"),
            ],
            check=True,
        )
        overlay = tmp_path / "disk.qcow2"
        subprocess.run(
            [
                "qemu-img",
                "create",
                "-q",
                "-f",
                "qcow2",
                "-b",
                str(image["root.img"]),
                "-F",
                "raw",
                str(overlay),
            ],
            check=True,
        )
        port = manager.url.rsplit(":", 1)[1]
        relay = f"{sys.executable} {Path(__file__).parent / 'forward.py'} 127.0.0.1"  # one per connection
        net = (
            f"user,id=n0,restrict=on,guestfwd=tcp:10.0.2.100:8443-cmd:{relay} {port},"
            f"guestfwd=tcp:10.0.2.101:8080-cmd:{relay} {wheel_server.server_address[1]}"
        )
        console = tmp_path / "console.log"
        started = time.monotonic()
        qemu = subprocess.run(
            [
                "qemu-system-x86_64",
                "-accel",
                "tcg,thread=multi",
                "-cpu",
                "max",
                "-m",
                "2048",
                "-smp",
                "2",
                "-nographic",
                "-no-reboot",
                "-kernel",
                str(image["vmlinuz"]),
                "-initrd",
                str(image["initrd.img"]),
                "-append",
                "root=LABEL=rootfs rw console=ttyS0",
                "-drive",
                f"if=virtio,file={overlay},format=qcow2",
                "-drive",
                f"if=virtio,file={tmp_path / 'seed.iso'},format=raw,readonly=on",
                "-netdev",
                net,
                "-device",
                "virtio-net-pci,netdev=n0",
                "-serial",
                f"file:{console}",
                "-monitor",
                "none",
                "-display",
                "none",
            ],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=1200,
        )
        print(f"VM ran for {time.monotonic() - started:.0f} s")
        text = console.read_text(errors="replace")
        assert qemu.returncode == 0, qemu.stderr + text[-3000:]
        # the VM is gone, but the manager may still be storing what it said last: asked until a deadline
        vms = wait_for(lambda: [v for v in admin.vms() if v["image"] == "e2e-image"])
        assert len(vms) == 1, text[-4000:]

        def vm_halted():
            found = admin.vm(vms[0]["id"])
            return found if found["state"] == "halted" else None

        vm = wait_for(vm_halted) or admin.vm(vms[0]["id"])
        assert vm["state"] == "halted" and vm["vacuum_code"] == 200, vm

        def outcomes_known():
            found = {p["id"]: p["outcome"] for p in admin.payloads(limit=100)}
            return found if all(found.get(i) for i in (*ids, greedy, survivor)) else None

        outcomes = wait_for(outcomes_known) or {
            p["id"]: p["outcome"] for p in admin.payloads(limit=100)
        }
        assert all(outcomes.get(i) == "done" for i in ids), outcomes
        assert outcomes.get(greedy) == "failed", outcomes
        assert outcomes.get(survivor) == "done", outcomes
        assert token not in text, "the enrolment token leaked into the console log"
        logs = [
            "/var/log/cloud-init.log",
            "/var/log/cloud-init-output.log",
            "/var/log/vmagent/heartbeats.jsonl",
            "/var/log/syslog",
        ]
        units = {i: unit for unit, payloads in NONROOT_RUNS.items() for i in payloads}
        spool = {i: f"{NONROOT}/spool/results/{i}.json" for i in units}
        cat_out = {
            i: f"{NONROOT}/scratch/payloads/{i}/stdout" for i in ("nonroot-small", "nonroot-sub")
        }
        files = guest_files(
            tmp_path,
            overlay,
            [
                *logs,
                "/var/lib/vmagent/pool/results.jsonl",
                SLOTS_JOURNAL,
                UNITS_VERIFY,
                *spool.values(),
                *cat_out.values(),
                *(f"{NONROOT}/{u}.log" for u in NONROOT_RUNS),
            ],
        )
        guest_logs = "\n".join(files[p] for p in logs)
        assert guest_logs and token not in guest_logs, "the enrolment token leaked into a guest log"
        lines = files["/var/lib/vmagent/pool/results.jsonl"].splitlines()
        results = {r["id"]: r for r in (json.loads(line) for line in lines if line.strip())}
        assert "memory limit of 64 MB exceeded" in (results[greedy]["reason"] or ""), results.get(
            greedy
        )
        # finished under the restarted slot manager, which adopted it; its CPU time from its cgroup (not a child)
        assert f"re-adopted {survivor} (pid" in files[SLOTS_JOURNAL], files[SLOTS_JOURNAL][-3000:]
        # every payload in a group of its own, none in the unit's: systemd restarts a clean unit
        assert "left-over process" not in files[SLOTS_JOURNAL], files[SLOTS_JOURNAL][-3000:]
        # the sandboxed units: every setting known to this systemd but those newer than it
        unknown = set(re.findall(r"Unknown key (?:name )?'(\w+)'", files[UNITS_VERIFY]))
        assert "verify done" in files[UNITS_VERIFY], files[UNITS_VERIFY]
        assert unknown <= NEWER_THAN.get(suite, set()), files[UNITS_VERIFY]
        assert (
            results[survivor]["outcome"] == "done" and results[survivor]["cpu_seconds"] is not None
        ), results
        assert all(results[i]["cpu_seconds"] > 0 for i in ids), results
        # the non-root slot managers: their groups delegated, the payloads' groups below them, the kernel's OOM kill
        slots_logs = {u: files[f"{NONROOT}/{u}.log"] for u in NONROOT_RUNS}
        for unit, text in slots_logs.items():
            assert (
                f"cgroup v2 below /sys/fs/cgroup/system.slice/{unit}\n" in text
                and "exit status 0" in text
            ), text
        found = {i: json.loads(files[path] or "{}") for i, path in spool.items()}
        for i, path in cat_out.items():
            assert files[path] == f"0::/system.slice/{units[i]}/payload-{i}\n", files[path]
            assert found[i].get("outcome") == "done", found
        assert "memory limit of 64 MB exceeded" in (found["nonroot-big"].get("reason") or ""), found
    finally:
        manager.stop()
        wheel_server.shutdown()
        wheel_server.server_close()


def guest_files(tmp_path: Path, overlay: Path, paths) -> dict:
    """The text of files in the guest's disk after it stopped ("" if missing), read with debugfs (nothing is
    mounted); one conversion of the disk for all of them."""
    raw = tmp_path / "disk.raw"
    subprocess.run(["qemu-img", "convert", "-O", "raw", str(overlay), str(raw)], check=True)
    found = {}
    for path in paths:
        found[path] = subprocess.run(
            ["debugfs", "-R", f"cat {path}", str(raw)], capture_output=True, text=True
        ).stdout
    raw.unlink()
    return found
