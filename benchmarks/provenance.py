"""Which code a benchmark measured: the commit of this checkout, marked when the tree had changes."""

from __future__ import annotations

import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def git_commit(short: bool = True) -> str:
    """`abc1234`, `abc1234+uncommitted`, or `unknown` outside a git checkout."""
    def git(*args: str) -> str:
        return subprocess.run(["git", "--no-optional-locks", "-C", str(REPO), *args], capture_output=True, text=True,
                              check=True).stdout.strip()

    try:
        return git("rev-parse", *(["--short"] if short else []), "HEAD") + ("+uncommitted" if git("status", "--porcelain") else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
