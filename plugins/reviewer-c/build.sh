#!/usr/bin/env bash
# Builds the C reviewer component -> plugins/dist/reviewer-c.wasm.
# Toolchain: Debian clang 14 + lld + wasi-libc (wasm32-wasi = preview 1, apt), wit-bindgen-cli
# 0.63.0 (cargo install into plugins/.toolchains/cargo) for the C bindings, and `jco new
# --wasi-reactor` (jco 1.35.0 from the shared plugins/.toolchains/node, locked in
# ../reviewer-js/toolchain) to turn the reactor core module into a component.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PLUGINS="$(dirname "$HERE")"
# Toolchains live here; TT_TOOLCHAINS moves them (CI keeps them outside the clone).
TOOLCHAINS="${TT_TOOLCHAINS:-$PLUGINS/.toolchains}"
ROOT="$(dirname "$PLUGINS")"
CARGO_ROOT="$TOOLCHAINS/cargo"
NODE_DIR="$TOOLCHAINS/node"
LOCK_DIR="$PLUGINS/reviewer-js/toolchain"
OUT="$PLUGINS/dist/reviewer-c.wasm"
GEN="$HERE/gen" # generated bindings and the core module (gitignored)
WIT_BINDGEN_VERSION=0.63.0
APT_PACKAGES=(clang lld wasi-libc libclang-rt-dev-wasm32)

mkdir -p "$TOOLCHAINS"
exec 9>"$TOOLCHAINS/.install.lock" && flock 9 # one installer at a time: shared folders
# 1. toolchain
missing=()
for p in "${APT_PACKAGES[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing ${missing[*]} with apt-get" >&2
  SUDO=; [ "$(id -u)" -eq 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi
WIT_BINDGEN="$CARGO_ROOT/bin/wit-bindgen"
if [ "$("$WIT_BINDGEN" --version 2>/dev/null)" != "wit-bindgen-cli $WIT_BINDGEN_VERSION" ]; then
  echo "installing wit-bindgen-cli $WIT_BINDGEN_VERSION into $CARGO_ROOT (takes minutes)" >&2
  (cd / && cargo install --quiet --locked --root "$CARGO_ROOT" "wit-bindgen-cli@$WIT_BINDGEN_VERSION")
fi
if ! cmp -s "$LOCK_DIR/package-lock.json" "$NODE_DIR/package-lock.json" ||
   [ ! -x "$NODE_DIR/node_modules/.bin/jco" ]; then
  echo "installing jco ($LOCK_DIR/package-lock.json) into $NODE_DIR" >&2
  mkdir -p "$NODE_DIR"
  cp "$LOCK_DIR/package.json" "$LOCK_DIR/package-lock.json" "$NODE_DIR/"
  for attempt in 1 2; do # once, a first npm ci here exited 0 without linking .bin/: retry once
    (cd "$NODE_DIR" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
    for b in jco; do [ -x "$NODE_DIR/node_modules/.bin/$b" ] || continue 2; done
    break
  done
  for b in jco; do
    [ -x "$NODE_DIR/node_modules/.bin/$b" ] || { echo "npm ci did not install $b" >&2; exit 1; }
  done
fi

flock -u 9

# 2. build, unless the output is newer than every source
mkdir -p "$PLUGINS/dist"
if [ -f "$OUT" ] && [ -z "$(find "$HERE/reviewer.c" "$HERE/build.sh" "$ROOT/wit" -newer "$OUT" -print -quit)" ]; then
  :
else
  rm -rf "$GEN" && mkdir -p "$GEN"
  log=$("$WIT_BINDGEN" c "$ROOT/wit" --world agent-exec --out-dir "$GEN" 2>&1) || { echo "$log" >&2; exit 1; }
  clang --target=wasm32-wasi --sysroot=/usr -mexec-model=reactor -Oz -Wall -Werror -Wl,--strip-all \
    -I"$GEN" -o "$GEN/reviewer-core.wasm" \
    "$HERE/reviewer.c" "$GEN/agent_exec.c" "$GEN/agent_exec_component_type.o"
  "$NODE_DIR/node_modules/.bin/jco" new "$GEN/reviewer-core.wasm" --wasi-reactor -o "$OUT.tmp" >/dev/null
  mv "$OUT.tmp" "$OUT"
fi

# 3. report
echo "$OUT $(wc -c < "$OUT") bytes"
