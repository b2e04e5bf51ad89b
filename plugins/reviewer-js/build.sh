#!/usr/bin/env bash
# Builds the example plugin reviewer-js: bash build.sh  ->  plugins/dist/reviewer-js.wasm.
# This is what `tt plugin new --lang js` writes (host/src/scaffold/templates/js/build.sh),
# rendered for this folder; a test in host/src/scaffold/ fails when the two differ. Edit
# the template, then rewrite this: TT_SCAFFOLD_BLESS=1 cargo test -p tinytown --lib scaffold
# Toolchain: componentize-js 0.23.0 (StarlingMonkey) + jco 1.35.0, the exact versions locked in
# plugins/reviewer-js/toolchain/package-lock.json, installed with `npm ci` (needs node + npm) on first
# use into ${TT_TOOLCHAINS:-plugins/.toolchains}/node and shared by every plugin built there.
# Not jco's QuickJS backend (`jco componentize --backend qjs`, componentize-qjs 0.4.5): it panics
# with "duplicate items detected" because the world exports a function named `init`.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PLUGINS="$(dirname "$HERE")"
TOOLCHAINS="${TT_TOOLCHAINS:-$PLUGINS/.toolchains}" # CI keeps them outside the clone
WIT="$(dirname "$PLUGINS")/wit"
OUT="$PLUGINS/dist/reviewer-js.wasm"
LOCK="$PLUGINS/reviewer-js/toolchain"
NODE_DIR="$TOOLCHAINS/node"

# 1. toolchain (one installer at a time: the folder is shared)
mkdir -p "$TOOLCHAINS"
exec 9>"$TOOLCHAINS/.install.lock" && flock 9
# The exact versions locked in $LOCK/package-lock.json, with npm ci. The JavaScript builds use
# componentize-js and the C builds `jco new` from the same folder, so it always gets both.
if ! cmp -s "$LOCK/package-lock.json" "$NODE_DIR/package-lock.json" ||
   [ ! -x "$NODE_DIR/node_modules/.bin/componentize-js" ] || [ ! -x "$NODE_DIR/node_modules/.bin/jco" ]; then
  echo "installing componentize-js + jco ($LOCK/package-lock.json) into $NODE_DIR" >&2
  mkdir -p "$NODE_DIR"
  cp "$LOCK/package.json" "$LOCK/package-lock.json" "$NODE_DIR/"
  for _ in 1 2; do # npm ci has once exited 0 without linking .bin/: retry once
    (cd "$NODE_DIR" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
    [ -x "$NODE_DIR/node_modules/.bin/componentize-js" ] && [ -x "$NODE_DIR/node_modules/.bin/jco" ] && break
  done
  for b in componentize-js jco; do
    [ -x "$NODE_DIR/node_modules/.bin/$b" ] || { echo "npm ci did not install $b" >&2; exit 1; }
  done
fi
flock -u 9

# 2. build: reviewer.js against the WIT, world agent-exec; skipped when the component is newer than
#    everything it is made from.
#    -d http fetch-event: otherwise the component imports wasi:http, which tinytown does not link.
#    Run from here with a relative source path: from cwd `/` componentize-js mangles absolute ones.
if [ ! -f "$OUT" ] || [ -n "$(find "$HERE/reviewer.js" "$HERE/build.sh" "$LOCK" "$WIT" -newer "$OUT" -print -quit)" ]; then
  mkdir -p "$(dirname "$OUT")"
  (cd "$HERE" && "$NODE_DIR/node_modules/.bin/componentize-js" --wit "$WIT" --world-name agent-exec \
    -d http fetch-event -o "$OUT.tmp" reviewer.js >/dev/null)
  mv "$OUT.tmp" "$OUT"
fi

# 3. report
echo "$OUT"
