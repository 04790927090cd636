#!/usr/bin/env bash
# Makes sure a Chromium exists for the dashboard's browser tests (tests/ui, Playwright
# drives it; it never downloads a browser of its own). BOUNDQ_CHROMIUM names another
# executable. As root on a Debian-like machine the `chromium` package is installed;
# elsewhere one clear error says what to do.
set -euo pipefail
if [ -n "${BOUNDQ_CHROMIUM:-}" ]; then
  [ -x "$BOUNDQ_CHROMIUM" ] && exit 0
  echo "boundq: BOUNDQ_CHROMIUM=$BOUNDQ_CHROMIUM is not an executable" >&2
  exit 1
fi
command -v chromium >/dev/null 2>&1 && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "boundq: Chromium not found; installing the 'chromium' package (apt-get)" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq --no-install-recommends chromium >/dev/null
  exit 0
fi
echo "boundq: no Chromium found. Install it (Debian/Ubuntu: apt-get install chromium)" >&2
echo "        or set BOUNDQ_CHROMIUM to a Chromium executable." >&2
exit 1
