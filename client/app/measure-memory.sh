#!/usr/bin/env bash
# What the desktop app adds to an empty Tauri 2 app, in one run: proportional set size (PSS) of
# the app's own process plus every process under it (WebKitGTK's web and network processes),
# for the empty app (client/app/baseline) and then this app, one after the other (never both at
# once: shared library pages would be split between them and both would look smaller), each
#   1. with its window open (same 1120×740 window, same Xvfb screen, same rendering settings:
#      both set WEBKIT_DISABLE_COMPOSITING_MODE=1 and GDK_GL=disable themselves), the empty app
#      showing a static page the size of the app's dashboard (baseline/page), this app signed
#      in and in a live session with the local demo mesh's game (started by `--connect demo`);
#   2. closed to the tray (the window and its WebView are destroyed, the process stays; for
#      this app the session goes on).
# Then the difference against the targets: ≤ 15 MiB added with the window open, ≤ 10 MiB
# tray-only. Exits 1 if a target is missed (after printing everything).
#   client/app/measure-memory.sh                 # release builds in $CARGO_TARGET_DIR/release
#   ROUNDS=2 DETAIL=1 client/app/measure-memory.sh
# Needs: release builds of both (`npx tauri build --no-bundle` or --bundles deb, and
# `cargo build --release -p plg-app-baseline --features tauri/custom-protocol`), the debug
# bridge (`cargo build -p plg-app-bridge`; it runs the demo mesh) and the `plg` CLI
# (`cargo build -p plg-client --bin plg`; it signs in beforehand); Debian's xvfb, xauth,
# dbus-daemon (each app gets its own session bus), python3-xlib (close-window.py) and bc.
# Env: APP, BASELINE, PLG, BRIDGE (binaries), SETTLE (s before measuring, 25), ROUNDS (1),
# DETAIL=1 (the main process's PSS by mapped file), SHOT=dir (screenshots of each state).
set -euo pipefail
cd "$(dirname "$0")"
T="${CARGO_TARGET_DIR:-$PWD/src-tauri/target}"
APP="${APP:-$T/release/plg-app}"
BASELINE="${BASELINE:-$T/release/plg-app-baseline}"
PLG="${PLG:-$T/debug/plg}"
BRIDGE="${BRIDGE:-$T/debug/plg-app-bridge}"
SETTLE="${SETTLE:-25}"
ROUNDS="${ROUNDS:-1}"
for b in "$APP" "$BASELINE" "$PLG" "$BRIDGE"; do
  [[ -x "$b" ]] || { echo "missing $b (see the build commands at the top of $0)" >&2; exit 2; }
done

work=$(mktemp -d)
"$BRIDGE" --mesh-only >"$work/mesh.log" 2>&1 &
mesh=$!
run=""
cleanup() {
  [[ -n "$run" ]] && kill -- -"$run" 2>/dev/null
  kill -INT "$mesh" 2>/dev/null; wait "$mesh" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT
url=""
for _ in $(seq 1 120); do url=$(sed -n 's/^billing \(http[^ ]*\).*/\1/p' "$work/mesh.log"); [[ -n "$url" ]] && break; sleep 0.5; done
[[ -n "$url" ]] || { echo "the demo mesh did not start:" >&2; cat "$work/mesh.log" >&2; exit 1; }

kib() { awk -v k="$2" '$1 == k":" {print $2}' "/proc/$1/smaps_rollup" 2>/dev/null || echo 0; }
uss() { awk '/^Private_(Clean|Dirty):/ {s += $2} END {print s + 0}' "/proc/$1/smaps_rollup" 2>/dev/null || echo 0; }
mib() { printf '%.1f' "$(echo "$1/1024" | bc -l)"; }
tree() { echo "$1"; local c; for c in $(pgrep -P "$1"); do tree "$c"; done; }

# measure LABEL MAINPID: prints one row per process, sets TOTAL and MAIN (KiB).
measure() {
  local pid kb
  TOTAL=0; MAIN=0
  printf '%-34s %-20s %8s %9s %8s\n' "$1" process "PSS MiB" "anon MiB" "USS MiB"
  for pid in $(tree "$2"); do
    kb=$(kib "$pid" Pss); [[ -z "$kb" ]] && continue
    TOTAL=$((TOTAL + kb)); [[ "$pid" == "$2" ]] && MAIN=$kb
    printf '%-34s %-20s %8s %9s %8s\n' "" "$(cat "/proc/$pid/comm" 2>/dev/null)" "$(mib "$kb")" \
      "$(mib "$(kib "$pid" Pss_Anon)")" "$(mib "$(uss "$pid")")"
  done
  printf '%-34s %-20s %8s   (main process %s)\n' "" "all" "$(mib "$TOTAL")" "$(mib "$MAIN")"
  if [[ -n "${DETAIL:-}" ]]; then
    awk '/^[0-9a-f]+-[0-9a-f]+ / {name = ($6 == "" ? "[anon]" : $6)} /^Pss:/ {pss[name] += $2}
         END {for (n in pss) if (pss[n] >= 512) printf "%8.1f MiB  %s\n", pss[n]/1024, n}' \
      "/proc/$2/smaps" | sort -rn | head -20 | sed 's/^/      /'
  fi
}

# one NAME BINARY TITLE DISPLAY [app args…]: starts it under Xvfb with its own session bus,
# measures window open and tray-only; sets OPEN and TRAY (KiB).
one() {
  local name=$1 bin=$2 title=$3 disp=$4; shift 4
  local cfg="$work/$name-cfg" x="$work/$name.xauth" exe main=""
  rm -rf "$cfg"; mkdir -p "$cfg"
  if [[ "$name" == app ]]; then
    PLG_CONFIG_DIR="$cfg" PLG_PASSWORD="correct horse battery staple" \
      "$PLG" login --register --billing "$url" --email "mem$RANDOM@demo.plg" >/dev/null
  fi
  PLG_CONFIG_DIR="$cfg" PLG_BILLING_URL="$url" setsid dbus-run-session -- \
    xvfb-run -n "$disp" -f "$x" -s "-screen 0 1280x800x24" "$bin" "$@" >"$work/$name.out" 2>&1 &
  run=$!
  exe=$(basename "$bin" | cut -c1-15)
  for _ in $(seq 1 60); do
    main=$(for p in $(tree "$run"); do [[ "$(cat "/proc/$p/comm" 2>/dev/null)" == "$exe" ]] && echo "$p"; done | head -1 || true)
    [[ -n "$main" ]] && break; sleep 0.5
  done
  [[ -n "$main" ]] || { echo "$name did not start:" >&2; cat "$work/$name.out" >&2; exit 1; }
  if [[ "$name" == app ]]; then
    # The live session: the app logs "connected" once the demo game's session is up.
    for _ in $(seq 1 120); do grep -q ' connected' "$cfg/logs/plg-app.log" 2>/dev/null && break; sleep 0.5; done
    grep -q ' connected' "$cfg/logs/plg-app.log" 2>/dev/null \
      || { echo "the app did not connect:" >&2; cat "$cfg/logs/plg-app.log" "$work/$name.out" >&2; exit 1; }
  fi
  sleep "$SETTLE"
  [[ -n "${SHOT:-}" ]] && DISPLAY=":$disp" XAUTHORITY="$x" import -window root "$SHOT/$name-window.png" \
    || echo "no screenshot (ImageMagick's import)" >&2
  measure "$name, window open" "$main"; OPEN=$TOTAL; OPEN_MAIN=$MAIN
  DISPLAY=":$disp" XAUTHORITY="$x" /usr/bin/python3 close-window.py "$title"
  sleep 10
  if [[ "$name" == app ]] && grep -q 'disconnected' "$cfg/logs/plg-app.log"; then
    echo "the session ended when the window closed:" >&2; cat "$cfg/logs/plg-app.log" >&2; exit 1
  fi
  measure "$name, tray-only" "$main"; TRAY=$TOTAL; TRAY_MAIN=$MAIN
  kill -- -"$run" 2>/dev/null; wait "$run" 2>/dev/null || true; run=""
}

verdict() { # LABEL BASE APP TARGET_MIB
  local d=$(( $3 - $2 )) ok="met"
  (( d > $4 * 1024 )) && ok="NOT MET"
  printf '%-16s %10s %10s %10s %10s   %s\n' "$1" "$(mib "$2")" "$(mib "$3")" "$(mib "$d")" "≤ $4" "$ok"
}
summary=""
for r in $(seq 1 "$ROUNDS"); do
  echo "== round $r"
  one baseline "$BASELINE" baseline 97
  b_open=$OPEN b_tray=$TRAY b_open_main=$OPEN_MAIN b_tray_main=$TRAY_MAIN
  one app "$APP" "PLG Booster" 98 --connect demo
  summary+=$(printf '\nround %s (MiB PSS, main process + every process under it)\n' "$r")
  summary+=$(printf '\n%-16s %10s %10s %10s %10s\n' state "empty app" "PLG app" added target)
  summary+=$'\n'$(verdict "window open" "$b_open" "$OPEN" 15)
  summary+=$'\n'$(verdict "tray-only" "$b_tray" "$TRAY" 10)
  summary+=$(printf '\n%-16s %10s %10s %10s\n' "main process:" "" "" "")
  summary+=$(printf '\n%-16s %10s %10s %10s\n' "  window open" "$(mib "$b_open_main")" "$(mib "$OPEN_MAIN")" "$(mib $((OPEN_MAIN - b_open_main)))")
  summary+=$(printf '\n%-16s %10s %10s %10s\n' "  tray-only" "$(mib "$b_tray_main")" "$(mib "$TRAY_MAIN")" "$(mib $((TRAY_MAIN - b_tray_main)))")
done
echo "$summary"
grep -q "NOT MET" <<<"$summary" && exit 1
exit 0
