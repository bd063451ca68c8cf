#!/usr/bin/env bash
# Debian packages the test suite needs beyond the Python virtualenv: a GStreamer RTSP
# server (run by tests/ingest/rtsp_server.py under Debian's /usr/bin/python3) that stands in
# for an IP camera, and Chromium for the dashboard's browser tests (driven by PyPI
# playwright with executable_path=/usr/bin/chromium; no browser download). Idempotent: installs only what `dpkg -s` says is missing, and does
# nothing at all (no apt-get update) when everything is present.
set -euo pipefail

PACKAGES=(
  python3-gi                    # GObject bindings, only for Debian's /usr/bin/python3
  gir1.2-gst-rtsp-server-1.0    # GstRtspServer typelib (pulls in libgstrtspserver)
  gstreamer1.0-plugins-good     # qtdemux, rtph264pay
  gstreamer1.0-plugins-bad      # h264parse
  chromium                      # headless browser for the dashboard tests
)

missing=()
for pkg in "${PACKAGES[@]}"; do
  if ! dpkg -s "$pkg" 2>/dev/null | grep -q '^Status: install ok installed$'; then
    missing+=("$pkg")
  fi
done

if [ "${#missing[@]}" -eq 0 ]; then
  echo "install-system-deps: all present (${PACKAGES[*]})"
  exit 0
fi

SUDO=()
if [ "$(id -u)" -ne 0 ]; then
  SUDO=(sudo)
fi

echo "install-system-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
"${SUDO[@]}" apt-get update
"${SUDO[@]}" apt-get install -y --no-install-recommends "${missing[@]}"
