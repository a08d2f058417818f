"""``vmagent userdata render``."""

from __future__ import annotations

import argparse
import sys


def register(subparsers: argparse._SubParsersAction) -> None:
    top = subparsers.add_parser(
        "userdata",
        help="render cloud-init user data for a site's image",
        description="Render the user data that installs and starts vmagent in a new VM.",
    )
    sub = top.add_subparsers(dest="userdata_command", metavar="ACTION", required=True)
    render = sub.add_parser("render", help="user data for one VM of an image")
    render.add_argument(
        "--site", required=True, help="site description (YAML; see examples/sites/)"
    )
    render.add_argument("--image", required=True, help="image name from the site description")
    render.add_argument(
        "--token-file",
        help="enrolment token for this VM (from 'vmagent manager enrol'); with --vacuum "
        "the default is the machinetype option ##user_data_option_enrolment_token##",
    )
    render.add_argument(
        "--cloud",
        choices=("ec2", "openstack", "gce"),
        help="size limit to apply (default: the endpoint's)",
    )
    render.add_argument("--format", choices=("mime", "cloud-config"), default="mime")
    render.add_argument(
        "--variant",
        choices=("cloud-init", "shell"),
        default="cloud-init",
        help="shell: a plain bootstrap script for images without cloud-init",
    )
    render.add_argument(
        "--vacuum",
        action="store_true",
        help="vacuum platform (Vac, Vcycle): leave ##user_data_...## patterns (the machinetype's "
        "enrolment credential, the VM's uuid, machine features and job outputs URLs) for the "
        "platform to fill in; parts stay plain text (never base64 or gzip)",
    )
    render.add_argument(
        "--x509-proxy",
        action="store_true",
        help="with --vacuum: the machinetype has user_data_proxy = True; write its "
        "##user_data_option_x509_proxy## to /etc/vmagent/x509proxy.pem: the pilot's proxy and the "
        "vac endpoint's client certificate (Vcycle's joboutputs)",
    )
    render.add_argument(
        "-o",
        "--out",
        metavar="FILE",
        help="write here instead of stdout: a new file of mode 0600 (it holds the enrolment "
        "token) renamed over FILE, so FILE is never readable by others",
    )
    render.set_defaults(func=_render)


def _render(args: argparse.Namespace) -> int:
    from ..config import read_text
    from ..errors import UsageError
    from .render import load_site, render, write

    site = load_site(args.site)
    token = "##user_data_option_enrolment_token##" if args.vacuum else ""
    if args.token_file:
        token = read_text(args.token_file).strip()
    if not token:
        raise UsageError("no enrolment token: pass --token-file (vmagent manager enrol prints one)")
    data = render(
        site,
        args.image,
        token,
        cloud=args.cloud,
        fmt=args.format,
        variant=args.variant,
        vacuum=args.vacuum,
        x509_proxy=args.x509_proxy,
    )
    write(data, args.out)
    if args.out:
        print(f"wrote {args.out} (mode 0600: it holds the enrolment token)", file=sys.stderr)
    return 0
