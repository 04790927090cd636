#!/usr/bin/env bash
# Makes sure PostgreSQL server binaries exist for the embedded cluster.
# With DATABASE_URL set nothing is needed. As root on a Debian-like machine the
# `postgresql` package is installed; elsewhere one clear error says what to do.
set -euo pipefail
[ -n "${DATABASE_URL:-}" ] && exit 0
if ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null 2>&1; then
  exit 0
fi
if command -v pg_config >/dev/null 2>&1 && [ -x "$(pg_config --bindir)/initdb" ]; then
  exit 0
fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "boundq: PostgreSQL server binaries not found; installing the 'postgresql' package (apt-get)" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq postgresql >/dev/null
  exit 0
fi
echo "boundq: no PostgreSQL server binaries found. Install them (Debian/Ubuntu: apt-get install postgresql)" >&2
echo "        or set DATABASE_URL to a running PostgreSQL 14+ server." >&2
exit 1
