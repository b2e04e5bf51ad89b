#!/usr/bin/env bash
{{header}}
# Toolchain, installed on first use:
# - clang + lld + wasi-libc (wasm32-wasi, WASI preview 1) + libclang-rt-dev-wasm32: apt-get;
# - wit-bindgen-cli {{wit_bindgen_version}} (the C bindings of the WIT): an existing one in
#   $TOOLCHAINS/cargo/bin or on PATH, else `cargo install` into $TOOLCHAINS/cargo (minutes);
# - jco 1.35.0 (`jco new --wasi-reactor` turns the core module into a component): npm ci of
#   {{lock_doc}}/package-lock.json into $TOOLCHAINS/node;
# where TOOLCHAINS={{toolchains_doc}}, shared by every plugin.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
{{where}}
LOCK="{{lock}}"
CARGO_ROOT="$TOOLCHAINS/cargo"
NODE_DIR="$TOOLCHAINS/node"
GEN="$HERE/gen" # generated bindings and the core module
WIT_BINDGEN_VERSION={{wit_bindgen_version}}
APT_PACKAGES=(clang lld wasi-libc libclang-rt-dev-wasm32)

# 1. toolchain (one installer at a time: the folder is shared)
mkdir -p "$TOOLCHAINS"
exec 9>"$TOOLCHAINS/.install.lock" && flock 9
if command -v dpkg >/dev/null 2>&1; then
  missing=()
  for p in "${APT_PACKAGES[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  if [ ${#missing[@]} -gt 0 ]; then
    echo "installing ${missing[*]} with apt-get" >&2
    SUDO=; [ "$(id -u)" -eq 0 ] || SUDO=sudo
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
fi
WIT_BINDGEN=
for candidate in "$CARGO_ROOT/bin/wit-bindgen" "$(command -v wit-bindgen || true)"; do
  if [ -n "$candidate" ] && [ "$("$candidate" --version 2>/dev/null)" = "wit-bindgen-cli $WIT_BINDGEN_VERSION" ]; then
    WIT_BINDGEN="$candidate"
    break
  fi
done
if [ -z "$WIT_BINDGEN" ]; then
  echo "installing wit-bindgen-cli $WIT_BINDGEN_VERSION into $CARGO_ROOT (takes minutes)" >&2
  (cd / && cargo install --quiet --locked --root "$CARGO_ROOT" "wit-bindgen-cli@$WIT_BINDGEN_VERSION")
  WIT_BINDGEN="$CARGO_ROOT/bin/wit-bindgen"
fi
{{node_toolchain}}
flock -u 9

# 2. build: bindings for world {{world}}, a reactor core module from {{source}}, then the
#    component; skipped when the component is newer than everything it is made from
if [ ! -f "$OUT" ] || [ -n "$(find "$HERE/{{source}}" "$HERE/build.sh" "$LOCK" "$WIT" -newer "$OUT" -print -quit)" ]; then
  rm -rf "$GEN" && mkdir -p "$GEN" "$(dirname "$OUT")"
  log=$("$WIT_BINDGEN" c "$WIT" --world {{world}} --out-dir "$GEN" 2>&1) || { echo "$log" >&2; exit 1; }
  clang --target=wasm32-wasi --sysroot=/usr -mexec-model=reactor -Oz {{cwarnings}} -Wl,--strip-all \
    -I"$GEN" -o "$GEN/core.wasm" "$HERE/{{source}}" "$GEN/{{cworld}}.c" "$GEN/{{cworld}}_component_type.o"
  "$NODE_DIR/node_modules/.bin/jco" new "$GEN/core.wasm" --wasi-reactor -o "$OUT.tmp" >/dev/null
  mv "$OUT.tmp" "$OUT"
fi

# 3. report
echo "$OUT"
