#!/usr/bin/env bash
# Idle memory of the release app under Xvfb, signed in and showing the games screen:
# proportional set size (PSS) of the app's own process and of WebKitGTK's helper processes.
#   client/app/measure-memory.sh [path/to/plg-app] [path/to/plg]
# Needs: xvfb-run, a release build (npx tauri build), the bridge (for the demo mesh) and the
# `plg` CLI (to sign in beforehand).
set -euo pipefail
cd "$(dirname "$0")"
T="${CARGO_TARGET_DIR:-$PWD/src-tauri/target}"
app="${1:-$T/release/plg-app}"
plg="${2:-$T/debug/plg}"
bridge="$T/debug/plg-app-bridge"
cfg=$(mktemp -d)
log=$(mktemp)
"$bridge" --mesh-only >"$log" 2>&1 &
mesh=$!
cleanup() {
  kill -INT "$mesh" 2>/dev/null; wait "$mesh" 2>/dev/null
  # Ending the app ends xvfb-run (in its own session), which stops its Xvfb.
  [[ -n "${main:-}" ]] && kill "$main" 2>/dev/null
  rm -rf "$cfg" "$log"
}
trap cleanup EXIT
for _ in $(seq 1 120); do url=$(sed -n 's/^billing \(http[^ ]*\).*/\1/p' "$log"); [[ -n "$url" ]] && break; sleep 0.5; done
PLG_CONFIG_DIR="$cfg" PLG_PASSWORD="correct horse battery staple" "$plg" login --register --billing "$url" --email idle@demo.plg >/dev/null
PLG_CONFIG_DIR="$cfg" PLG_BILLING_URL="$url" setsid xvfb-run -n "${XDISPLAY:-97}" -f "$cfg/xauth" -s "-screen 0 1280x800x24" "$app" &
xpid=$!
sleep "${SETTLE:-30}"
# SHOT=file.png: a picture of the screen, to see what the app was showing.
if [[ -n "${SHOT:-}" ]]; then
  DISPLAY=":${XDISPLAY:-97}" XAUTHORITY="$cfg/xauth" import -window root "$SHOT" || echo "no screenshot"
fi
pss() { awk '/^Pss:/ {print $2}' "/proc/$1/smaps_rollup" 2>/dev/null || echo 0; }
anon() { awk '/^Pss_Anon:/ {print $2}' "/proc/$1/smaps_rollup" 2>/dev/null || echo 0; }
main=$(pgrep -n -x -P "$xpid" plg-app || pgrep -n -x plg-app)
total=0
printf '%-28s %8s %14s\n' process "PSS MiB" "of it anon MiB"
for pid in $main $(pgrep -P "$main"); do
  kb=$(pss "$pid"); total=$((total + kb))
  printf '%-28s %8.1f %14.1f\n' "$(cat /proc/$pid/comm)" "$(echo "$kb/1024" | bc -l)" "$(echo "$(anon "$pid")/1024" | bc -l)"
done
printf '%-28s %8.1f\n' total "$(echo "$total/1024" | bc -l)"
