#!/usr/bin/env bash
# The demo's check (the program reviewer `bob` runs): does greet.sh, in the current directory
# (the agent's work directory), print exactly "Hello, tinytown!"?
#
# Exit 0 when it does, 1 (with expected/got on stderr) when it prints something else, 2 when
# there is no greet.sh. The work being reviewed arrives on stdin; it is read and ignored.
set -u

expected="Hello, tinytown!"

cat >/dev/null 2>&1 || true

if [ ! -f greet.sh ]; then
    echo "greet.sh is missing" >&2
    exit 2
fi

actual="$(sh greet.sh 2>/dev/null)" || true

if [ "$actual" = "$expected" ]; then
    echo "greet.sh prints the expected greeting"
    exit 0
fi

printf 'expected "%s", got "%s"\n' "$expected" "$actual" >&2
exit 1
