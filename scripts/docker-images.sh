#!/usr/bin/env bash
# Makes the local images the deployment tests build on, once per machine:
#   packetflix-base:bookworm   Debian 12 minbase, debootstrapped from the
#                              mirror apt already uses (no image registry
#                              needed; MIRROR=URL names another, and with
#                              neither the script fails naming what is
#                              missing); the image's BASE build argument
#   packetflix-busybox:test    a root of Debian's busybox-static, a small
#                              container to capture from
# Skips an image whose tag exists. Starts dockerd if needed. Needs root.
set -euo pipefail
cd "$(dirname "$0")/.."
BASE_TAG=${BASE_TAG:-packetflix-base:bookworm}
BUSYBOX_TAG=${BUSYBOX_TAG:-packetflix-busybox:test}
scripts/dockerd.sh
# Parallel test processes call this too: one builds, the others wait.
exec 9>/run/packetflix-images.lock
flock 9

# The first deb URI of apt's sources: the mirror this machine can reach.
# No guess when there is none: a hard-coded address may be one this machine
# cannot reach, and debootstrap would fail later with a less clear reason.
mirror() {
  local uri=""
  if compgen -G "/etc/apt/sources.list.d/*.sources" >/dev/null; then
    uri=$(awk '/^URIs:/ && $2 !~ /security/ {print $2; exit}' /etc/apt/sources.list.d/*.sources)
  fi
  if [ -z "$uri" ] && [ -f /etc/apt/sources.list ]; then
    uri=$(awk '$1 == "deb" && $0 !~ /security/ {for (i = 2; i <= NF; i++) if ($i ~ /^[a-z]+:\/\//) {print $i; exit}}' /etc/apt/sources.list)
  fi
  if [ -z "$uri" ]; then
    echo "docker-images.sh: apt's sources name no Debian mirror (no 'URIs:' line in" \
      "/etc/apt/sources.list.d/*.sources and no 'deb' line in /etc/apt/sources.list" \
      "besides security); add the mirror this machine uses, or set MIRROR=URL" >&2
    return 1
  fi
  echo "$uri"
}

if ! docker image inspect "$BASE_TAG" >/dev/null 2>&1; then
  MIRROR=${MIRROR:-$(mirror)} || exit 1
  root=$(mktemp -d /tmp/packetflix-base.XXXXXX)
  trap 'rm -rf "$root"' EXIT
  echo "debootstrap bookworm from $MIRROR (once per machine)" >&2
  log=/tmp/packetflix-debootstrap.log
  debootstrap --variant=minbase bookworm "$root" "$MIRROR" >"$log" 2>&1 ||
    { tail -20 "$log" >&2; echo "(whole log: $log)" >&2; exit 1; }
  rm -f "$log"
  # What a registry's debian:bookworm-slim would hold: no cached packages.
  rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
  tar -C "$root" -c . | docker import -c 'CMD ["/bin/bash"]' - "$BASE_TAG" >/dev/null
  rm -rf "$root"
  trap - EXIT
fi

if ! docker image inspect "$BUSYBOX_TAG" >/dev/null 2>&1; then
  # Debian's busybox-static: one static binary, so the root needs no libc.
  busybox=/bin/busybox
  dpkg -s busybox-static >/dev/null 2>&1 ||
    { echo "busybox-static is not installed (scripts/deps.sh installs it)" >&2; exit 1; }
  root=$(mktemp -d /tmp/packetflix-busybox.XXXXXX)
  trap 'rm -rf "$root"' EXIT
  mkdir -p "$root/bin"
  cp "$busybox" "$root/bin/busybox"
  for applet in sh ping sleep ip cat; do ln -s busybox "$root/bin/$applet"; done
  tar -C "$root" -c . | docker import -c 'CMD ["/bin/sh"]' - "$BUSYBOX_TAG" >/dev/null
  rm -rf "$root"
  trap - EXIT
fi
