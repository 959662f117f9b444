#!/usr/bin/env bash
# Build and start the desktop app against a local demo mesh (billing, two relay nodes and an
# echo game server on 127.0.0.1), all in one command:
#   client/app/run.sh
# Sign up in the window with any email (the trial is offered), pick "Local demo game", connect.
# Needs Node 20+, Rust, and WebKitGTK's dev packages (client/app/ci.sh installs them on Debian).
set -euo pipefail
cd "$(dirname "$0")"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/src-tauri/target}"
[[ -d node_modules ]] || npm ci --no-audit --no-fund --loglevel=error
npm run build
(cd src-tauri && cargo build -p plg-app-bridge --locked)
log=$(mktemp)
"$CARGO_TARGET_DIR/debug/plg-app-bridge" --mesh-only >"$log" 2>&1 &
mesh=$!
trap 'kill -INT $mesh 2>/dev/null; wait $mesh 2>/dev/null; rm -f "$log"' EXIT
for _ in $(seq 1 120); do
  url=$(sed -n 's/^billing \(http[^ ]*\).*/\1/p' "$log")
  [[ -n "$url" ]] && break
  kill -0 $mesh 2>/dev/null || { cat "$log"; exit 1; }
  sleep 0.5
done
[[ -n "${url:-}" ]] || { echo "the demo mesh did not start:"; cat "$log"; exit 1; }
echo "demo mesh: billing at $url"
# A private config dir so the demo login does not replace a real one.
export PLG_CONFIG_DIR="${PLG_CONFIG_DIR:-$(mktemp -d)}"
PLG_BILLING_URL="$url" npx tauri dev "$@"
