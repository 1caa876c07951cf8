#!/bin/sh
# Create the unprivileged user the services run as.
set -e
if ! getent passwd edgemirror >/dev/null; then
  useradd --system --home-dir /var/lib/edgemirror --shell /usr/sbin/nologin edgemirror
fi
