#!/usr/bin/env bash
# plugin_parse on contract 0.2 beside 0.1, in one run: builds the bundled
# WhatsApp plugin as it was at the last 0.1 commit (a git worktree, the same
# plugin cargo config as the embedded build), then runs the plugin_parse
# bench with it (PLUGIN_PARSE_0_1). Output: criterion's report for
# plugin_parse/*, the 0.2 plugin's and the 0.1 plugin's side by side.
#
# Usage: scripts/bench-contract-versions.sh [COMMIT]   (default: dc4a5c7)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
commit=${1:-dc4a5c7}
work=$(mktemp -d)
trap 'git -C "$root" worktree remove --force "$work/tree" >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
git -C "$root" worktree add --detach "$work/tree" "$commit" >/dev/null
target=${CARGO_TARGET_DIR:-$HOME/.cache/chatcrafter/target}
(cd "$work/tree/plugins" &&
    CARGO_TARGET_DIR="$target/plugins-0.1" cargo build --release \
        --config "$work/tree/plugins/.cargo/config.toml" -p chatcrafter-plugin-whatsapp)
old="$target/plugins-0.1/wasm32-wasip2/release/chatcrafter_plugin_whatsapp.wasm"
"$root/target/debug/gateway" plugin check "$old" 2>/dev/null | head -1 || true
cd "$root"
PLUGIN_PARSE_0_1="$old" CARGO_TARGET_DIR="$target" \
    cargo bench -p chatcrafter-gateway --bench plugin_parse -- plugin_parse
