#!/usr/bin/env bash
# What keeping analytics costs the durable inbound path: scripts/load-store.sh
# (verified WhatsApp deliveries, each stored before its 200, on embedded and
# on Redis, beside a bare hyper 200) with the gateway built just before the
# analytics counters (BEFORE, default e55b9bc) and as it is now, run one
# after the other on the same machine. Output: both runs' tables.
#
# Usage: DURATION=10 scripts/analytics-cost.sh [BEFORE]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
before=${1:-e55b9bc}
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/chatcrafter/target}"
work=$(mktemp -d)
trap 'git -C "$root" worktree remove --force "$work/tree" >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
git -C "$root" worktree add --detach "$work/tree" "$before" >/dev/null
build() {
  (cd "$1" && cargo build --release --example bench_server --bin gateway -q)
  mkdir -p "$2/examples"
  cp "$CARGO_TARGET_DIR/release/gateway" "$2/"
  cp "$CARGO_TARGET_DIR/release/examples/bench_server" "$2/examples/"
}
build "$work/tree" "$work/before"
build "$root" "$work/after"
for run in before after before after; do
  echo "== $run ($( [ "$run" = before ] && echo "$before" || git -C "$root" rev-parse --short HEAD ))"
  BIN="$work/$run" "$root/scripts/load-store.sh"
done
