#!/usr/bin/env bash
{{header}}
# Toolchain: componentize-py {{cpy_version}} in a venv under {{toolchains_doc}},
# installed on first use (needs python3 with venv) and shared by every plugin built there.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
{{where}}
VENV="$TOOLCHAINS/venv"
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

# 2. build: module `app` ({{source}}) against the WIT, world {{world}}; skipped when the
#    component is newer than everything it is made from
if [ ! -f "$OUT" ] || [ -n "$(find "$HERE"/*.py "$HERE/build.sh" "$WIT" -newer "$OUT" -print -quit)" ]; then
  mkdir -p "$(dirname "$OUT")"
  (cd "$HERE" && env -u VIRTUAL_ENV "$VENV/bin/componentize-py" -d "$WIT" -w {{world}} \
    componentize app -p "$HERE" -o "$OUT.tmp" >/dev/null)
  mv "$OUT.tmp" "$OUT"
fi

# 3. report
echo "$OUT"
