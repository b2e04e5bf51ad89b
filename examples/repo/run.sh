#!/usr/bin/env bash
# A repository town, end to end: two coding agents, a reviewer and a merge queue on a real git
# repository (a copy of project/ made fresh in a temp dir, so this folder stays untouched).
#
# Three tasks for two workers: alice adds mul to calc.py, carol adds sub to calc.py (both from
# the same main, so whichever is merged second conflicts and goes back to its owner, who merges
# main in and resolves it), and alice adds shout to text.py, wrong on the first attempt (the
# reviewer's check rejects it with the failing test). The stand-in coding CLI fake-cli.py does
# the edits, so this runs without a real one. Prints the town at work and main's history.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"

bash "$root/tests/prereqs.sh"
command -v git >/dev/null || { echo "run.sh: git is not installed" >&2; exit 1; }
echo "building tt and the plugins (the first build takes a few minutes)..."
cargo build -q --manifest-path "$root/Cargo.toml" -p tinytown
bash "$root/plugins/build.sh" --rust-only >/dev/null
tt="${CARGO_TARGET_DIR:-$root/target}/debug/tt"
dist="$root/plugins/dist"

repo="$(mktemp -d /tmp/tt-repo.XXXXXX)"
export TT_TOWN="$repo"
trap '"$tt" shutdown >/dev/null 2>&1 || true' EXIT
cp -r "$here/project/." "$repo/"
git -C "$repo" init -q -b main
git -C "$repo" add -A
git -C "$repo" -c user.name=example -c user.email=example@localhost commit -q -m "The example project"
# The merger moves main without touching the main worktree: keep that off the branch.
git -C "$repo" checkout -q --detach
"$tt" init --name repo >/dev/null

# The system's python3 (a version manager's shim on PATH would reach outside the sandbox).
py=/usr/bin/python3
[[ -x "$py" ]] || py="$(python3 -c 'import sys; print(sys.executable)')"
py_prefix="$("$py" -c 'import sys; print(sys.base_prefix)')"
exec_grant="{ allow = [\"git\", \"$py\"], env = [\"PATH\"], workdir = \".tt/worktrees\", write = [\".git\"], read = [\"$here\", \"$py_prefix\"] }"
cat > "$repo/tinytown.toml" <<TOML
[town]
name = "repo"

[repo]
target = "main"
check = "$py -B -m unittest -q"

[agents.alice]
role = "worker"
plugin = "$dist/repo-worker.wasm"
config = { cli = "$py $here/fake-cli.py", reviewer = "rita", timeout-ms = "120000" }
exec = $exec_grant

[agents.carol]
role = "worker"
plugin = "$dist/repo-worker.wasm"
config = { cli = "$py $here/fake-cli.py", reviewer = "rita" }
exec = $exec_grant

[agents.rita]
role = "reviewer"
plugin = "$dist/repo-reviewer.wasm"
exec = $exec_grant

[agents.merger]
role = "merger"
plugin = "$dist/merger.wasm"
exec = $exec_grant
TOML
for a in alice:worker carol:worker rita:reviewer merger:merger; do
    "$tt" spawn "${a%%:*}" --role "${a##*:}" >/dev/null
done

"$tt" assign alice "Add mul to calc
@@ append calc.py
def mul(a, b):
    return a * b
@@ end
@@ append test_calc.py
class TestMul(unittest.TestCase):
    def test_mul(self):
        self.assertEqual(calc.mul(2, 3), 6)
@@ end"
"$tt" assign carol "Add sub to calc
@@ append calc.py
def sub(a, b):
    return a - b
@@ end
@@ append test_calc.py
class TestSub(unittest.TestCase):
    def test_sub(self):
        self.assertEqual(calc.sub(5, 3), 2)
@@ end"
"$tt" assign alice "Add shout to text
@@ wrong-first .upper() => .lower()
@@ append text.py
def shout(s):
    return s.upper() + \"!\"
@@ end
@@ append test_text.py
class TestShout(unittest.TestCase):
    def test_shout(self):
        self.assertEqual(text.shout(\"hi\"), \"HI!\")
@@ end"

echo
echo "--- the town at work (tt events --follow) ---"
"$tt" events --follow -n 100 &
follower=$!
trap 'kill $follower 2>/dev/null || true; "$tt" shutdown >/dev/null 2>&1 || true' EXIT
"$tt" host --until-idle
sleep 0.3
kill $follower 2>/dev/null || true
wait $follower 2>/dev/null || true

echo
echo "--- afterwards ---"
"$tt" tasks
echo
echo "--- git log --graph main ---"
git -C "$repo" log --graph --format='%h %s' main
echo
echo "worktrees: $(git -C "$repo" worktree list | wc -l) (the main one; a failed task's is kept); the repository is in $repo"
