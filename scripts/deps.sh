#!/usr/bin/env bash
# Installs what Packetflix and its tests need on Debian, non-interactively,
# and only what is missing. Needs root (or sudo).
set -euo pipefail
need=()
command -v dumpcap >/dev/null || need+=(wireshark-common)
command -v tshark >/dev/null || need+=(tshark)
command -v ip >/dev/null || need+=(iproute2)
command -v ping >/dev/null || need+=(iputils-ping)
command -v python3 >/dev/null || need+=(python3)
command -v curl >/dev/null || need+=(curl)
# unshare and mount: tests run the service in a mount namespace of its own.
command -v unshare >/dev/null || need+=(util-linux)
command -v mount >/dev/null || need+=(mount)
# The deployment tests: Docker and its compose, a Debian root to build the
# image on, busybox to capture from, the Prometheus and systemd checkers.
command -v dockerd >/dev/null || need+=(docker.io)
command -v docker-compose >/dev/null || need+=(docker-compose)
command -v debootstrap >/dev/null || need+=(debootstrap)
dpkg -s busybox-static >/dev/null 2>&1 || need+=(busybox-static)
command -v promtool >/dev/null || need+=(prometheus)
command -v systemd-analyze >/dev/null || need+=(systemd)
command -v setpriv >/dev/null || need+=(util-linux)
# The desktop tests: the real xdg-mime/xdg-open, desktop-file-validate, a
# virtual X display, the Wireshark GUI, Chromium, xdotool to click and
# scrot for the screenshot kept as a test artifact; script(1) gives a
# capture a pseudo-terminal; the package tests build with cargo-deb, which
# reads dependencies with dpkg-shlibdeps (dpkg-dev).
command -v xdg-mime >/dev/null || need+=(xdg-utils)
command -v desktop-file-validate >/dev/null || need+=(desktop-file-utils)
command -v Xvfb >/dev/null || need+=(xvfb)
command -v wireshark >/dev/null || need+=(wireshark)
command -v chromium >/dev/null || need+=(chromium)
command -v xdotool >/dev/null || need+=(xdotool)
command -v scrot >/dev/null || need+=(scrot)
command -v script >/dev/null || need+=(bsdutils)
command -v dpkg-shlibdeps >/dev/null || need+=(dpkg-dev)
# libpcap: the native capture engine compiles filters with it (headers
# and the library to build, the run-time library to run).
dpkg -s libpcap-dev >/dev/null 2>&1 || need+=(libpcap-dev)
dpkg -s libpcap0.8 >/dev/null 2>&1 || need+=(libpcap0.8)
# Test certificates are made with the openssl command.
command -v openssl >/dev/null || need+=(openssl)
# The venv for the third-party wss client the TLS tests use.
python3 -c "import venv, ensurepip" 2>/dev/null || need+=(python3-venv)
if [ ${#need[@]} -gt 0 ]; then
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  # Do not ask whether non-root users may capture: the service runs as root.
  echo "wireshark-common wireshark-common/install-setuid boolean false" | $sudo debconf-set-selections
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}"
fi
if ! command -v cargo >/dev/null; then
  echo "cargo not found: install Rust (https://rustup.rs), then run this again" >&2
  exit 1
fi
if ! cargo nextest --version >/dev/null 2>&1; then
  cargo install --locked cargo-nextest
fi
# Debian packages (README "Debian packages", tests/packages.rs).
if ! cargo deb --version >/dev/null 2>&1; then
  cargo install --locked cargo-deb
fi
# Docker without systemd: started here if it is not running, and the local
# base images made once per machine (a few minutes the first time).
"$(dirname "$0")/docker-images.sh"
# Python websockets (a third-party wss client for tests/security.rs), in a
# venv under target/ so the system Python stays untouched.
here="$(cd "$(dirname "$0")/.." && pwd)"
venv="$here/target/tls-venv"
if ! "$venv/bin/python" -c "import websockets" 2>/dev/null; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check "websockets>=13"
fi
