#!/usr/bin/env bash
# Installs what building and running tinytown needs and a fresh machine lacks:
# redis-server, python3, git, chromium and chromedriver (Debian packages) and Rust's
# wasm32-wasip2 target; on x86_64 Linux also musl-gcc and the x86_64-unknown-linux-musl target
# (`tt` ships there as a static musl build: .cargo/config.toml says why). Idempotent and quiet when
# everything is there. Guest toolchains (Python, JavaScript, C) are installed by the plugin
# folders' own build.sh scripts, into plugins/.toolchains/.
set -euo pipefail

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

# command -> the Debian package that provides it. python3 is a program the confinement tests run
# (and componentize-py's toolchain needs); git is for the repository tests; chromium and
# chromedriver (package chromium-driver) drive the dashboard's browser test (tests/browser.rs);
# musl-gcc (package musl-tools) compiles the C inside tt's dependencies for musl.
musl=false
if [ "$(uname -s -m)" = "Linux x86_64" ]; then musl=true; fi
needs=(redis-server:redis-server python3:python3 git:git chromium:chromium chromedriver:chromium-driver)
if $musl; then needs+=(musl-gcc:musl-tools); fi
missing=()
for pair in "${needs[@]}"; do
    command -v "${pair%%:*}" >/dev/null 2>&1 || missing+=("${pair#*:}")
done
if [ ${#missing[@]} -gt 0 ]; then
    if command -v apt-get >/dev/null 2>&1; then
        echo "prereqs: installing ${missing[*]}"
        as_root apt-get update -qq
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    else
        echo "prereqs: missing ${missing[*]}; install them (e.g. brew install ${missing[*]}) and rerun" >&2
        exit 1
    fi
fi

if ! rustup target list --installed 2>/dev/null | grep -qx wasm32-wasip2; then
    echo "prereqs: adding the wasm32-wasip2 Rust target"
    rustup target add wasm32-wasip2 >/dev/null
fi

if $musl && ! rustup target list --installed 2>/dev/null | grep -qx x86_64-unknown-linux-musl; then
    echo "prereqs: adding the x86_64-unknown-linux-musl Rust target"
    rustup target add x86_64-unknown-linux-musl >/dev/null
fi
