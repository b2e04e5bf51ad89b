#!/usr/bin/env bash
# Builds the JavaScript reviewer component -> plugins/dist/reviewer-js.wasm.
# Toolchain: componentize-js 0.23.0 (StarlingMonkey) + jco 1.35.0, locked in toolchain/, installed
# into plugins/.toolchains/node.
# Not the QuickJS backend (`jco componentize --backend qjs`, componentize-qjs 0.4.5): it panics
# with "duplicate items detected" because the world exports a function named `init`.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PLUGINS="$(dirname "$HERE")"
# Toolchains live here; TT_TOOLCHAINS moves them (CI keeps them outside the clone).
TOOLCHAINS="${TT_TOOLCHAINS:-$PLUGINS/.toolchains}"
ROOT="$(dirname "$PLUGINS")"
NODE_DIR="$TOOLCHAINS/node"
OUT="$PLUGINS/dist/reviewer-js.wasm"

mkdir -p "$TOOLCHAINS"
exec 9>"$TOOLCHAINS/.install.lock" && flock 9 # one installer at a time: shared folders
# 1. toolchain: the exact versions locked in toolchain/package-lock.json, via npm ci.
#    (plugins/.toolchains/node is shared with reviewer-c, which uses its `jco new`.)
if ! cmp -s "$HERE/toolchain/package-lock.json" "$NODE_DIR/package-lock.json" ||
   [ ! -x "$NODE_DIR/node_modules/.bin/componentize-js" ] || [ ! -x "$NODE_DIR/node_modules/.bin/jco" ]; then
  echo "installing jco + componentize-js (toolchain/package-lock.json) into $NODE_DIR" >&2
  mkdir -p "$NODE_DIR"
  cp "$HERE/toolchain/package.json" "$HERE/toolchain/package-lock.json" "$NODE_DIR/"
  for attempt in 1 2; do # once, a first npm ci here exited 0 without linking .bin/: retry once
    (cd "$NODE_DIR" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
    for b in componentize-js jco; do [ -x "$NODE_DIR/node_modules/.bin/$b" ] || continue 2; done
    break
  done
  for b in componentize-js jco; do
    [ -x "$NODE_DIR/node_modules/.bin/$b" ] || { echo "npm ci did not install $b" >&2; exit 1; }
  done
fi

flock -u 9

# 2. build, unless the output is newer than every source
mkdir -p "$PLUGINS/dist"
if [ -f "$OUT" ] && [ -z "$(find "$HERE/reviewer.js" "$HERE/build.sh" "$HERE/toolchain" "$ROOT/wit" -newer "$OUT" -print -quit)" ]; then
  :
else
  # -d http fetch-event: otherwise the component imports wasi:http, which hosts do not link.
  # Run from here with a relative source path: from cwd `/` componentize-js mangles absolute ones.
  (cd "$HERE" && "$NODE_DIR/node_modules/.bin/componentize-js" --wit "$ROOT/wit" --world-name agent-exec \
    -d http fetch-event -o "$OUT.tmp" reviewer.js >/dev/null)
  mv "$OUT.tmp" "$OUT"
fi

# 3. report
echo "$OUT $(wc -c < "$OUT") bytes"
