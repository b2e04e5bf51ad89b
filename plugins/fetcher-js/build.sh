#!/usr/bin/env bash
# Builds the example plugin fetcher-js: bash build.sh  ->  plugins/dist/fetcher-js.wasm.
# A role that calls an HTTP API with `fetch`: built WITHOUT `-d http`, so the component imports
# the standard wasi:http interfaces, which the host links for agents granted `http`.
# Toolchain: the same componentize-js as plugins/reviewer-js (installed by its build.sh into
# ${TT_TOOLCHAINS:-plugins/.toolchains}/node; plugins/build.sh runs reviewer-js first).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PLUGINS="$(dirname "$HERE")"
TOOLCHAINS="${TT_TOOLCHAINS:-$PLUGINS/.toolchains}"
WIT="$(dirname "$PLUGINS")/wit"
OUT="$PLUGINS/dist/fetcher-js.wasm"
CJS="$TOOLCHAINS/node/node_modules/.bin/componentize-js"

[ -x "$CJS" ] || bash "$PLUGINS/reviewer-js/build.sh" >/dev/null
if [ ! -f "$OUT" ] || [ -n "$(find "$HERE/fetcher.js" "$HERE/build.sh" "$WIT" -newer "$OUT" -print -quit)" ]; then
  mkdir -p "$(dirname "$OUT")"
  (cd "$HERE" && "$CJS" --wit "$WIT" --world-name agent -o "$OUT.tmp" fetcher.js >/dev/null)
  mv "$OUT.tmp" "$OUT"
fi
echo "$OUT"
