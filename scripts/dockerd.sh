#!/usr/bin/env bash
# Starts the Docker daemon in the background if it is not answering, for
# machines without systemd (CI, the tests). Idempotent: does nothing when
# `docker info` works. No bridge and no iptables rules, so no addresses
# outside loopback appear on the host: test containers run with
# `--network none`, the service's image with `--network host`.
# Log: /var/log/packetflix-dockerd.log. Needs root.
set -euo pipefail
LOG=/var/log/packetflix-dockerd.log
# How long dockerd may take to answer after start (it sets up containerd).
WAIT_SECONDS=60
if docker info >/dev/null 2>&1; then
  exit 0
fi
if ! command -v dockerd >/dev/null; then
  echo "dockerd not found: install docker.io (scripts/deps.sh does)" >&2
  exit 1
fi
# Another caller may be starting it right now: only one dockerd may run.
exec 9>/run/packetflix-dockerd.lock
flock 9
if ! docker info >/dev/null 2>&1; then
  if ! pgrep -x dockerd >/dev/null; then
    nohup dockerd --bridge=none --iptables=false >>"$LOG" 2>&1 </dev/null &
  fi
  for _ in $(seq $((WAIT_SECONDS * 2))); do
    docker info >/dev/null 2>&1 && exit 0
    sleep 0.5
  done
  echo "dockerd did not answer within ${WAIT_SECONDS}s; see $LOG" >&2
  exit 1
fi
