#!/usr/bin/env bash
# The local demo: installs vmagent with its reference manager into .venv (and python3-venv through
# apt when missing), then runs 'vmagent demo': a manager and an agent on this machine, real payloads.
# Arguments go to 'vmagent demo' (try --help).
set -euo pipefail
cd "$(dirname "$0")/.."
SUDO=""
[ "$(id -u)" = 0 ] || SUDO=sudo
PY=${PYTHON:-python3}
if ! "$PY" -c 'import ensurepip, venv' 2>/dev/null; then
  echo "== apt-get install python3-venv"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq python3-venv >/dev/null
fi
[ -x .venv/bin/python ] || "$PY" -m venv .venv
echo "== pip install vmagent[manager] into .venv"
.venv/bin/pip install -q -e '.[manager]' 2>&1 | grep -v '^WARNING: Location' || true
exec .venv/bin/vmagent demo "$@"
