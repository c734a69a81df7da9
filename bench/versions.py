"""Two versions of sockhop in one run: the same echo, web, DNS and mail figures for a base revision and the working
tree, taking turns (base, this, base, this...), so a change's cost shows beside the machine's drift.

    python bench/versions.py --base 6857a33                       # eventloop, every figure, two rounds
    python bench/versions.py --base HEAD~3 --rounds 1 --seconds 2 --only echo dns

Each version runs its own bench scripts, as ``make bench`` does, with ``--only <model>`` (a script passes the options
its sockhop knows); the base is a git worktree of ``--base``, first on PYTHONPATH while it is measured. The reports
land in bench/results/versions/<round>-<base|this>/, and the tables of each pair are printed one after the other.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
# Each script, the options that keep it to the model compared, and the report it writes.
SCRIPTS = {
    "echo": ("run.py", ["--no-callgrind", "--rounds", "0", "--idle", "2000"], "echo"),
    "web": ("web.py", ["--idle", "2000"], "web"),
    "dns": ("dns.py", [], "dns"),
    "mail": ("mail.py", ["--messages", "1000"], "mail"),
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", required=True, help="the git revision to compare with (a commit, a tag, HEAD~N)")
    parser.add_argument("--model", default="eventloop", help="the sockhop model measured (default eventloop)")
    parser.add_argument("--only", nargs="+", choices=list(SCRIPTS), default=list(SCRIPTS), help="default: all")
    parser.add_argument("--rounds", type=int, default=2, help="turns of base then this (default 2)")
    parser.add_argument("--seconds", type=float, default=3.0, help="per figure (default 3; mail counts messages)")
    args = parser.parse_args()
    out = HERE / "results" / "versions"
    with tempfile.TemporaryDirectory(prefix="sockhop-base-") as folder:
        base = Path(folder) / "base"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(base), args.base], check=True,
                       capture_output=True)  # fmt: skip
        try:
            for round_ in range(1, args.rounds + 1):
                for label, tree in (("base", base), ("this", ROOT)):
                    env = {**os.environ, "PYTHONPATH": str(tree / "src")}
                    for name in args.only:
                        script, extra, _ = SCRIPTS[name]
                        seconds = [] if name == "mail" else ["--seconds", str(args.seconds)]
                        command = [sys.executable, str(tree / "bench" / script), "--only", args.model, *seconds, *extra,
                                   "--out", str(out / f"{round_}-{label}")]  # fmt: skip
                        print(f"versions: round {round_}, {label}: {name}", file=sys.stderr, flush=True)
                        subprocess.run(command, env=env, check=True, cwd=tree)
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(base)], capture_output=True)
    for name in args.only:
        stem = SCRIPTS[name][2]
        for round_ in range(1, args.rounds + 1):
            for label in ("base", "this"):
                report = out / f"{round_}-{label}" / f"{stem}.md"
                print(f"\n## {name}, round {round_}, {label}\n")
                print(report.read_text() if report.exists() else "(no report)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
