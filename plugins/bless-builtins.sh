#!/usr/bin/env bash
# Rebuilds the example worker, reviewer and conductor and copies them to host/builtin/, the
# components the `tt` binary ships as its built-in roles (host/src/store/builtin.rs).
#
# Run it after changing plugins/{worker,reviewer,conductor,guest} or wit/: the test
# `builtin_components_are_the_example_plugins` (tests/anywhere.rs) fails until the checked-in
# bytes equal a fresh build of their source.
set -euo pipefail
here="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)"
bash "$here/build.sh" --rust-only >/dev/null
for name in worker reviewer conductor; do
    cp -- "$here/dist/$name.wasm" "$here/../host/builtin/$name.wasm"
    printf 'host/builtin/%-16s %s\n' "$name.wasm" "$(sha256sum "$here/dist/$name.wasm" | cut -c1-64)"
done
