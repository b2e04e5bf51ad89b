#!/usr/bin/env bash
# Builds the {{name}} plugin: bash build.sh  ->  {{name}}.wasm (next to this script).
# Toolchain: componentize-py {{cpy_version}} in a venv under ${TT_TOOLCHAINS:-~/.cache/tinytown/toolchains},
# installed on first use (needs python3 with venv) and shared by every plugin built there.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
TOOLCHAINS="${TT_TOOLCHAINS:-$HOME/.cache/tinytown/toolchains}"
VENV="$TOOLCHAINS/venv"
OUT="$HERE/{{name}}.wasm"
CPY_VERSION={{cpy_version}}

# 1. toolchain (one installer at a time: the folder is shared)
mkdir -p "$TOOLCHAINS"
exec 9>"$TOOLCHAINS/.install.lock" && flock 9
if [ "$("$VENV/bin/componentize-py" --version 2>/dev/null)" != "componentize-py $CPY_VERSION" ]; then
  echo "installing componentize-py $CPY_VERSION into $VENV" >&2
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check "componentize-py==$CPY_VERSION"
fi
flock -u 9

# 2. build: app.py against wit/agent.wit, world {{world}}
(cd "$HERE" && env -u VIRTUAL_ENV "$VENV/bin/componentize-py" -d wit -w {{world}} \
  componentize app -p . -o "$OUT.tmp" >/dev/null)
mv "$OUT.tmp" "$OUT"

# 3. report
echo "$OUT"
