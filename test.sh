#!/usr/bin/env bash
# Quick start, step 2: the whole test suite (unit, end-to-end with real
# namespaces and the real dumpcap). Run as root.
set -euo pipefail
cd "$(dirname "$0")"
scripts/deps.sh
cargo nextest run --all-targets --no-fail-fast "$@"
