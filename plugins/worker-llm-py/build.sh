#!/usr/bin/env bash
# Builds the example plugin worker-llm-py: bash build.sh  ->  plugins/dist/worker-llm-py.wasm.
# This is what `tt plugin new --lang python` writes (host/src/scaffold/templates/python/build.sh),
# rendered for this folder; a test in host/src/scaffold/ fails when the two differ. Edit
# the template, then rewrite this: TT_SCAFFOLD_BLESS=1 cargo test -p tinytown --lib scaffold
# Toolchain: componentize-py 0.25.1 in a venv under ${TT_TOOLCHAINS:-plugins/.toolchains},
# installed on first use (needs python3 with venv) and shared by every plugin built there.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PLUGINS="$(dirname "$HERE")"
TOOLCHAINS="${TT_TOOLCHAINS:-$PLUGINS/.toolchains}" # CI keeps them outside the clone
WIT="$(dirname "$PLUGINS")/wit"
OUT="$PLUGINS/dist/worker-llm-py.wasm"
VENV="$TOOLCHAINS/venv"
CPY_VERSION=0.25.1

# 1. toolchain (one installer at a time: the folder is shared)
mkdir -p "$TOOLCHAINS"
exec 9>"$TOOLCHAINS/.install.lock" && flock 9
if [ "$("$VENV/bin/componentize-py" --version 2>/dev/null)" != "componentize-py $CPY_VERSION" ]; then
  echo "installing componentize-py $CPY_VERSION into $VENV" >&2
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check "componentize-py==$CPY_VERSION"
fi
flock -u 9

# 2. build: module `app` (app.py) against the WIT, world agent-llm; skipped when the
#    component is newer than everything it is made from
if [ ! -f "$OUT" ] || [ -n "$(find "$HERE"/*.py "$HERE/build.sh" "$WIT" -newer "$OUT" -print -quit)" ]; then
  mkdir -p "$(dirname "$OUT")"
  (cd "$HERE" && env -u VIRTUAL_ENV "$VENV/bin/componentize-py" -d "$WIT" -w agent-llm \
    componentize app -p "$HERE" -o "$OUT.tmp" >/dev/null)
  mv "$OUT.tmp" "$OUT"
fi

# 3. report
echo "$OUT"
