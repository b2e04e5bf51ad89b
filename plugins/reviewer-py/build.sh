#!/usr/bin/env bash
# Builds the Python reviewer component -> plugins/dist/reviewer-py.wasm.
# Toolchain: componentize-py (pinned) in a venv at plugins/.toolchains/venv, installed on first use.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PLUGINS="$(dirname "$HERE")"
# Toolchains live here; TT_TOOLCHAINS moves them (CI keeps them outside the clone).
TOOLCHAINS="${TT_TOOLCHAINS:-$PLUGINS/.toolchains}"
ROOT="$(dirname "$PLUGINS")"
VENV="$TOOLCHAINS/venv"
OUT="$PLUGINS/dist/reviewer-py.wasm"
CPY_VERSION=0.25.1

mkdir -p "$TOOLCHAINS"
exec 9>"$TOOLCHAINS/.install.lock" && flock 9 # one installer at a time: shared folders
# 1. toolchain
if [ "$("$VENV/bin/componentize-py" --version 2>/dev/null)" != "componentize-py $CPY_VERSION" ]; then
  echo "installing componentize-py $CPY_VERSION into $VENV" >&2
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check "componentize-py==$CPY_VERSION"
fi

flock -u 9

# 2. build, unless the output is newer than every source
mkdir -p "$PLUGINS/dist"
if [ -f "$OUT" ] && [ -z "$(find "$HERE/app.py" "$HERE/build.sh" "$ROOT/wit" -newer "$OUT" -print -quit)" ]; then
  :
else
  (cd "$HERE" && env -u VIRTUAL_ENV "$VENV/bin/componentize-py" -d "$ROOT/wit" -w agent-exec \
    componentize app -p "$HERE" -o "$OUT.tmp" >/dev/null)
  mv "$OUT.tmp" "$OUT"
fi

# 3. report
echo "$OUT $(wc -c < "$OUT") bytes"
