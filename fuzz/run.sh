#!/usr/bin/env bash
# Runs every fuzz target: first over its committed seeds (fuzz/seeds/<target>,
# the regression inputs of past findings), then for SECS seconds of new
# inputs. Exits non-zero at the first crash; libFuzzer leaves the input in
# fuzz/artifacts/<target>/. Usage: fuzz/run.sh [SECS] [target...]
# Needs a nightly toolchain and cargo-fuzz (cargo install cargo-fuzz).
set -euo pipefail
cd "$(dirname "$0")"
secs=${1:-10}
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  mapfile -t targets < <(sed -n 's/^name = "\(.*\)"$/\1/p' Cargo.toml | grep -v '^slotway-fuzz$')
fi
cargo +nightly fuzz build -O
for t in "${targets[@]}"; do
  mkdir -p "corpus/$t" "seeds/$t"
  dict=()
  if [ "$t" = aof_replay ] || [ "$t" = proxy_fanout ]; then dict=(-dict=dict/commands.dict); fi
  printf '== %s (%ss)\n' "$t" "$secs"
  cargo +nightly fuzz run -O "$t" "corpus/$t" "seeds/$t" -- \
    "${dict[@]}" -max_total_time="$secs" -rss_limit_mb=3072 -timeout=10 -print_final_stats=1 2>&1 |
    grep -E '^(Done|stat::number_of_executed_units)|ERROR|panicked|SUMMARY' || true
  if compgen -G "artifacts/$t/crash-*" >/dev/null || compgen -G "artifacts/$t/oom-*" >/dev/null || compgen -G "artifacts/$t/timeout-*" >/dev/null; then
    echo "fuzz target $t failed: see fuzz/artifacts/$t/" >&2
    exit 1
  fi
done
