#!/usr/bin/env bash
# Quick start, step 1: install what is missing, build, and start Packetflix on
# port 5001 in the background (log: target/packetflix.log). Run as root: the
# service enters other network namespaces and captures packets.
set -euo pipefail
cd "$(dirname "$0")"
scripts/deps.sh
cargo build --release --bins
if [ -f target/packetflix.pid ] && kill -0 "$(cat target/packetflix.pid)" 2>/dev/null; then
  kill "$(cat target/packetflix.pid)"; sleep 1
fi
nohup target/release/packetflix --port "${PORT:-5001}" "$@" > target/packetflix.log 2>&1 &
echo $! > target/packetflix.pid
for _ in $(seq 50); do
  if curl -fsS "http://127.0.0.1:${PORT:-5001}/version" 2>/dev/null; then
    echo; echo "packetflix is running (pid $(cat target/packetflix.pid)); stop it with: kill \$(cat target/packetflix.pid)"
    exit 0
  fi
  sleep 0.1
done
echo "packetflix did not start; see target/packetflix.log:" >&2
tail -20 target/packetflix.log >&2
exit 1
