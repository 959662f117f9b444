#!/usr/bin/env bash
# CI for the desktop app (client/app): system packages, frontend unit tests and build, the
# app's Rust workspace (fmt, clippy, core tests, the Tauri binary and the test bridge), and the
# end-to-end run in headless Chromium against a local demo mesh.
#   bash client/app/ci.sh              # from the repo root, as root (installs Debian packages)
#   PLG_APP_BUNDLE=1 bash client/app/ci.sh   # also `tauri build --bundles deb` (~10 min more)
# nsis + p7zip-full build and check the Windows installer; sudo is how tauri-plugin-updater runs
# dpkg in the update step (as root it asks nothing).
set -euo pipefail
cd "$(dirname "$0")"
# The app is its own workspace: its own target dir, next to the root's when CI has one
# (persistent between runs), else inside the tree.
if [[ -n "${CARGO_TARGET_DIR_APP:-}" ]]; then export CARGO_TARGET_DIR="$CARGO_TARGET_DIR_APP"
elif [[ -n "${CARGO_TARGET_DIR:-}" ]]; then export CARGO_TARGET_DIR="$CARGO_TARGET_DIR-app"
else export CARGO_TARGET_DIR="$PWD/src-tauri/target"; fi
echo "app CARGO_TARGET_DIR=$CARGO_TARGET_DIR"

step() { printf '\n== app: %s\n' "$*"; }

step "system packages"
need=()
for p in libwebkit2gtk-4.1-dev libayatana-appindicator3-dev librsvg2-dev libxdo-dev libssl-dev \
         build-essential pkg-config file chromium fonts-dejavu-core xvfb xauth gcc-mingw-w64-x86-64 \
         dbus-bin dbus-daemon xdotool python3-xlib gamemode nsis p7zip-full sudo; do
  dpkg -s "$p" >/dev/null 2>&1 || need+=("$p")
done
if ((${#need[@]})); then
  echo "installing: ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get -o DPkg::Lock::Timeout=600 update -qq
  apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "${need[@]}" >/dev/null
else
  echo "all present"
fi

step "frontend: npm ci, unit tests, build"
npm ci --no-audit --no-fund --loglevel=error
npx vitest run
npm run build

step "rust: fmt, clippy, core tests, build (app + bridge)"
cd src-tauri
cargo fmt --all --check
cargo clippy --workspace --all-targets --locked -- -D warnings
# The handlers' Windows branch (WinDivert capture) is compiled here, never run.
rustup target add x86_64-pc-windows-gnu >/dev/null 2>&1 || true
cargo clippy -p plg-app-core --target x86_64-pc-windows-gnu --locked -- -D warnings
cargo test -p plg-app-core --locked
# The frontend's IPC types are generated from the Rust ones (core/tests/bindings.rs, run just
# above) and committed: any change, new or deleted file there means they were stale.
if [[ -n "$(git status --porcelain -- ../src/generated)" ]]; then
  echo "client/app/src/generated is stale: run 'cargo test -p plg-app-core --test bindings' in client/app/src-tauri and commit the result" >&2
  git status --short -- ../src/generated >&2
  git --no-pager diff --stat -- ../src/generated >&2
  exit 1
fi
cargo build -p plg-app -p plg-app-bridge --locked
cd ..

step "end-to-end (headless Chromium, local demo mesh)"
BRIDGE_BIN="$CARGO_TARGET_DIR/debug/plg-app-bridge" SCREENSHOTS="${SCREENSHOTS:-}" node e2e/run.mjs

step "desktop behaviour (the real app under Xvfb): close to the tray, single instance"
bash e2e/tray.sh "$CARGO_TARGET_DIR/debug/plg-app"

step "windows installer (x86_64-pc-windows-gnu + makensis): PE32/NSIS, <= 20 MB, app and WinDivert inside"
bash installer/windows.sh

step "update: 0.1.0 .deb -> signed 0.1.1 from a loopback server (tampered bundle refused first)"
# Bounded: two debug .deb builds (the second rebuilds only the app crate) and three app runs.
timeout 900 bash e2e/update.sh

if [[ "${PLG_APP_BUNDLE:-}" == 1 ]]; then
  step "bundle: tauri build --bundles deb"
  npx tauri build --bundles deb
  ls -l "$CARGO_TARGET_DIR"/release/bundle/deb/*.deb
fi
