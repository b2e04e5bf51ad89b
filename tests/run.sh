#!/usr/bin/env bash
# Every test of tinytown: installs what is missing, builds the guest plugins (Rust, Python,
# JavaScript, C), then runs the workspace's unit and end-to-end tests against real
# redis-server processes and the real compiled plugins.
set -euo pipefail
cd "$(dirname "$0")/.."

bash tests/prereqs.sh
bash plugins/build.sh
cargo test --workspace --all-targets
