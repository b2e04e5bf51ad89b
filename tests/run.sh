#!/usr/bin/env bash
# Every test of tinytown: installs what is missing, builds the guest plugins (Rust, Python,
# JavaScript, C), runs the workspace's unit and end-to-end tests against real redis-server
# processes and the real compiled plugins, then fuzzes the parsers of untrusted input for a
# bounded time (FUZZ_SECONDS per target; tests/fuzz.sh runs longer on request).
#
# On x86_64 Linux the tests build `tt` as it ships there: static, for musl (.cargo/config.toml).
set -euo pipefail
cd "$(dirname "$0")/.."

bash tests/prereqs.sh
bash plugins/build.sh
target=()
if [ "$(uname -s -m)" = "Linux x86_64" ]; then target=(--target x86_64-unknown-linux-musl); fi
cargo test --workspace --all-targets "${target[@]}"
FUZZ_SECONDS="${FUZZ_SECONDS:-20}" bash tests/fuzz.sh
