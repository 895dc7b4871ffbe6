#!/usr/bin/env bash
# Node vs redis-server 7.0, side by side, in one run on loopback.
# Usage: bench/run.sh            (ROUNDS=3 N=200000 by default)
#        ROUNDS=5 N=500000 bench/run.sh
# Needs: cargo, python3, redis-server, redis-benchmark, redis-cli.
set -euo pipefail
cd "$(dirname "$0")/.."
for t in redis-server redis-benchmark redis-cli python3; do
  command -v "$t" >/dev/null || { echo "missing $t (apt-get install redis-server redis-tools python3)"; exit 1; }
done
cargo build --release --quiet
exec python3 bench/bench.py "$@"
