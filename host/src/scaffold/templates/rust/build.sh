#!/usr/bin/env bash
# Builds the {{name}} plugin: bash build.sh  ->  {{name}}.wasm (next to this script).
# Needs cargo and the wasm32-wasip2 target (added with rustup when missing).
# The cargo target dir is $CARGO_TARGET_DIR when set, else target/ here.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
OUT="$HERE/{{name}}.wasm"
TARGET_DIR="${CARGO_TARGET_DIR:-$HERE/target}"
case "$TARGET_DIR" in /*) ;; *) TARGET_DIR="$PWD/$TARGET_DIR" ;; esac

# 1. toolchain: the wasm32-wasip2 target
if command -v rustup >/dev/null 2>&1 && ! rustup target list --installed | grep -qx wasm32-wasip2; then
  echo "adding the wasm32-wasip2 target with rustup" >&2
  rustup target add wasm32-wasip2 >&2
fi

# 2. build
(cd "$HERE" && cargo build --quiet --release --target wasm32-wasip2 --target-dir "$TARGET_DIR")
cp "$TARGET_DIR/wasm32-wasip2/release/{{crate}}.wasm" "$OUT.tmp"
mv "$OUT.tmp" "$OUT"

# 3. report
echo "$OUT"
