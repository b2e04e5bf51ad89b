#!/usr/bin/env bash
# The demo town, end to end: builds tt and the Rust plugins, then runs a review loop.
#
# A backlog task goes to the conductor policy `mayor`, which assigns it to worker `alice`;
# alice runs a scripted coding agent (coder.sh) whose first attempt has a typo; reviewer `bob`
# runs check.sh, rejects with the concrete fix; alice tries again, bob approves, and mayor tells
# the humans' conductor mailbox. Every step is printed as it happens.
set -euo pipefail
demo="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$demo/../.." && pwd)"

bash "$root/tests/prereqs.sh"
echo "building tt and the plugins (the first build takes a few minutes)..."
cargo build -q --manifest-path "$root/Cargo.toml" -p tinytown
bash "$root/plugins/build.sh" --rust-only >/dev/null
tt="${CARGO_TARGET_DIR:-$root/target}/debug/tt"
export TT_TOWN="$demo"

# A fresh town every run.
"$tt" shutdown >/dev/null
rm -rf "$demo/.tt" "$demo/work"
mkdir -p "$demo/work"

"$tt" spawn alice --role worker --nickname "the coder"
"$tt" spawn bob --role reviewer --nickname "the checker"
"$tt" spawn mayor --role conductor
"$tt" backlog add "Write greet.sh so that it prints: Hello, tinytown!"

echo
echo "--- the town at work (tt events --follow) ---"
"$tt" events --follow -n 100 &
follower=$!
trap 'kill $follower 2>/dev/null || true' EXIT
"$tt" host --until-idle
sleep 0.3
kill $follower 2>/dev/null || true
wait $follower 2>/dev/null || true

echo
echo "--- afterwards ---"
"$tt" tasks
"$tt" inbox conductor
echo
echo "greet.sh now says: $(sh "$demo/work/greet.sh")"
"$tt" shutdown >/dev/null
