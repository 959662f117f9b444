#!/usr/bin/env bash
# Idle memory of the release app under Xvfb, signed in and showing the games screen:
# proportional set size (PSS) of the app's own process and of WebKitGTK's helper processes.
#   client/app/measure-memory.sh [path/to/plg-app] [path/to/plg]
# The baseline, an empty Tauri app with the same Tauri build (client/app/baseline), the same way:
#   client/app/measure-memory.sh path/to/plg-app-baseline [path/to/plg]
# TRAY=1 closes the window to the tray first (close-window.py; Debian's python3-xlib).
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
PLG_CONFIG_DIR="$cfg" PLG_BILLING_URL="$url" setsid xvfb-run -n "${XDISPLAY:-97}" -f "$cfg/xauth" -s "-screen 0 1280x800x24" "$app" ${APP_ARGS:-} &
xpid=$!
sleep "${SETTLE:-30}"
# TRAY=1: then close the window as a user would (to the tray) and measure 10 s later.
if [[ -n "${TRAY:-}" ]]; then
  DISPLAY=":${XDISPLAY:-97}" XAUTHORITY="$cfg/xauth" /usr/bin/python3 close-window.py "${TITLE:-PLG Booster}"
  sleep 10
fi
# SHOT=file.png: a picture of the screen, to see what the app was showing.
if [[ -n "${SHOT:-}" ]]; then
  DISPLAY=":${XDISPLAY:-97}" XAUTHORITY="$cfg/xauth" import -window root "$SHOT" || echo "no screenshot"
fi
pss() { awk '/^Pss:/ {print $2}' "/proc/$1/smaps_rollup" 2>/dev/null || echo 0; }
anon() { awk '/^Pss_Anon:/ {print $2}' "/proc/$1/smaps_rollup" 2>/dev/null || echo 0; }
# Unique set size: pages only this process maps (what desktop task managers call private memory).
uss() { awk '/^Private_(Clean|Dirty):/ {s += $2} END {print s + 0}' "/proc/$1/smaps_rollup" 2>/dev/null || echo 0; }
exe=$(basename "$app" | cut -c1-15)
main=$(pgrep -n -x -P "$xpid" "$exe" || pgrep -n -x "$exe")
total=0
printf '%-20s %8s %14s %9s\n' process "PSS MiB" "of it anon MiB" "USS MiB"
for pid in $main $(pgrep -P "$main"); do
  kb=$(pss "$pid"); total=$((total + kb))
  printf '%-20s %8.1f %14.1f %9.1f\n' "$(cat /proc/$pid/comm)" "$(echo "$kb/1024" | bc -l)" "$(echo "$(anon "$pid")/1024" | bc -l)" "$(echo "$(uss "$pid")/1024" | bc -l)"
done
printf '%-20s %8.1f\n' total "$(echo "$total/1024" | bc -l)"
# DETAIL=1: where the app process's PSS goes, by mapped file (anonymous memory as "[anon]").
if [[ -n "${DETAIL:-}" ]]; then
  awk '/^[0-9a-f]+-[0-9a-f]+ / {name = ($6 == "" ? "[anon]" : $6)} /^Pss:/ {pss[name] += $2}
       END {for (n in pss) printf "%8.1f MiB  %s\n", pss[n]/1024, n}' "/proc/$main/smaps" | sort -rn | head -25
fi
