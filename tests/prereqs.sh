#!/usr/bin/env bash
# Installs what building and running tinytown needs and a fresh machine lacks:
# redis-server (Debian package) and Rust's wasm32-wasip2 target. Idempotent and quiet when
# everything is there. Guest toolchains (Python, JavaScript, C) are installed by the plugin
# folders' own build.sh scripts, into plugins/.toolchains/.
set -euo pipefail

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

if ! command -v redis-server >/dev/null 2>&1; then
    if command -v apt-get >/dev/null 2>&1; then
        echo "prereqs: installing redis-server"
        as_root apt-get update -qq
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null
    else
        echo "prereqs: redis-server is missing; install it (e.g. brew install redis) and rerun" >&2
        exit 1
    fi
fi

if ! rustup target list --installed 2>/dev/null | grep -qx wasm32-wasip2; then
    echo "prereqs: adding the wasm32-wasip2 Rust target"
    rustup target add wasm32-wasip2 >/dev/null
fi
