#!/usr/bin/env bash
# A tiny scripted "coding agent" for the tinytown demo (the program worker `alice` runs).
#
# Reads the task from stdin and writes greet.sh into the current directory (the agent's work
# directory). The first attempt has a typo in the greeting; once the task comes back with
# "Reviewer feedback" appended, it writes the correct script. Says what it did on stdout.
set -eu

task="$(cat)"

case "$task" in
*"Reviewer feedback"*)
    printf '%s\n' '#!/bin/sh' 'echo "Hello, tinytown!"' >greet.sh
    chmod +x greet.sh
    echo "wrote greet.sh (second attempt)"
    echo "fixed the greeting after the reviewer's feedback"
    ;;
*)
    printf '%s\n' '#!/bin/sh' 'echo "Helo, tinytown!"' >greet.sh
    chmod +x greet.sh
    echo "wrote greet.sh (first attempt)"
    ;;
esac
