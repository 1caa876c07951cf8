#!/bin/sh
# edgemirror postremove (deb postrm, rpm %postun).
#   deb: $1 = remove, purge, upgrade, disappear, abort-install, abort-upgrade
#   rpm: $1 = 0 on erase, 1 on upgrade
# remove keeps the buffer (/var/lib/edgemirror), the aggregator's state and
# the unit enablement (and dpkg the env files; rpm keeps edited ones as
# .rpmsave), so a reinstall carries on where it stopped. purge (deb only; rpm has none) deletes all of them. The system
# user is kept either way: files elsewhere may still belong to it.
set -e
reload() {
  if [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null 2>&1 || true
  fi
}
case "$1" in
  remove | 0)
    reload
    ;;
  purge)
    rm -rf /var/lib/edgemirror /var/lib/edgemirror-aggregator
    rm -f /etc/systemd/system/multi-user.target.wants/edgemirror-agent.service \
      /etc/systemd/system/multi-user.target.wants/edgemirror-aggregator.service
    rmdir /etc/edgemirror 2>/dev/null || true
    reload
    ;;
  1)
    if [ -d /run/systemd/system ]; then
      systemctl daemon-reload >/dev/null 2>&1 || true
      systemctl try-restart edgemirror-agent.service edgemirror-aggregator.service >/dev/null 2>&1 || true
    fi
    ;;
esac
exit 0
