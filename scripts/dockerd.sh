#!/usr/bin/env bash
# Starts the Docker daemon in the background if it is not answering, for
# machines without systemd (CI, the tests). Idempotent: does nothing when
# `docker info` works. No bridge and no iptables rules, so no addresses
# outside loopback appear on the host: test containers run with
# `--network none`, the service's image with `--network host`.
# Log: /var/log/packetflix-dockerd.log. Needs root.
set -euo pipefail
LOG=/var/log/packetflix-dockerd.log
PIDFILES=(/var/run/docker.pid /var/run/docker/containerd/containerd.pid)
# How long dockerd may take to answer after start (it starts containerd,
# which waits for what a killed one left behind).
WAIT_SECONDS=120
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
  # A dockerd that is starting counts; a killed one not yet reaped (a
  # zombie, where nothing reaps orphans) does not.
  if ! ps -C dockerd -o stat= 2>/dev/null | grep -qv '^Z'; then
    # Pid files of a killed dockerd and its containerd (gone, or zombies
    # where nothing reaps orphans) stop new ones from starting.
    for pidfile in "${PIDFILES[@]}"; do
      pid=$(cat "$pidfile" 2>/dev/null || true)
      case "$(ps -o stat= -p "${pid:-0}" 2>/dev/null || true)" in
        "" | Z*) rm -f "$pidfile" ;;
      esac
    done
    # Not holding the lock (fd 9) for as long as it runs.
    nohup dockerd --bridge=none --iptables=false >>"$LOG" 2>&1 </dev/null 9>&- &
  fi
  for _ in $(seq $((WAIT_SECONDS * 2))); do
    docker info >/dev/null 2>&1 && exit 0
    sleep 0.5
  done
  echo "dockerd did not answer within ${WAIT_SECONDS}s; see $LOG" >&2
  exit 1
fi
