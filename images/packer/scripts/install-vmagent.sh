#!/bin/sh
# Bake vmagent into the image at /opt/vmagent, and optionally the CVMFS client and DIRAC.
set -eu
if [ "$VMAGENT_FAMILY" = el ]; then
  dnf install -y python3
  if [ "$WITH_CVMFS" = true ]; then
    dnf install -y https://cvmrepo.s3.cern.ch/cvmrepo/yum/cvmfs-release-latest.noarch.rpm
    dnf install -y cvmfs
  fi
else
  apt-get update
  apt-get install -y python3 python3-venv curl
  if [ "$WITH_CVMFS" = true ]; then
    curl -fsSLo /tmp/cvmfs-release.deb https://cvmrepo.s3.cern.ch/cvmrepo/apt/cvmfs-release-latest_all.deb
    dpkg -i /tmp/cvmfs-release.deb && apt-get update && apt-get install -y cvmfs
  fi
fi
python3 -m venv /opt/vmagent
/opt/vmagent/bin/pip install --no-cache-dir "$VMAGENT_PIP_SPEC"
if [ -n "$DIRAC_VERSION" ]; then
  /opt/vmagent/bin/vmagent --version
  echo "DIRAC $DIRAC_VERSION is installed at boot by install-dirac (once per instance)"
fi
