#!/usr/bin/env bash
# vmagent's test command: installs what the tests need on Debian 12 (apt and pip, as root or via
# sudo), then runs ruff, mypy, the whole suite on this Python and the in-VM suite on Python 3.9.
# Set VMAGENT_E2E=1 to include the real VM boot tests (CI does).
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(
  python3-venv python3-dev gcc          # the project's own virtual environment
  postgresql                             # manager tests on a real PostgreSQL
  chromium chromium-driver               # dashboard tests in a real browser
  cloud-init packer                      # validating rendered user data and Packer templates
  qemu-system-x86 debootstrap genisoimage qemu-utils  # the real VM boot (e2e)
  util-linux e2fsprogs dosfstools        # loop devices, mkfs, findmnt for the disk tests
)
SUDO=""
[ "$(id -u)" = 0 ] || SUDO=sudo
missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "== apt-get install ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
echo "== pip install (Python $(.venv/bin/python -V 2>&1))"
.venv/bin/pip install -q --upgrade pip >/dev/null 2>&1 || true
.venv/bin/pip install -q -e '.[manager,test,dev]' 2>&1 | grep -v '^WARNING: Location' || true
.venv/bin/python -c 'import vmagent, fastapi, pytest_subprocess' # fail here, not deep in the tests

echo "== ruff"
.venv/bin/ruff check .
.venv/bin/ruff format --check .
echo "== mypy"
.venv/bin/mypy

echo "== pytest (Python $(.venv/bin/python -V 2>&1 | cut -d' ' -f2))"
.venv/bin/python -m pytest -q -p no:cacheprovider "$@"

# The in-VM code must run on EL9's Python 3.9.
PY39=""
for candidate in python3.9 ${PYENV_ROOT:-$HOME/.pyenv}/versions/3.9*/bin/python3.9; do
  if "$candidate" -c 'import sys; assert sys.version_info[:2] == (3, 9)' 2>/dev/null; then
    PY39=$candidate
    break
  fi
done
if [ -z "$PY39" ]; then
  echo "== installing Python 3.9 from Debian bullseye"
  # the same Debian mirror this machine already uses, bullseye suite, pinned low
  mirror=$(sed -n 's/^URIs: *//p' /etc/apt/sources.list.d/*.sources 2>/dev/null | grep -m1 -v security || true)
  [ -n "$mirror" ] || mirror=$(awk '/^deb /{print $2; exit}' /etc/apt/sources.list)
  echo "deb $mirror bullseye main" | $SUDO tee /etc/apt/sources.list.d/bullseye.list >/dev/null
  printf 'Package: *\nPin: release n=bullseye\nPin-Priority: 100\n' | $SUDO tee /etc/apt/preferences.d/bullseye >/dev/null
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq -t bullseye python3.9 python3.9-venv >/dev/null
  PY39=python3.9
fi
if [ ! -x .venv39/bin/python ]; then
  "$PY39" -m venv .venv39
fi
echo "== pip install (Python $(.venv39/bin/python -V 2>&1))"
.venv39/bin/pip install -q -e '.[test]' 2>&1 | grep -v '^WARNING: Location' || true
echo "== pytest, in-VM suite (Python $(.venv39/bin/python -V 2>&1 | cut -d' ' -f2))"
.venv39/bin/python -m pytest -q -p no:cacheprovider -m "not e2e" \
  --ignore=tests/manager --ignore=tests/e2e --ignore=tests/demo "$@"
