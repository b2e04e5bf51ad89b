#!/usr/bin/env python3
"""A stand-in coding CLI, so the example runs anywhere: it edits files as the task says.

It reads its prompt on stdin (as `claude -p` or `codex exec -` would) and runs in the task's
worktree. The task says what to write in blocks:

    @@ append FILE        the lines up to `@@ end` are appended to FILE (once)
    @@ wrong-first OLD => NEW
                          the first attempt writes the block with OLD replaced by NEW (a
                          deliberate mistake); an attempt with reviewer feedback writes it right
    @@ sleep SECONDS      hang first (to show the CLI's timeout)
    @@ fail               exit 1 without changing anything

When the prompt says that merging the target "conflicted in: a, b", it resolves the conflict
markers in those files by keeping both sides, as the conflict between two appends needs.
"""
import re
import sys
import time

prompt = sys.stdin.read()
retry = "Reviewer feedback:" in prompt

conflicts = re.search(r"conflicted in: (.*?)\. Resolve", prompt)
if conflicts:
    for name in conflicts.group(1).split(", "):
        with open(name) as f:
            lines = f.readlines()
        kept = [l for l in lines if not re.match(r"^(<<<<<<<|=======|>>>>>>>)", l)]
        with open(name, "w") as f:
            f.writelines(kept)

wrong = None
lines = prompt.splitlines()
i = 0
blocks = []
while i < len(lines):
    line = lines[i]
    if line.startswith("@@ sleep "):
        time.sleep(float(line.split()[2]))
    elif line.strip() == "@@ fail":
        print("fake-cli: told to fail", file=sys.stderr)
        sys.exit(1)
    elif line.startswith("@@ wrong-first "):
        old, new = line[len("@@ wrong-first "):].split(" => ")
        wrong = (old, new)
    elif line.startswith("@@ append "):
        name = line.split(None, 2)[2].strip()
        body = []
        i += 1
        while i < len(lines) and lines[i].strip() != "@@ end":
            body.append(lines[i])
            i += 1
        blocks.append((name, "\n\n" + "\n".join(body) + "\n"))
    i += 1

for name, right in blocks:
    bad = right.replace(*wrong) if wrong else right
    try:
        with open(name) as f:
            text = f.read()
    except FileNotFoundError:
        text = ""
    if retry and bad != right and bad in text:
        text = text.replace(bad, right)
    elif right not in text and bad not in text:
        text += bad if not retry else right
    with open(name, "w") as f:
        f.write(text)
    print(f"fake-cli: wrote {name}")
