#!/usr/bin/env bash
# Builds the example plugin reviewer-c: bash build.sh  ->  plugins/dist/reviewer-c.wasm.
# This is what `tt plugin new --lang c` writes (host/src/scaffold/templates/c/build.sh),
# rendered for this folder; a test in host/src/scaffold/ fails when the two differ. Edit
# the template, then rewrite this: TT_SCAFFOLD_BLESS=1 cargo test -p tinytown --lib scaffold
# Toolchain, installed on first use:
# - clang + lld + wasi-libc (wasm32-wasi, WASI preview 1) + libclang-rt-dev-wasm32: apt-get;
# - wit-bindgen-cli 0.63.0 (the C bindings of the WIT): an existing one in
#   $TOOLCHAINS/cargo/bin or on PATH, else `cargo install` into $TOOLCHAINS/cargo (minutes);
# - jco 1.35.0 (`jco new --wasi-reactor` turns the core module into a component): npm ci of
#   plugins/reviewer-js/toolchain/package-lock.json into $TOOLCHAINS/node;
# where TOOLCHAINS=${TT_TOOLCHAINS:-plugins/.toolchains}, shared by every plugin.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PLUGINS="$(dirname "$HERE")"
TOOLCHAINS="${TT_TOOLCHAINS:-$PLUGINS/.toolchains}" # CI keeps them outside the clone
WIT="$(dirname "$PLUGINS")/wit"
OUT="$PLUGINS/dist/reviewer-c.wasm"
LOCK="$PLUGINS/reviewer-js/toolchain"
CARGO_ROOT="$TOOLCHAINS/cargo"
NODE_DIR="$TOOLCHAINS/node"
GEN="$HERE/gen" # generated bindings and the core module
WIT_BINDGEN_VERSION=0.63.0
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

# 2. build: bindings for world agent-exec, a reactor core module from reviewer.c, then the
#    component; skipped when the component is newer than everything it is made from
if [ ! -f "$OUT" ] || [ -n "$(find "$HERE/reviewer.c" "$HERE/build.sh" "$LOCK" "$WIT" -newer "$OUT" -print -quit)" ]; then
  rm -rf "$GEN" && mkdir -p "$GEN" "$(dirname "$OUT")"
  log=$("$WIT_BINDGEN" c "$WIT" --world agent-exec --out-dir "$GEN" 2>&1) || { echo "$log" >&2; exit 1; }
  clang --target=wasm32-wasi --sysroot=/usr -mexec-model=reactor -Oz -Wall -Werror -Wl,--strip-all \
    -I"$GEN" -o "$GEN/core.wasm" "$HERE/reviewer.c" "$GEN/agent_exec.c" "$GEN/agent_exec_component_type.o"
  "$NODE_DIR/node_modules/.bin/jco" new "$GEN/core.wasm" --wasi-reactor -o "$OUT.tmp" >/dev/null
  mv "$OUT.tmp" "$OUT"
fi

# 3. report
echo "$OUT"
