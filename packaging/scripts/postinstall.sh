#!/bin/sh
# edgemirror postinstall (deb postinst, rpm %post).
#   deb: $1 = configure, $2 = the version upgraded from (empty on first install)
#   rpm: $1 = 1 on first install, 2 on upgrade
# Nothing is enabled or started here: the operator writes the config and
# enables the unit this box needs. On upgrade, units that are running are
# restarted on the new binary (rpm does that in %postun, after the old
# package is gone); the buffer is kept.
set -e
case "$1" in
  configure | 1 | 2) ;;
  *) exit 0 ;;
esac
for d in /var/lib/edgemirror /var/lib/edgemirror-aggregator; do
  mkdir -p "$d"
  chown edgemirror:edgemirror "$d"
  chmod 0700 "$d"
done
if [ -d /run/systemd/system ]; then
  systemctl daemon-reload >/dev/null 2>&1 || true
  if [ "$1" = configure ] && [ -n "$2" ]; then
    systemctl try-restart edgemirror-agent.service edgemirror-aggregator.service >/dev/null 2>&1 || true
  fi
fi
exit 0
