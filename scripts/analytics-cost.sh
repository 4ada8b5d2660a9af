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
# Each checkout builds in its own target directory: cargo names a
# workspace member's artifacts by its path *within* the workspace, so two
# checkouts sharing one target directory would reuse each other's builds.
# The "before" one starts from a copy of the shared one (dependencies
# already built).
before_target="$CARGO_TARGET_DIR-before"
if [ ! -d "$before_target" ]; then
  cp -a "$CARGO_TARGET_DIR" "$before_target"
fi
build() {
  (cd "$1" && CARGO_TARGET_DIR="$3" cargo build --release --example bench_server --bin gateway -q)
  mkdir -p "$2/examples"
  cp "$3/release/gateway" "$2/"
  cp "$3/release/examples/bench_server" "$2/examples/"
}
build "$work/tree" "$work/before" "$before_target"
build "$root" "$work/after" "$CARGO_TARGET_DIR"
cmp -s "$work/before/gateway" "$work/after/gateway" && { echo "the two builds are the same binary" >&2; exit 1; }
for run in before after before after; do
  echo "== $run ($( [ "$run" = before ] && echo "$before" || git -C "$root" rev-parse --short HEAD ))"
  BIN="$work/$run" "$root/scripts/load-store.sh"
done
