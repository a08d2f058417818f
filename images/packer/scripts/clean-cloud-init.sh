#!/bin/sh
# Leave no instance state behind: every VM made from this image runs cloud-init afresh.
set -eu
cloud-init clean --logs --machine-id || rm -rf /var/lib/cloud/instances /var/lib/cloud/instance
rm -f /etc/ssh/ssh_host_* /root/.bash_history
