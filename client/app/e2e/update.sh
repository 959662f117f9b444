#!/usr/bin/env bash
# The whole update, as a user gets it: the 0.1.0 .deb is installed, a loopback HTTP server
# serves a signed 0.1.1 manifest and .deb, and the installed app (`plg-app --update`, under
# Xvfb) checks, downloads, verifies and installs it through tauri-plugin-updater (dpkg -i via
# sudo). Before that, the same server offers a tampered .deb, which must be refused with
# 0.1.0 left installed. Run as root (dpkg); removes the package at the end.
#   bash e2e/update.sh
# Both packages are debug builds (`tauri build --debug`): a release build takes ~10 min per
# version on 2 cores, and optimisation changes nothing the updater does. They trust the test
# key (core/tests/fixtures/update) instead of the release key, for this run only.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
cd "$here"
: "${CARGO_TARGET_DIR:?set CARGO_TARGET_DIR}"
fixtures="$here/src-tauri/core/tests/fixtures/update"
pubkey="$(cat "$fixtures/test-key.TEST-ONLY.pub")"
work="$(mktemp -d)"
server=""
pkg=""
cleanup() {
  [[ -n "$server" ]] && kill "$server" 2>/dev/null || true
  [[ -n "$pkg" ]] && dpkg -r "$pkg" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
t0=$SECONDS

# 1. Two packages, 0.1.0 and 0.1.1 (the second rebuilds only the app crate).
build() { # version
  local v="$1" t=$SECONDS
  npx tauri build --debug --bundles deb --ci \
    --config "{\"version\":\"$v\",\"plugins\":{\"updater\":{\"pubkey\":\"$pubkey\"}}}" \
    >"$work/build-$v.log" 2>&1 || { tail -40 "$work/build-$v.log"; fail "tauri build $v"; }
  local deb
  deb="$(ls "$CARGO_TARGET_DIR"/debug/bundle/deb/*_"${v}"_amd64.deb)"
  cp "$deb" "$work/plg-$v.deb"
  echo "ok   built $v: $(basename "$deb"), $(du -m "$work/plg-$v.deb" | cut -f1) MB, $((SECONDS - t)) s"
}
build 0.1.0
build 0.1.1
pkg="$(dpkg-deb -f "$work/plg-0.1.0.deb" Package)"

# 2. Sign 0.1.1 with the test key (as a release is signed with the release key), make a
#    tampered copy, and serve both on 127.0.0.1 (a port the kernel picks).
npx tauri signer sign -f "$fixtures/test-key.TEST-ONLY" -p "" --app-version 0.1.1 \
  "$work/plg-0.1.1.deb" >/dev/null
mkdir "$work/www"
cp "$work/plg-0.1.1.deb" "$work/www/plg-0.1.1.deb"
python3 - "$work/www/plg-0.1.1.deb" "$work/www/tampered.deb" <<'EOF'
import sys
d = bytearray(open(sys.argv[1], "rb").read())
d[len(d) // 2] ^= 1
open(sys.argv[2], "wb").write(d)
EOF
python3 -u -m http.server --bind 127.0.0.1 --directory "$work/www" 0 >"$work/http.log" 2>&1 &
server=$!
for _ in $(seq 1 50); do
  port="$(sed -n 's/.* port \([0-9]*\).*/\1/p' "$work/http.log" | head -1)"
  [[ -n "$port" ]] && break
  sleep 0.1
done
[[ -n "${port:-}" ]] || fail "the HTTP server did not start: $(cat "$work/http.log")"
manifest() { # file, bundle file
  cat >"$work/www/$1" <<EOF
{
  "version": "0.1.1",
  "notes": "The update test's release.",
  "pub_date": "2025-01-01T00:00:00Z",
  "platforms": {
    "linux-x86_64-deb": {
      "url": "http://127.0.0.1:$port/$2",
      "signature": "$(cat "$work/plg-0.1.1.deb.sig")"
    }
  }
}
EOF
}
manifest latest.json plg-0.1.1.deb
manifest tampered.json tampered.deb

# 3. Install 0.1.0 as a user would.
dpkg -i "$work/plg-0.1.0.deb" >/dev/null
version() { dpkg-query -W -f='${Version}' "$pkg"; }
[[ "$(version)" == 0.1.0 ]] || fail "0.1.0 did not install: $(version)"
echo "ok   installed $pkg $(version)"

# 4. The installed app against the tampered bundle, then the real one.
update() { # manifest → the app's exit code; output in $work/update.log
  local rc=0
  PLG_CONFIG_DIR="$work/cfg" PLG_UPDATE_URL="http://127.0.0.1:$port/$1" \
    timeout 300 xvfb-run -a -s "-screen 0 1024x768x24" dbus-run-session -- \
    /usr/bin/plg-app --update >"$work/update.log" 2>&1 || rc=$?
  return $rc
}
if update tampered.json; then fail "a tampered bundle was installed: $(cat "$work/update.log")"; fi
grep -q "does not match its signature" "$work/update.log" ||
  fail "the tampered bundle was not refused for its signature: $(cat "$work/update.log")"
[[ "$(version)" == 0.1.0 ]] || fail "after the tampered bundle: $(version)"
echo "ok   tampered bundle refused: $(grep -o 'the update was refused.*' "$work/update.log" | head -1)"

t=$SECONDS
update latest.json || fail "the update failed: $(cat "$work/update.log")"
grep -q "installed 0.1.1" "$work/update.log" || fail "no install reported: $(cat "$work/update.log")"
[[ "$(version)" == 0.1.1 ]] || fail "dpkg shows $(version) after the update"
echo "ok   updated 0.1.0 → $(version) in $((SECONDS - t)) s (dpkg -s $pkg)"

# 5. The installed binary is the new one: it now finds itself up to date.
update latest.json || fail "0.1.1 checking again: $(cat "$work/update.log")"
grep -q "0.1.1 is the newest version" "$work/update.log" ||
  fail "the installed app is not 0.1.1: $(cat "$work/update.log")"
echo "ok   the installed app is 0.1.1 and finds nothing newer"
echo "update step: $((SECONDS - t0)) s"
