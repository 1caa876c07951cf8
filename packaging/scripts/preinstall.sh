#!/bin/sh
# edgemirror preinstall (deb preinst, rpm %pre): create the unprivileged
# system user and group the services run as, before the files are unpacked
# (the state directories belong to it).
set -e
if ! getent group edgemirror >/dev/null; then
  groupadd --system edgemirror
fi
if ! getent passwd edgemirror >/dev/null; then
  useradd --system --gid edgemirror --no-create-home --home-dir /var/lib/edgemirror \
    --shell /usr/sbin/nologin --comment "edgemirror service" edgemirror
fi
exit 0
