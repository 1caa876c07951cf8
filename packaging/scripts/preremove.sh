#!/bin/sh
# edgemirror preremove (deb prerm, rpm %preun).
#   deb: $1 = remove, upgrade, deconfigure or failed-upgrade
#   rpm: $1 = 0 on erase, 1 on upgrade
# On removal the services are stopped (the agent writes its last partial
# chunk to the buffer first); an upgrade leaves them running until the new
# binary is in place.
set -e
case "$1" in
  remove | 0)
    if [ -d /run/systemd/system ]; then
      systemctl stop edgemirror-agent.service edgemirror-aggregator.service >/dev/null 2>&1 || true
    fi
    ;;
esac
exit 0
