"""A peer's recovery folder changed on this machine (Syncthing 1.27.3+ keeps such a change in
a receive-only folder without a conflict copy): `doctor` names it, the daemon reverts it so
the peer's signed bytes come back, and nothing is merged from the edited file."""

from __future__ import annotations

import json
import shutil
import sqlite3

import pytest

from syncthing.folderspec import recovery_folder_id
from syncthing.localchanges import local_changes
from tests.conftest import wait_for

pytestmark = pytest.mark.integration


def _steps(path) -> set[str]:
    conn = sqlite3.connect(path)
    try:
        return {r[0] for r in conn.execute("SELECT hash FROM steps")}
    finally:
        conn.close()


def _forge(segment, tmp_path) -> None:
    """A copy of the published .db with one more step, written over the synced file in one go."""
    forged = tmp_path / "forged.db"
    shutil.copyfile(segment, forged)
    conn = sqlite3.connect(forged)
    try:
        cols = [r[1] for r in conn.execute("PRAGMA table_info(steps)")]
        row = dict(zip(cols, conn.execute("SELECT * FROM steps LIMIT 1").fetchone()))
        row.update(hash="sha256:" + "f" * 64, content="forged on node2")
        with conn:
            conn.execute(f"INSERT INTO steps ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})",
                         [row[c] for c in cols])
    finally:
        conn.close()
    segment.write_bytes(forged.read_bytes())


def _doctor_check(node) -> dict:
    checks = json.loads(node.cli("doctor", "--json", ok=False).output)
    return next(c for c in checks if c["name"] == "peers' recovery folders")


def test_a_local_edit_of_a_peers_recovery_folder_is_reverted_and_never_merged(mesh, daemon_factory, tmp_path):
    a, b = mesh(2)
    folder = recovery_folder_id(a.name)
    session = a.cli("trace", "start", "plan the week").output.strip()
    a.cli("trace", "add", session, "observation", "Monday is full")
    a.cli("trace", "finish", session, "gym on Tuesday")
    a.cli("trace", "publish")
    theirs, mine = a.home / "trace" / "recovery" / a.name, b.home / "trace" / "recovery" / a.name
    published = {rel: (theirs / rel).read_bytes() for rel in (p.relative_to(theirs) for p in theirs.rglob("*"))
                 if (theirs / rel).is_file() and rel.parts[0] not in (".stfolder", ".stignore")}
    segment = next(p for p in published if p.suffix == ".db")  # the first publish: a snapshot

    def arrived() -> bool:
        return all((mine / rel).is_file() and (mine / rel).read_bytes() == data for rel, data in published.items())

    wait_for(arrived, 60, "node1's publication on node2")
    a_steps = _steps(theirs / segment)

    # Edited while no daemon runs: Syncthing keeps it as a local change, doctor says so.
    _forge(mine / segment, tmp_path)
    b.client().scan(folder)
    wait_for(lambda: local_changes(b.client().folder_status(folder)) > 0, 30, "Syncthing to see the edit")
    check = _doctor_check(b)
    assert check["level"] == "warn" and f"1 in {folder} (node1's)" in check["message"]
    assert "reverts them" in check["fix"]

    daemon = daemon_factory(b)
    wait_for(arrived, 60, "the edit reverted to node1's bytes")
    sentence = f"changed on this machine in {folder}, node1's recovery folder, were reverted"
    wait_for(lambda: sentence in daemon.log(), 10, "the revert in the daemon's log")
    wait_for(lambda: a_steps <= _steps(b.home / "trace.db"), 60, "node1's steps merged on node2")
    assert "sha256:" + "f" * 64 not in _steps(b.home / "trace.db")

    # Edited while the daemon runs: Syncthing's folder summary event starts the revert.
    (mine / "fingerprint.json").write_text("{}")
    (mine / "stray.txt").write_text("not node1's")
    (mine / segment.with_suffix(".json")).unlink()  # a deleted manifest comes back too
    wait_for(lambda: arrived() and not (mine / "stray.txt").exists(), 60, "the second edit reverted")
    assert daemon.log().count(sentence) >= 2, daemon.log()[-3000:]
    check = _doctor_check(b)
    assert check["level"] == "ok" and check["message"].startswith("no local changes (last revert ")
