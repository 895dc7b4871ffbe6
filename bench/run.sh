#!/usr/bin/env bash
# The markdown written below has literal backticks in single-quoted formats.
# shellcheck disable=SC2016
# Every slotway benchmark, side by side in one run on loopback, one command:
#
#   bench/run.sh
#
# builds in release, then runs each part and writes bench/RESULTS.md (date,
# machine, every command, every figure as medians of interleaved runs with
# their spread) and bench/results.png (throughput and latency per
# configuration). The parts, each bounded in time and skipped with a clear
# line when a tool or script is missing:
#
#   node      bench/node.py      slotway node vs redis-server 7.0: default
#                                redis-benchmark suite, pipelined SET/GET,
#                                memory for 1M keys
#   proxy     bench/proxy.py     slotway proxy vs direct `redis-benchmark
#                                --cluster` (and other proxies given by path)
#   failover  bench/failover.py  master SHUTDOWN -> cluster_state:ok, real
#                                redis-server cluster vs slotway nodes
#   hostile   bench/hostile.py   connect cycles, slowloris, a stalled
#                                reader: slotway node vs redis-server
#   soak      bench/soak.py      cluster + proxy under mixed load for
#                                MINUTES (default 10) with failovers and
#                                reshards; plot in bench/soak.svg
#
# Knobs (environment): PARTS="node proxy failover hostile soak" (a subset), PART_TIMEOUT
# (seconds per part, default 3600), ROUNDS / N / KEYS (node.py),
# FAILOVER_ROUNDS / FAILOVER_DEADLINE (failover.py), PROXY_ARGS (extra
# arguments for proxy.py, default --with-failover; e.g. add --other NAME=CMD
# to compare with another proxy).
# Needs: cargo, python3, redis-server, redis-cli, redis-benchmark.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1

PARTS=${PARTS:-"node proxy failover hostile soak"}
PART_TIMEOUT=${PART_TIMEOUT:-3600}
OUT=bench/out
mkdir -p "$OUT"
rm -f "$OUT"/*.json "$OUT"/*.md
started=$SECONDS

have() { command -v "$1" >/dev/null 2>&1; }
say() { printf '== %s\n' "$*" >&2; }

have cargo || { echo "bench/run.sh: cargo is missing (https://rustup.rs)" >&2; exit 1; }
say "building in release (slotway and the plot example)"
cargo build --release --quiet --bin slotway --example plot || { echo "bench/run.sh: release build failed" >&2; exit 1; }
target_dir=${CARGO_TARGET_DIR:-target}
case "$target_dir" in /*) ;; *) target_dir="$PWD/$target_dir" ;; esac
export SLOTWAY="$target_dir/release/slotway"
PLOT="$target_dir/release/examples/plot"

# run_part NAME TITLE SCRIPT [ARGS...]: runs one part with a time limit,
# its markdown to $OUT/NAME.md, figures to $OUT/NAME.json, log to $OUT/NAME.log.
run_part() {
  local name=$1 title=$2 script=$3
  shift 3
  local md="$OUT/$name.md"
  case " $PARTS " in *" $name "*) ;; *) printf '## %s\n\nNot run (PARTS=%s).\n' "$title" "$PARTS" >"$md"; return ;; esac
  if [ ! -f "$script" ]; then
    printf '## %s\n\nSkipped: `%s` is not in this checkout.\n' "$title" "$script" >"$md"
    say "$name: skipped ($script missing)"
    return
  fi
  if ! have python3; then
    printf '## %s\n\nSkipped: python3 is missing.\n' "$title" >"$md"
    return
  fi
  say "$name: $script (at most ${PART_TIMEOUT}s)"
  local t0=$SECONDS rc=0
  # timeout signals the whole process group, so servers a script started
  # are stopped with it even if the script cannot clean up.
  timeout --kill-after=30 "$PART_TIMEOUT" python3 "$script" --json "$OUT/$name.json" "$@" \
    >"$md.tmp" 2> >(tee "$OUT/$name.log" >&2) || rc=$?
  if [ ! -s "$md.tmp" ]; then printf '## %s\n\n' "$title" >"$md.tmp"; fi
  if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then
    printf '\n**Stopped after %ss (PART_TIMEOUT)**: figures above are partial or missing.\n' "$PART_TIMEOUT" >>"$md.tmp"
  elif [ "$rc" != 0 ]; then
    printf '\n**Failed (exit %s)**; the last lines of its log:\n\n```\n%s\n```\n' "$rc" "$(tail -n 15 "$OUT/$name.log")" >>"$md.tmp"
  fi
  printf '\n_Part time: %ss._\n' "$((SECONDS - t0))" >>"$md.tmp"
  mv "$md.tmp" "$md"
}

run_part node "Node: slotway vs redis-server" bench/node.py
# shellcheck disable=SC2086 # PROXY_ARGS is a list of words on purpose
run_part proxy "Proxy: slotway proxy vs direct cluster access" bench/proxy.py ${PROXY_ARGS:---with-failover}
run_part failover "Failover: master SHUTDOWN → cluster_state:ok again" bench/failover.py
run_part hostile "Hostile clients: slotway node vs redis-server" bench/hostile.py
run_part soak "Soak: slotway cluster + proxy under mixed load" bench/soak.py

rm -f bench/results.png
plot_line="![throughput and latency per configuration](results.png)"
figures=""
for part in node proxy failover; do
  if [ -s "$OUT/$part.json" ]; then figures="$figures $OUT/$part.json"; fi
done
if [ -z "$figures" ]; then
  plot_line="No plot: no part produced figures."
else
  # shellcheck disable=SC2086 # one path per word
  if ! plot_err=$("$PLOT" bench/results.png $figures 2>&1); then
    plot_line="No plot: ${plot_err##*$'\n'}"
  fi
fi

model=$(awk -F': *' '/^model name/ { print $2; exit }' /proc/cpuinfo 2>/dev/null)
mem=$(awk '/^MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo 2>/dev/null)
rev=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
git diff --quiet HEAD -- . ':(exclude)bench/RESULTS.md' ':(exclude)bench/results.png' 2>/dev/null || rev="$rev (with uncommitted changes)"
redis_v=$(redis-server --version 2>/dev/null || echo "redis-server not installed")
{
  echo "# slotway benchmarks"
  echo
  echo "Generated by \`bench/run.sh\` on $(date -u '+%Y-%m-%d %H:%M UTC') in $(((SECONDS - started) / 60)) min."
  echo "Machine: $(nproc) cores ($model), $mem, $(uname -sr). slotway $rev, release build."
  echo "Reference: $redis_v."
  echo
  echo "Everything below ran in this one run, side by side on loopback, each"
  echo "comparison interleaved (A/B order alternating per round). Clients and"
  echo "servers share the same cores: absolute numbers are low, ratios measured"
  echo "side by side are what count. Figures are medians with (min–max)."
  echo "Reproduce: \`bench/run.sh\` (knobs at the top of the script)."
  echo
  echo "$plot_line"
  echo
  for part in node proxy failover hostile soak; do
    cat "$OUT/$part.md"
    echo
  done
} >bench/RESULTS.md
say "wrote bench/RESULTS.md$( [ -f bench/results.png ] && echo ' and bench/results.png') in $((SECONDS - started))s"
