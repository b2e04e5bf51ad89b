#!/usr/bin/env bash
# Fuzzes tinytown's parsers of untrusted input with cargo-fuzz (libFuzzer), each target for a
# bounded time:
#   stream_entry  Message::decode on arbitrary stream entries (never panics; round-trips)
#   config        Config::parse on arbitrary text (never panics; errors are one line)
#
#   bash tests/fuzz.sh                        # every target, 30 s each
#   FUZZ_SECONDS=300 bash tests/fuzz.sh config
#
# Installs cargo-fuzz if it is missing. Works on the stable toolchain: cargo-fuzz passes nightly
# flags (-Z...), which RUSTC_BOOTSTRAP=1 allows. Builds into host/fuzz/target (the first build
# compiles tinytown's dependencies, wasmtime included; later ones are incremental). The working
# corpus is host/fuzz/corpus/<target>, seeded from host/fuzz/seeds/<target>; crashing inputs are
# written to host/fuzz/artifacts/<target>/. Exits 1 if any target crashed, printing the input.
#
# Environment: FUZZ_SECONDS (default 30, per target), FUZZ_TIMEOUT (seconds one input may take
# before it counts as a hang, default 10). Built without AddressSanitizer (cargo-fuzz's default):
# what the targets run is safe Rust, and ASan slows every execution.
set -euo pipefail
cd "$(dirname "$0")/.."

FUZZ_SECONDS=${FUZZ_SECONDS:-30}
FUZZ_TIMEOUT=${FUZZ_TIMEOUT:-10}
CARGO_FUZZ_VERSION=0.13.2
FUZZ_DIR=host/fuzz
ALL_TARGETS=(stream_entry config)
if [[ $# -gt 0 ]]; then targets=("$@"); else targets=("${ALL_TARGETS[@]}"); fi

export RUSTC_BOOTSTRAP=1

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "== installing cargo-fuzz $CARGO_FUZZ_VERSION"
  cargo install --locked cargo-fuzz --version "$CARGO_FUZZ_VERSION"
fi

# The fuzz crate is its own workspace; it builds tinytown with the versions the tests use.
cp Cargo.lock "$FUZZ_DIR/Cargo.lock"

build_args=(--fuzz-dir "$FUZZ_DIR" --sanitizer none)

echo "== building fuzz targets"
start=$SECONDS
cargo fuzz build "${build_args[@]}"
echo "== built in $((SECONDS - start)) s"

stamp=$(mktemp)
trap 'rm -f "$stamp"' EXIT
failed=()
for t in "${targets[@]}"; do
  corpus="$FUZZ_DIR/corpus/$t"
  mkdir -p "$corpus" "$FUZZ_DIR/artifacts/$t"
  cp "$FUZZ_DIR/seeds/$t/"* "$corpus/"
  echo "== fuzzing $t for $FUZZ_SECONDS s"
  status=0
  cargo fuzz run "${build_args[@]}" "$t" "$corpus" -- \
    -max_total_time="$FUZZ_SECONDS" -timeout="$FUZZ_TIMEOUT" \
    -dict="$FUZZ_DIR/$t.dict" -print_final_stats=1 || status=$?
  crashes=$(find "$FUZZ_DIR/artifacts/$t" -type f -newer "$stamp" | sort)
  if [[ $status -ne 0 || -n $crashes ]]; then
    failed+=("$t")
    echo "!! $t failed (exit $status)" >&2
    for c in $crashes; do
      echo "!! crashing input: $c" >&2
      echo "!!   reproduce: RUSTC_BOOTSTRAP=1 cargo fuzz run ${build_args[*]} $t $c" >&2
    done
  fi
done

if [[ ${#failed[@]} -gt 0 ]]; then
  echo "fuzzing found crashes in: ${failed[*]}" >&2
  exit 1
fi
echo "fuzzing: no crashes (${targets[*]}, $FUZZ_SECONDS s each)"
