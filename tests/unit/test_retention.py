"""Retention of a node's own folder: a publish killed at any point leaves nothing a peer
would take for a piece, and the next publish removes what it left; pruning tolerates a
file another publish removed first. Real files, real SQLite, a real SIGKILL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from fnmatch import fnmatch
from pathlib import Path

import pytest

from folders.files import TEMP_PREFIX
from folders.retention import _delete_pair, remove_leftovers
from folders.segments import SEGMENTS_DIR, publish
from folders.snapshots import SNAPSHOTS_DIR, make_snapshot
from folders.trace import TraceDB, connect
from syncthing.folderspec import IGNORE_PATTERNS
from tests.unit.tracekit import TickClock, new_trace, node_keys

KEYS, TRUSTED = node_keys("a")

#: Runs a real publish or snapshot in a child that SIGKILLs itself at the rename that puts
#: the .db in place: just before it ("before") or just after it, before the manifest
#: ("after"). Only the standard library's Path.replace is wrapped to find that moment.
KILLED_AT_RENAME = """
import os, pathlib, signal, sys
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from folders.segments import publish
from folders.snapshots import make_snapshot

trace, out, what, when = sys.argv[1:]
real = pathlib.Path.replace

def replace(self, target):
    if pathlib.Path(target).name.startswith(("seg-", "snap-")):
        if when == "after":
            real(self, target)
        os.kill(os.getpid(), signal.SIGKILL)
    return real(self, target)

pathlib.Path.replace = replace
make = publish if what == "segment" else make_snapshot
make(pathlib.Path(trace), pathlib.Path(out), "a", Ed25519PrivateKey.generate())
"""


def _finished_session(trace: Path, clock: TickClock) -> str:
    with TraceDB(trace, "a", clock=clock) as tdb:
        session = tdb.start_session("g")
        tdb.append(session, "inference", "because")
        tdb.finish(session, "yes")
    return session


def _status(trace: Path, session: str) -> str:
    conn = connect(trace)
    try:
        return conn.execute("SELECT status FROM sessions WHERE session = ?", (session,)).fetchone()[0]
    finally:
        conn.close()


@pytest.mark.parametrize("when", ["before", "after"])
@pytest.mark.parametrize("what", ["segment", "snapshot"])
def test_a_publish_killed_at_the_rename_is_cleaned_up_by_the_next_publish(tmp_path: Path, what: str,
                                                                          when: str) -> None:
    clock = TickClock()
    trace = new_trace(tmp_path / "trace.db")
    recovery = tmp_path / "recovery" / "a"
    if what == "snapshot":
        _finished_session(trace, clock)
        assert publish(trace, recovery / SEGMENTS_DIR, "a", KEYS["a"], clock=clock) is not None
    session = _finished_session(trace, clock)
    folder = recovery / (SEGMENTS_DIR if what == "segment" else SNAPSHOTS_DIR)
    folder.mkdir(parents=True, exist_ok=True)
    good = set(folder.iterdir())
    child = subprocess.run([sys.executable, "-c", KILLED_AT_RENAME, str(trace), str(folder), what, when],
                           capture_output=True, text=True, timeout=60, cwd=Path(__file__).parents[2])
    assert child.returncode == -signal.SIGKILL, child.stderr
    left = set(folder.iterdir()) - good
    shown = sorted(p.name for p in left if not p.name.startswith("."))
    if when == "before":
        # Only temporaries, which Syncthing ignores and the merge plan skips.
        assert left and shown == []
        assert all(p.name.startswith(TEMP_PREFIX) for p in left)
        assert all(any(fnmatch(p.name, pattern.removeprefix("(?d)")) for pattern in IGNORE_PATTERNS)
                   for p in left)
    else:
        # The .db is complete and in place but its manifest never came: Finding C's orphan.
        assert len(shown) == 1 and shown[0].endswith(".db")
    if what == "segment":
        assert _status(trace, session) == "finished", "a killed publish marks nothing published"

    removed = remove_leftovers(recovery, time.time())

    assert set(removed) == left
    assert set(folder.iterdir()) == good
    again = publish(trace, recovery / SEGMENTS_DIR, "a", KEYS["a"], clock=clock)
    assert again is not None and session in again.sessions
    if what == "snapshot":
        snap = make_snapshot(trace, folder, "a", KEYS["a"], clock=clock)
        assert snap.manifest_path.exists() and snap.path.exists()


def test_leftovers_newer_than_the_publish_and_complete_pairs_are_kept(tmp_path: Path) -> None:
    clock = TickClock()
    trace = new_trace(tmp_path / "trace.db")
    recovery = tmp_path / "recovery" / "a"
    _finished_session(trace, clock)
    segment = publish(trace, recovery / SEGMENTS_DIR, "a", KEYS["a"], clock=clock)
    assert segment is not None
    old = recovery / SEGMENTS_DIR / "seg-00000009-00000009.db"
    old.write_bytes(b"orphan")
    os.utime(old, (time.time() - 120, time.time() - 120))
    started = time.time() - 60
    fresh = recovery / SNAPSHOTS_DIR / f"{TEMP_PREFIX}0000-snap-x.db"
    fresh.parent.mkdir()
    fresh.write_bytes(b"being written by this publish")

    assert remove_leftovers(recovery, started) == [old]
    assert fresh.exists() and segment.db_path.exists() and segment.manifest_path.exists()


def test_pruning_a_pair_another_publish_already_removed_counts_it_as_pruned(tmp_path: Path) -> None:
    """Finding E: the daemon and `trace publish` pruned the same old pair at once, and the
    second one failed with "No such file or directory"."""
    manifest, db = tmp_path / "snap-1.json", tmp_path / "snap-1.db"
    db.write_bytes(b"x")

    assert _delete_pair(manifest, db) == [db]
    assert _delete_pair(manifest, db) == []
