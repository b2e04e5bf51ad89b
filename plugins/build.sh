#!/usr/bin/env bash
# Builds every guest plugin into plugins/dist/<name>.wasm.
#
# 1. The Rust plugins of this workspace (cargo, target wasm32-wasip2, release profile). The
#    target dir is $CARGO_TARGET_DIR when set, else plugins/target.
# 2. Every other plugins/<name>/build.sh (the polyglot ports), run from its own folder; each
#    writes plugins/dist/<name>.wasm itself. A failing one fails this script.
#
# Prints one line per produced component with its size. Runnable from any directory; when
# nothing changed it only pays for cargo's up-to-date check and the other scripts' own checks.
set -euo pipefail

# --rust-only: skip the polyglot ports (the demo needs only the Rust plugins).
rust_only=false
[[ "${1:-}" == "--rust-only" ]] && rust_only=true

here="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)"
dist="$here/dist"
target_triple="wasm32-wasip2"

# A relative CARGO_TARGET_DIR means relative to where we were started, not to plugins/.
target_dir="${CARGO_TARGET_DIR:-$here/target}"
case "$target_dir" in
    /*) ;;
    *) target_dir="$PWD/$target_dir" ;;
esac
export CARGO_TARGET_DIR="$target_dir"

# (guest/ is the library they share, tinytown-guest: no component of its own.)
rust_plugins=(worker reviewer reviewer-llm conductor noop relay chaos approver repo-worker repo-reviewer repo-reviewer-llm merger)

# Components produced by this run, reported together at the end.
produced=()

mkdir -p "$dist"
(cd "$here" && cargo build --release --target "$target_triple")

out="$target_dir/$target_triple/release"
for name in "${rust_plugins[@]}"; do
    src="$out/tt_${name//-/_}.wasm"  # cargo writes a crate name with `_` for `-`
    dst="$dist/$name.wasm"
    if [[ ! -f "$src" ]]; then
        echo "build.sh: cargo did not produce $src" >&2
        exit 1
    fi
    # Copy only when changed, so unchanged components keep their timestamps.
    if ! cmp -s "$src" "$dst"; then
        cp -- "$src" "$dst.tmp"
        mv -- "$dst.tmp" "$dst"
    fi
    produced+=("$dst")
done

is_rust_plugin() {
    local p
    for p in "${rust_plugins[@]}"; do
        [[ "$p" == "$1" ]] && return 0
    done
    return 1
}

stamp="$(mktemp)"
trap 'rm -f -- "$stamp"' EXIT
for script in "$here"/*/build.sh; do
    [[ -f "$script" ]] || continue
    $rust_only && continue
    dir="$(dirname -- "$script")"
    name="$(basename -- "$dir")"
    case "$name" in target | dist | node_modules) continue ;; esac
    is_rust_plugin "$name" && continue

    touch -- "$stamp"
    (cd "$dir" && bash ./build.sh)
    # What it produced: its own dist/<name>.wasm, plus anything else it wrote to dist/.
    found=0
    if [[ -f "$dist/$name.wasm" ]]; then
        produced+=("$dist/$name.wasm")
        found=1
    fi
    while IFS= read -r f; do
        [[ "$f" == "$dist/$name.wasm" ]] && continue
        produced+=("$f")
        found=1
    done < <(find "$dist" -maxdepth 1 -name '*.wasm' -newer "$stamp" | sort)
    if ((found == 0)); then
        echo "build.sh: plugins/$name/build.sh succeeded but wrote no plugins/dist/$name.wasm" >&2
    fi
done

for f in "${produced[@]}"; do
    printf '%-32s %10d bytes\n' "plugins/dist/${f##*/}" "$(wc -c <"$f")"
done
