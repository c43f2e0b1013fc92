"""Shell completion offers what a command takes back, read from the node home the command
line names, and offers nothing (silently) where there is no node."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration


def _complete(words: str) -> list[str]:
    """What bash completion would offer after `words` (the last word is the one being typed)."""
    env = {**os.environ, "_TWINSYNC_COMPLETE": "complete_bash", "COMP_WORDS": words,
           "COMP_CWORD": str(len(words.split()) - (0 if words.endswith(" ") else 1))}
    done = subprocess.run([str(Path(sys.executable).with_name("twinsync"))], env=env, capture_output=True,
                          text=True, timeout=30)
    assert done.returncode == 0 and done.stderr == "", done.stderr
    return done.stdout.split()


def test_completion_offers_frames_and_peers_of_the_named_home_and_nothing_without_one(mesh, tmp_path):
    a, b = mesh(2)
    a.cli("frame", "put", "notes/today", "--body", '{"v": 1}')
    a.cli("frame", "put", "plans/week", "--body", '{"v": 1}')
    home = f"--home {a.home}"
    assert _complete(f"twinsync frame get {home} no") == ["notes/today"]
    assert sorted(_complete(f"twinsync frame log {home} ")) == ["notes/today", "plans/week"]
    assert _complete(f"twinsync pause {home} ") == [b.name]
    assert _complete(f"twinsync frame get --home {tmp_path / 'nowhere'} no") == []

