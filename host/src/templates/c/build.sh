#!/usr/bin/env bash
# Builds the {{name}} plugin: bash build.sh  ->  {{name}}.wasm (next to this script).
# Toolchain, installed on first use:
# - clang + lld + wasi-libc (wasm32-wasi, WASI preview 1) + libclang-rt-dev-wasm32: apt-get;
# - wit-bindgen-cli {{wit_bindgen_version}} (C bindings of wit/agent.wit): an existing one in
#   $TOOLCHAINS/cargo/bin or on PATH, else `cargo install` into $TOOLCHAINS/cargo (minutes);
# - jco 1.35.0 (`jco new --wasi-reactor` turns the core module into a component): npm ci of
#   toolchain/package-lock.json into $TOOLCHAINS/node;
# where TOOLCHAINS=${TT_TOOLCHAINS:-~/.cache/tinytown/toolchains}, shared by every plugin.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
TOOLCHAINS="${TT_TOOLCHAINS:-$HOME/.cache/tinytown/toolchains}"
CARGO_ROOT="$TOOLCHAINS/cargo"
NODE_DIR="$TOOLCHAINS/node"
OUT="$HERE/{{name}}.wasm"
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
if ! cmp -s "$HERE/toolchain/package-lock.json" "$NODE_DIR/package-lock.json" ||
   [ ! -x "$NODE_DIR/node_modules/.bin/jco" ]; then
  echo "installing jco (toolchain/package-lock.json) into $NODE_DIR" >&2
  mkdir -p "$NODE_DIR"
  cp "$HERE/toolchain/package.json" "$HERE/toolchain/package-lock.json" "$NODE_DIR/"
  for attempt in 1 2; do # npm ci has once exited 0 without linking .bin/: retry once
    (cd "$NODE_DIR" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
    [ -x "$NODE_DIR/node_modules/.bin/jco" ] && break
  done
  [ -x "$NODE_DIR/node_modules/.bin/jco" ] || { echo "npm ci did not install jco" >&2; exit 1; }
fi
flock -u 9

# 2. build: bindings for world {{world}}, a reactor core module, then the component
rm -rf "$GEN" && mkdir -p "$GEN"
log=$("$WIT_BINDGEN" c "$HERE/wit" --world {{world}} --out-dir "$GEN" 2>&1) || { echo "$log" >&2; exit 1; }
clang --target=wasm32-wasi --sysroot=/usr -mexec-model=reactor -Oz -Wall -Wl,--strip-all \
  -I"$GEN" -o "$GEN/core.wasm" "$HERE/app.c" "$GEN/{{cworld}}.c" "$GEN/{{cworld}}_component_type.o"
"$NODE_DIR/node_modules/.bin/jco" new "$GEN/core.wasm" --wasi-reactor -o "$OUT.tmp" >/dev/null
mv "$OUT.tmp" "$OUT"

# 3. report
echo "$OUT"
