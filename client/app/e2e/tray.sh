#!/usr/bin/env bash
# Desktop behaviour of the real app under Xvfb and a private D-Bus session: closing the window
# sends the app to the tray (the window and WebKit's web process go, the app stays), and
# starting the app again (single instance) brings the window back in the first instance.
#   e2e/tray.sh path/to/plg-app
# Needs: xvfb-run, dbus-run-session, xdotool, Debian's python3-xlib.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
app="$(realpath "$1")"
if [[ -z "${INSIDE:-}" ]]; then
  set +e
  env INSIDE=1 xvfb-run -a -s "-screen 0 1280x800x24" dbus-run-session -- "$0" "$app" 2>&1 |
    grep -v -e 'LIBDBUSMENU' -e 'dbus-daemon' -e 'SpiRegistry' -e 'X connection to'
  exit "${PIPESTATUS[0]}"
fi
cfg=$(mktemp -d)
export PLG_CONFIG_DIR="$cfg"
"$app" >"$cfg/first.log" 2>&1 &
pid=$!
trap 'kill "$pid" 2>/dev/null || true; rm -rf "$cfg"' EXIT
windows() { xdotool search --name '^PLG Booster$' 2>/dev/null | wc -l; }
helpers() { pgrep -P "$pid" -c || true; }
fail() { echo "FAIL: $*"; cat "$cfg/first.log"; exit 1; }
wait_until() { # condition, what
  for _ in $(seq 1 60); do eval "$1" && return 0; sleep 0.5; done
  fail "$2"
}
wait_until '[[ $(windows) -ge 1 && $(helpers) -ge 2 ]]' "the window and WebKit's processes never appeared"
echo "ok   started: $(windows) window, $(helpers) WebKit processes"
/usr/bin/python3 "$here/close-window.py" "PLG Booster"
wait_until '[[ $(windows) -eq 0 && $(helpers) -le 1 ]]' "closing did not send the app to the tray"
kill -0 "$pid" || fail "closing the window ended the app"
echo "ok   closed to the tray: no window, $(helpers) WebKit process left, the app runs on"
"$app" >"$cfg/second.log" 2>&1 || fail "the second instance failed: $(cat "$cfg/second.log")"
wait_until '[[ $(windows) -ge 1 ]]' "starting the app again did not bring the window back"
[[ $(pgrep -x plg-app -c) -eq 1 ]] || fail "a second app process stayed"
echo "ok   started again: the first instance shows its window ($(helpers) WebKit processes)"
# SIGTERM (logout, shutdown, `systemctl stop`) quits through the same path as the tray's Quit:
# the app exits 0 after closing any session, instead of dying by the signal (143).
kill -TERM "$pid"
for _ in $(seq 1 20); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
kill -0 "$pid" 2>/dev/null && fail "SIGTERM did not end the app"
rc=0; wait "$pid" || rc=$?
[[ $rc -eq 0 ]] || fail "SIGTERM ended the app by the signal (exit $rc), not through Quit's path"
echo "ok   SIGTERM quits like Quit (exit 0; a running session is closed first)"
