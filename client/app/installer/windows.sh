#!/usr/bin/env bash
# Builds and checks the Windows installer on Linux: the app cross-built for
# x86_64-pc-windows-gnu (mingw), packed with WebView2Loader.dll and WinDivert.dll by
# Debian's makensis (plg-booster.nsi), then checked: `file` says PE32 and NSIS, size ≤ 20 MB,
# and 7z lists the app and WinDivert inside.
#   CARGO_TARGET_DIR=... bash installer/windows.sh     (from client/app; needs dist/ built)
# Prints the installer's path and size. WinDivert64.sys (the signed kernel driver) is not in
# it: it can only come from WinDivert's signed release, not from a build here (docs/app.md).
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
: "${CARGO_TARGET_DIR:?set CARGO_TARGET_DIR}"
target=x86_64-pc-windows-gnu
limit=$((20 * 1024 * 1024))
version="$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["version"])' "$here/src-tauri/tauri.conf.json")"
fail() { echo "FAIL: $*" >&2; exit 1; }
t=$SECONDS
(cd "$here/src-tauri" && cargo build --release --target "$target" -p plg-app --locked)
rel="$CARGO_TARGET_DIR/$target/release"
stage="$(mktemp -d)"
trap 'rm -rf "$stage"' EXIT
cp "$rel/plg-app.exe" "$stage/"
cp "$here/src-tauri/icons/icon.ico" "$stage/"
# The newest build-script outputs of this profile hold the two DLLs.
newest() { ls -t $1 2>/dev/null | head -1; }
dll="$(newest "$rel/build/windivert-sys-*/out/WinDivert.dll")"
[[ -n "$dll" ]] || fail "no WinDivert.dll under $rel/build (windivert-sys vendored build)"
cp "$dll" "$stage/"
loader="$(newest "$rel/build/webview2-com-sys-*/out/x64/WebView2Loader.dll")"
[[ -n "$loader" ]] || fail "no WebView2Loader.dll under $rel/build (webview2-com-sys)"
cp "$loader" "$stage/"
out="$CARGO_TARGET_DIR/$target/release/bundle/nsis"
mkdir -p "$out"
setup="$out/PLG Booster_${version}_x64-setup.exe"
makensis -V2 -DVERSION="$version" -DSTAGE="$stage" -DOUTFILE="$setup" "$here/installer/plg-booster.nsi"

kind="$(file -b "$setup")"
[[ "$kind" == PE32* && "$kind" == *Nullsoft* ]] || fail "not an NSIS PE32 installer: $kind"
size=$(stat -c %s "$setup")
((size <= limit)) || fail "installer is $size bytes, over the 20 MB target"
list="$(7z l "$setup")"
for f in plg-app.exe WinDivert.dll WebView2Loader.dll uninstall.exe; do
  grep -q "$f" <<<"$list" || fail "$f is not in the installer: $list"
done
echo "ok   $setup"
echo "ok   $kind"
echo "ok   size $size bytes ($((size / 1024)) KiB; limit $limit), app exe $(stat -c %s "$stage/plg-app.exe") bytes"
echo "ok   contains plg-app.exe, WinDivert.dll, WebView2Loader.dll, uninstall.exe ($((SECONDS - t)) s)"
