#!/usr/bin/env bash
{{header}}
# Toolchain: componentize-js 0.23.0 (StarlingMonkey) + jco 1.35.0, the exact versions locked in
# {{lock_doc}}/package-lock.json, installed with `npm ci` (needs node + npm) on first
# use into {{toolchains_doc}}/node and shared by every plugin built there.
# Not jco's QuickJS backend (`jco componentize --backend qjs`, componentize-qjs 0.4.5): it panics
# with "duplicate items detected" because the world exports a function named `init`.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
{{where}}
LOCK="{{lock}}"
NODE_DIR="$TOOLCHAINS/node"

# 1. toolchain (one installer at a time: the folder is shared)
mkdir -p "$TOOLCHAINS"
exec 9>"$TOOLCHAINS/.install.lock" && flock 9
{{node_toolchain}}
flock -u 9

# 2. build: {{source}} against the WIT, world {{world}}; skipped when the component is newer than
#    everything it is made from.
#    -d http fetch-event: otherwise the component imports wasi:http, which tinytown does not link.
#    Run from here with a relative source path: from cwd `/` componentize-js mangles absolute ones.
if [ ! -f "$OUT" ] || [ -n "$(find "$HERE/{{source}}" "$HERE/build.sh" "$LOCK" "$WIT" -newer "$OUT" -print -quit)" ]; then
  mkdir -p "$(dirname "$OUT")"
  (cd "$HERE" && "$NODE_DIR/node_modules/.bin/componentize-js" --wit "$WIT" --world-name {{world}} \
    -d http fetch-event -o "$OUT.tmp" {{source}} >/dev/null)
  mv "$OUT.tmp" "$OUT"
fi

# 3. report
echo "$OUT"
