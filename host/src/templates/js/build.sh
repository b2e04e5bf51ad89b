#!/usr/bin/env bash
# Builds the {{name}} plugin: bash build.sh  ->  {{name}}.wasm (next to this script).
# Toolchain: componentize-js 0.23.0 (StarlingMonkey) + jco 1.35.0, the exact versions locked in
# toolchain/package-lock.json, installed with `npm ci` (needs node + npm) on first use into
# ${TT_TOOLCHAINS:-~/.cache/tinytown/toolchains}/node and shared by every plugin built there.
# (Not `jco componentize`: its QuickJS backend fails on an export named `init`.)
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
TOOLCHAINS="${TT_TOOLCHAINS:-$HOME/.cache/tinytown/toolchains}"
NODE_DIR="$TOOLCHAINS/node"
OUT="$HERE/{{name}}.wasm"

# 1. toolchain (one installer at a time: the folder is shared)
mkdir -p "$TOOLCHAINS"
exec 9>"$TOOLCHAINS/.install.lock" && flock 9
if ! cmp -s "$HERE/toolchain/package-lock.json" "$NODE_DIR/package-lock.json" ||
   [ ! -x "$NODE_DIR/node_modules/.bin/componentize-js" ]; then
  echo "installing componentize-js + jco (toolchain/package-lock.json) into $NODE_DIR" >&2
  mkdir -p "$NODE_DIR"
  cp "$HERE/toolchain/package.json" "$HERE/toolchain/package-lock.json" "$NODE_DIR/"
  for attempt in 1 2; do # npm ci has once exited 0 without linking .bin/: retry once
    (cd "$NODE_DIR" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
    [ -x "$NODE_DIR/node_modules/.bin/componentize-js" ] && break
  done
  [ -x "$NODE_DIR/node_modules/.bin/componentize-js" ] || { echo "npm ci did not install componentize-js" >&2; exit 1; }
fi
flock -u 9

# 2. build: app.js against wit/agent.wit, world {{world}}.
#    -d http fetch-event: otherwise the component imports wasi:http, which tinytown does not link.
(cd "$HERE" && "$NODE_DIR/node_modules/.bin/componentize-js" --wit wit --world-name {{world}} \
  -d http fetch-event -o "$OUT.tmp" app.js >/dev/null)
mv "$OUT.tmp" "$OUT"

# 3. report
echo "$OUT"
