"""Snapshots: make, verify, merge (catch-up), restore (same node and new machine), prune, due."""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from contextlib import closing
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from folders import keys
from folders.errors import TraceError
from folders.manifest import SegmentError
from folders.segments import Segment, merge_segment, publish, verify_segment
from folders.snapshots import (
    KEPT_TABLES,
    Snapshot,
    VerifiedSnapshot,
    list_snapshots,
    make_snapshot,
    merge_snapshot,
    verify_snapshot,
)
from folders.restore import restore_snapshot
from folders.retention import due_for_snapshot, prune
from folders.trace import TraceDB, canonical_json, connect, ensure_schema, step_hash
from tests.conftest import wait_for
from tests.unit.tracekit import TickClock, node_keys, planned, resign

KEYS, TRUSTED = node_keys("a", "b", "c")
SHADOWS = "SELECT session FROM sessions WHERE status != 'published'"


class Node:
    """One node: its trace.db in its home, its recovery folder under a shared root, as if
    Syncthing had already copied every node's folder everywhere."""

    def __init__(self, tmp_path: Path, name: str, root: Path, clock: TickClock) -> None:
        self.name, self.root, self.clock = name, root, clock
        self.trace = tmp_path / f"home-{name}" / "trace.db"
        self.trace.parent.mkdir(parents=True, exist_ok=True)
        ensure_schema(self.trace)

    @property
    def folder(self) -> Path:
        return self.root / self.name

    def record(self, conclusion: str = "yes", goal: str = "g", finish: bool = True) -> str:
        with TraceDB(self.trace, self.name, clock=self.clock) as tdb:
            session = tdb.start_session(goal)
            tdb.append(session, "inference", f"toward {conclusion}")
            if finish:
                tdb.finish(session, conclusion)
        return session

    def publish(self, sessions: int = 1) -> Segment:
        for i in range(sessions):
            self.record(f"answer {i}")
        segment = publish(self.trace, self.folder / "segments", self.name, KEYS[self.name],
                          clock=self.clock)
        assert segment is not None
        return segment

    def snapshot(self) -> Snapshot:
        return make_snapshot(self.trace, self.folder / "snapshots", self.name, KEYS[self.name],
                             clock=self.clock)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "trace" / "recovery"


@pytest.fixture
def make_node(tmp_path: Path, root: Path) -> Callable[[str], Node]:
    clock = TickClock()  # one clock for every node, so "newest" means the same to all
    return lambda name: Node(tmp_path, name, root, clock)


def rows(path: Path, sql: str = "SELECT * FROM steps ORDER BY hash", *args: object) -> list[tuple]:
    with closing(sqlite3.connect(path)) as conn:
        return conn.execute(sql, args).fetchall()


def published_steps(trace: Path) -> list[tuple]:
    return rows(trace, f"SELECT * FROM steps WHERE session NOT IN ({SHADOWS}) ORDER BY hash")


def receive(manifest: Path, trace: Path) -> int:
    return merge_segment(trace, verify_segment(manifest, TRUSTED))


def catch_up(manifest: Path, trace: Path) -> int:
    return merge_snapshot(trace, verify_snapshot(manifest, TRUSTED))


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if ".tmp" in p.name)


# --- make and restore on the same node -------------------------------------------------------

def test_snapshot_holds_the_published_trace_only_and_restores_it(make_node, root: Path,
                                                                 tmp_path: Path) -> None:
    a = make_node("a")
    for n in (1, 2, 3):
        a.publish(sessions=n)
    open_shadow = a.record("not yet", finish=False)
    finished_shadow = a.record("unpublished")
    published = published_steps(a.trace)
    assert len(published) == 18 and len(rows(a.trace)) == 23

    snap = a.snapshot()
    assert (snap.node, snap.seq, snap.rows, snap.merged) == ("a", 3, 18, {})
    assert snap.path.parent == root / "a" / "snapshots"
    assert sorted(p.name for p in snap.path.parent.iterdir()) == [snap.path.name,
                                                                 snap.manifest_path.name]
    manifest = json.loads(snap.manifest_path.read_text())
    assert set(manifest) == {"twinsync", "kind", "node", "file", "sha256", "rows", "created",
                             "seq", "merged", "integrity_checked", "sig"}
    assert (manifest["kind"], manifest["file"], manifest["sha256"], manifest["integrity_checked"]) == (
        "snapshot", snap.path.name, snap.sha256, True)
    unsigned = {k: v for k, v in manifest.items() if k != "sig"}
    assert keys.verify(TRUSTED["a"], canonical_json(unsigned), manifest["sig"])
    with closing(sqlite3.connect(snap.path)) as conn:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        assert tables == set(KEPT_TABLES)
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] != "wal"
        sessions = {r[0] for r in conn.execute("SELECT DISTINCT session FROM steps")}
        assert not sessions & {open_shadow, finished_shadow}
        assert conn.execute("SELECT count(*) FROM publish_log").fetchone()[0] == 3

    verified = verify_snapshot(snap.manifest_path, TRUSTED)
    assert (verified.node, verified.seq, verified.rows, verified.size) == ("a", 3, 18, snap.size)
    target = tmp_path / "restored" / "trace.db"
    target.parent.mkdir()
    assert restore_snapshot(target, snap.manifest_path, TRUSTED).backup is None
    assert rows(target) == published
    assert leftovers(target.parent) == []
    assert planned(root, target, "a") == []

    with TraceDB(target, "a", clock=a.clock) as tdb:  # the restored node goes on publishing
        session = tdb.start_session("g")
        tdb.finish(session, "after the restore")
    segment = publish(target, a.folder / "segments", "a", KEYS["a"], clock=a.clock)
    assert segment is not None and (segment.seq, segment.first) == (4, 19)


def test_after_a_restore_the_newer_segments_come_back_and_numbering_goes_on(
        make_node, root: Path) -> None:
    a = make_node("a")
    for _ in range(3):
        a.publish()
    snap = a.snapshot()
    newer = [a.publish(), a.publish()]
    published = published_steps(a.trace)
    for path in a.trace.parent.glob("trace.db*"):
        path.unlink()  # the disk under trace.db died; the recovery folder survived

    assert restore_snapshot(a.trace, snap.manifest_path, TRUSTED).backup is None
    todo = planned(root, a.trace, "a")
    assert todo == [s.manifest_path for s in newer]
    for manifest in todo:
        receive(manifest, a.trace)
    assert rows(a.trace) == published
    assert planned(root, a.trace, "a") == []
    assert a.publish().seq == 6


# --- a peer that fell behind catches up from a snapshot --------------------------------------

def test_a_lagging_peer_catches_up_from_a_snapshot_then_merges_newer_segments(
        make_node, root: Path) -> None:
    a, b, c = make_node("a"), make_node("b"), make_node("c")
    early = [a.publish(), a.publish()]
    for segment in early:
        receive(segment.manifest_path, b.trace)
    from_c = c.publish(sessions=2)
    receive(from_c.manifest_path, a.trace)
    for _ in range(3):
        a.publish()
    a.record("shadow work", finish=False)
    snap = a.snapshot()
    assert (snap.seq, snap.merged) == (5, {"c": 1})

    deleted = prune(a.folder, keep_snapshots=1)
    assert len(deleted) == 10 and not list((a.folder / "segments").iterdir())
    sixth = a.publish()
    assert sixth.seq == 6

    # a: seqs 1, 2 held, 3-5 pruned: bridge with the snapshot, then 6; c: its segment 1
    assert planned(root, b.trace, "b") == [snap.manifest_path, sixth.manifest_path,
                                           from_c.manifest_path]
    verified = verify_snapshot(snap.manifest_path, TRUSTED)
    assert merge_snapshot(b.trace, verified) > 0
    merged = rows(b.trace, "SELECT node, seq, sha256 FROM merged ORDER BY node, seq")
    assert merge_snapshot(b.trace, verified) == 0
    assert rows(b.trace, "SELECT node, seq, sha256 FROM merged ORDER BY node, seq") == merged
    # every seq of a the snapshot covers, with its segment's own sha256 (so merging that
    # very segment is a no-op); c's seqs are not claimed: only c's own pieces close them
    assert [(n, s) for n, s, _ in merged] == [("a", s) for s in range(1, 6)]
    assert [sha for _, _, sha in merged] == [m.sha256 for m in early] + [
        sha for (sha,) in rows(a.trace, "SELECT sha256 FROM publish_log WHERE seq BETWEEN 3 AND 5 ORDER BY seq")]

    assert planned(root, b.trace, "b") == [sixth.manifest_path, from_c.manifest_path]
    assert receive(sixth.manifest_path, b.trace) == sixth.rows
    assert receive(from_c.manifest_path, b.trace) == 0
    assert rows(b.trace) == published_steps(a.trace)
    assert planned(root, b.trace, "b") == []


def test_merging_a_snapshot_over_a_different_segment_of_the_same_seq_is_refused(
        make_node, tmp_path: Path) -> None:
    a, b = make_node("a"), make_node("b")
    snap = (a.publish(), a.snapshot())[1]
    other = Node(tmp_path / "elsewhere", "a", tmp_path / "elsewhere-root", a.clock)
    receive(other.publish().manifest_path, b.trace)  # a different seq 1 of a
    before = rows(b.trace)
    with pytest.raises(SegmentError) as info:
        catch_up(snap.manifest_path, b.trace)
    assert info.value.code == "seq_reused"
    assert rows(b.trace) == before


# --- refusals: each names its code, and the existing trace.db is untouched -------------------

def edit(snap: Snapshot, sql: str, *args: object) -> None:
    """Change the snapshot, then give it a manifest a's real key signed: only content can tell."""
    with closing(sqlite3.connect(snap.path)) as conn:
        conn.execute(sql, args)
        conn.commit()
    count = rows(snap.path, "SELECT count(*) FROM steps")[0][0]
    resign(snap.manifest_path, KEYS["a"], sha256=_sha(snap.path), rows=count)


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def truncate(snap: Snapshot) -> None:
    data = snap.path.read_bytes()
    snap.path.write_bytes(data[: len(data) // 2])


def flip_byte(snap: Snapshot) -> None:
    data = bytearray(snap.path.read_bytes())
    data[len(data) - 100] ^= 0xFF
    snap.path.write_bytes(bytes(data))


def untrusted_node(snap: Snapshot) -> None:
    resign(snap.manifest_path, Ed25519PrivateKey.generate(), node="z")


def impersonation(snap: Snapshot) -> None:
    resign(snap.manifest_path, KEYS["b"])


def unknown_key(snap: Snapshot) -> None:
    resign(snap.manifest_path, Ed25519PrivateKey.generate())


def bad_step_hash(snap: Snapshot) -> None:
    edit(snap, "UPDATE steps SET content = 'forged' WHERE kind = 'conclusion'")


def foreign_author(snap: Snapshot) -> None:
    ts = "2026-11-25T08:00:00.000000Z"
    edit(snap, "INSERT INTO steps VALUES (?, ?, 'g', NULL, 'x', ?, 'question', 'g')",
         step_hash("s" * 32, "g", None, "x", ts, "question", "g"), "s" * 32, ts)


def wrong_row_count(snap: Snapshot) -> None:
    resign(snap.manifest_path, KEYS["a"], rows=snap.rows + 1)


def lied_seq(snap: Snapshot) -> None:
    resign(snap.manifest_path, KEYS["a"], seq=snap.seq + 5)


def trigger(snap: Snapshot) -> None:
    edit(snap, "CREATE TRIGGER evil AFTER INSERT ON steps BEGIN DELETE FROM steps; END")


def view(snap: Snapshot) -> None:
    edit(snap, "CREATE VIEW v AS SELECT hash FROM steps")


def extra_index(snap: Snapshot) -> None:
    edit(snap, "CREATE INDEX steps_kind ON steps (kind)")


def extra_table(snap: Snapshot) -> None:
    edit(snap, "CREATE TABLE notes (x TEXT)")


def link_as_db(snap: Snapshot) -> None:
    real = snap.path.with_name("elsewhere.bin")
    snap.path.rename(real)
    snap.path.symlink_to(real)


def shadow_session(snap: Snapshot) -> None:
    edit(snap, "INSERT INTO sessions (session, goal, author, status, head, started) "
         "VALUES ('x', 'g', 'a', 'open', 'h', 't')")


def not_sqlite(snap: Snapshot) -> None:
    snap.path.write_bytes(b"\x00garbage" * 512)
    resign(snap.manifest_path, KEYS["a"], sha256=_sha(snap.path))


def junk_manifest(snap: Snapshot) -> None:
    snap.manifest_path.write_text('{"twinsync": 1, "kind": "snapshot"')


def manifest_naming_another_file(snap: Snapshot) -> None:
    resign(snap.manifest_path, KEYS["a"], file="../../../home-b/trace.db")


def missing_file(snap: Snapshot) -> None:
    snap.path.unlink()


def created_garbage(snap: Snapshot) -> None:
    resign(snap.manifest_path, KEYS["a"], created="soon")


def integrity_not_true(snap: Snapshot) -> None:
    resign(snap.manifest_path, KEYS["a"], integrity_checked="yes")


def unknown_field(snap: Snapshot) -> None:
    resign(snap.manifest_path, KEYS["a"], checked_by="twinsync 9")


REFUSALS = [(truncate, "sha_mismatch"), (flip_byte, "sha_mismatch"),
            (untrusted_node, "untrusted_node"), (impersonation, "bad_signature"),
            (unknown_key, "bad_signature"), (bad_step_hash, "bad_step_hash"),
            (foreign_author, "foreign_author"), (wrong_row_count, "row_count"),
            (lied_seq, "seq_mismatch"), (trigger, "bad_schema"), (view, "bad_schema"),
            (extra_index, "bad_schema"), (extra_table, "bad_schema"), (link_as_db, "not_a_file"),
            (shadow_session, "unpublished"), (not_sqlite, "corrupt_db"),
            (junk_manifest, "bad_manifest"), (manifest_naming_another_file, "bad_manifest"),
            (missing_file, "missing_file"), (created_garbage, "bad_manifest"),
            (integrity_not_true, "bad_manifest"), (unknown_field, "bad_manifest")]


@pytest.fixture
def scene(make_node) -> tuple[Node, Node, Snapshot]:
    """a published twice and snapshotted; b has a trace.db of its own that a restore replaces."""
    a, b = make_node("a"), make_node("b")
    a.publish(sessions=2)
    a.publish()
    b.publish()
    b.record("shadow", finish=False)
    return a, b, a.snapshot()


def unchanged_after(b: Node, action: Callable[[], object]) -> BaseException:
    before = b.trace.read_bytes()
    with pytest.raises(TraceError) as info:
        action()
    assert b.trace.read_bytes() == before
    assert leftovers(b.trace.parent) == []
    assert not list(b.trace.parent.glob("trace.db.bak-*"))
    return info.value


@pytest.mark.parametrize("tamper, code", REFUSALS, ids=[f.__name__ for f, _ in REFUSALS])
def test_a_bad_snapshot_is_refused_and_trace_db_is_untouched(scene, tamper, code: str) -> None:
    a, b, snap = scene
    tamper(snap)
    error = unchanged_after(b, lambda: restore_snapshot(b.trace, snap.manifest_path, TRUSTED))
    assert isinstance(error, SegmentError) and error.code == code
    assert str(snap.manifest_path.parent) in str(error)
    before = rows(b.trace)
    with pytest.raises(SegmentError):
        catch_up(snap.manifest_path, b.trace)
    assert rows(b.trace) == before
    with pytest.raises(SegmentError) as deferred:  # the check leaves the step hashes to the merge
        merge_snapshot(b.trace, verify_snapshot(snap.manifest_path, TRUSTED, hash_steps=False))
    assert deferred.value.code == code and str(deferred.value) == str(error)
    assert rows(b.trace) == before


def test_a_snapshot_changed_after_verification_is_not_restored(scene) -> None:
    """`snapshots --verify`, then Syncthing brings a changed file: the restore checks again."""
    a, b, snap = scene
    verify_snapshot(snap.manifest_path, TRUSTED)
    flip_byte(snap)
    error = unchanged_after(b, lambda: restore_snapshot(b.trace, snap.manifest_path, TRUSTED))
    assert isinstance(error, SegmentError) and error.code == "sha_mismatch"


def during_the_copy(snap: Snapshot, change: Callable[[int], None]) -> Callable[[int, int], None]:
    """A progress callback that changes the snapshot once, after the first chunk is copied."""
    changed: list[int] = []

    def progress(done: int, total: int) -> None:
        if not changed:
            changed.append(done)
            change(done)

    return progress


def test_a_snapshot_rewritten_in_place_while_it_is_copied_is_not_restored(scene) -> None:
    """The bytes not copied yet change under the copy: the hash of what was written differs."""
    a, b, snap = scene

    def rewrite_the_rest(done: int) -> None:
        with open(snap.path, "r+b") as fh:
            fh.seek(done)
            rest = bytearray(fh.read())
            rest[-100] ^= 0xFF
            fh.seek(done)
            fh.write(rest)

    error = unchanged_after(b, lambda: restore_snapshot(
        b.trace, snap.manifest_path, TRUSTED, chunk=4096, progress=during_the_copy(snap, rewrite_the_rest)))
    assert isinstance(error, SegmentError) and error.code == "sha_mismatch"


def test_a_snapshot_truncated_while_it_is_copied_is_not_restored(scene) -> None:
    a, b, snap = scene
    error = unchanged_after(b, lambda: restore_snapshot(
        b.trace, snap.manifest_path, TRUSTED, chunk=4096,
        progress=during_the_copy(snap, lambda done: os.truncate(snap.path, done + 4096))))
    assert isinstance(error, SegmentError) and error.code == "sha_mismatch"


def test_a_snapshot_replaced_while_it_is_copied_restores_the_bytes_that_were_checked(scene) -> None:
    """Syncthing swaps in a new file (a rename) mid-copy: the copy goes on reading the file it
    opened, whose bytes the signature covers, and exactly those are restored."""
    a, b, snap = scene
    published = published_steps(a.trace)
    other = snap.path.with_name("other.db")
    with closing(sqlite3.connect(other)) as conn:
        conn.execute("CREATE TABLE steps (x)")
    restored = restore_snapshot(b.trace, snap.manifest_path, TRUSTED, chunk=4096,
                                progress=during_the_copy(snap, lambda done: other.replace(snap.path)))
    assert restored.snapshot.sha256 == snap.sha256
    assert published_steps(b.trace) == published
    assert rows(b.trace, "PRAGMA integrity_check") == [("ok",)]


def lie_about_an_index(db: Path) -> None:
    """steps_goal keeps its entries but says it indexes kind: quick_check passes."""
    with closing(sqlite3.connect(db)) as conn:
        conn.execute("PRAGMA writable_schema=ON")
        conn.execute("""UPDATE sqlite_master SET sql = replace(sql, '("goal")', '("kind")') """
                     "WHERE name = 'steps_goal'")
        conn.commit()


@pytest.mark.parametrize("drop, how", [(("integrity_checked",), {}),
                                       ((), {"node": "b", "new_machine": True})],
                         ids=["not-said-checked", "another-nodes"])
def test_a_snapshot_whose_index_does_not_match_its_table_is_not_restored(scene, drop, how) -> None:
    """quick_check passes and a merge reads only the table, but a restore keeps the snapshot's
    indexes: SQLite's integrity_check must refuse one that lies about its table. A restore
    leaves it to the signature only for the node's own snapshot said checked before signing;
    one that does not say so (an older twinsync's) or another node's is checked here."""
    a, b, snap = scene
    lie_about_an_index(snap.path)
    resign(snap.manifest_path, KEYS["a"], sha256=_sha(snap.path), drop=drop)
    assert rows(snap.path, "PRAGMA quick_check") == [("ok",)]
    error = unchanged_after(b, lambda: restore_snapshot(b.trace, snap.manifest_path, TRUSTED, workers=2,
                                                        **how))
    assert isinstance(error, SegmentError) and error.code == "corrupt_db"
    assert "integrity_check" in str(error) and str(snap.path) in str(error)


def test_a_trace_whose_index_does_not_match_its_table_is_not_snapshotted(make_node) -> None:
    """The check a restore of the node's own snapshot leaves out runs before signing: a
    trace.db whose index lies publishes no snapshot, and the error says what to do."""
    a = make_node("a")
    a.publish(sessions=2)
    lie_about_an_index(a.trace)
    with pytest.raises(TraceError) as info:
        a.snapshot()
    assert "integrity_check" in str(info.value) and str(a.trace) in str(info.value)
    assert "twinsync restore" in str(info.value)
    assert list((a.folder / "snapshots").iterdir()) == []


def test_a_snapshot_of_an_older_twinsync_without_integrity_checked_still_reads(scene) -> None:
    a, b, snap = scene
    resign(snap.manifest_path, KEYS["a"], drop=("integrity_checked",))
    assert verify_snapshot(snap.manifest_path, TRUSTED).sha256 == snap.sha256


def test_a_snapshot_of_another_node_is_restored_only_onto_a_new_machine(scene) -> None:
    a, b, snap = scene
    error = unchanged_after(b, lambda: restore_snapshot(b.trace, snap.manifest_path, TRUSTED, node="b"))
    assert "is a's, not b's" in str(error)


def test_a_trace_db_in_use_is_not_replaced(scene) -> None:
    a, b, snap = scene
    with closing(sqlite3.connect(b.trace, isolation_level=None)) as daemon:
        daemon.execute("PRAGMA wal_autocheckpoint=0")
        daemon.execute("DELETE FROM publish_log")
        daemon.execute("BEGIN")
        daemon.execute("SELECT count(*) FROM steps").fetchone()
        before = rows(b.trace)
        with pytest.raises(TraceError, match="in use"):
            restore_snapshot(b.trace, snap.manifest_path, TRUSTED)
        daemon.execute("COMMIT")
    assert rows(b.trace) == before
    assert leftovers(b.trace.parent) == []


def test_restore_into_a_missing_folder_says_so(scene, tmp_path: Path) -> None:
    _, _, snap = scene
    with pytest.raises(TraceError, match="restore again") as info:
        restore_snapshot(tmp_path / "nowhere" / "trace.db", snap.manifest_path, TRUSTED)
    assert not isinstance(info.value, SegmentError)


def test_local_tables_views_and_triggers_never_leave_the_node(make_node) -> None:
    a = make_node("a")
    a.publish()
    with closing(sqlite3.connect(a.trace)) as conn:
        conn.execute("CREATE TABLE notes (private TEXT)")
        conn.execute("INSERT INTO notes VALUES ('only mine')")
        conn.execute("CREATE VIEW recent AS SELECT * FROM steps")
        conn.execute("CREATE TRIGGER audit AFTER INSERT ON steps BEGIN "
                     "INSERT INTO notes VALUES (NEW.hash); END")
        conn.commit()
    snap = a.snapshot()
    assert rows(snap.path, "SELECT type, name FROM sqlite_master WHERE type != 'index' "
                "ORDER BY name") == [("table", t) for t in sorted(KEPT_TABLES)]
    assert verify_snapshot(snap.manifest_path, TRUSTED).rows == 3


# --- restore keeps the old trace.db, reports progress ----------------------------------------

def test_restore_keeps_the_old_trace_db_aside_and_reports_progress(scene) -> None:
    a, b, snap = scene
    old = rows(b.trace)
    calls: list[tuple[int, int]] = []
    backup = restore_snapshot(b.trace, snap.manifest_path, TRUSTED, clock=b.clock, chunk=4096,
                              progress=lambda done, total: calls.append((done, total))).backup
    assert backup is not None and backup.parent == b.trace.parent
    assert backup.name.startswith("trace.db.bak-") and rows(backup) == old
    assert rows(b.trace) == published_steps(a.trace)
    assert rows(b.trace, "PRAGMA integrity_check") == [("ok",)]
    assert leftovers(b.trace.parent) == []
    assert len(calls) >= 2
    total = calls[-1][1]
    assert calls[-1] == (total, total) and all(t == total for _, t in calls)
    assert all(x[0] < y[0] for x, y in zip(calls, calls[1:]))
    assert {p.name for p in b.trace.parent.iterdir()} <= {"trace.db", backup.name,
                                                          "trace.db-wal", "trace.db-shm"}


# --- restore onto a new machine --------------------------------------------------------------

@pytest.mark.parametrize("fresh_home_has_trace_db", [False, True])
def test_restore_onto_a_new_machine(make_node, root: Path, tmp_path: Path,
                                    fresh_home_has_trace_db: bool) -> None:
    a = make_node("a")
    a.publish(sessions=2)
    a.publish()
    a.record("shadow", finish=False)
    a.record("finished, never published")
    snap = a.snapshot()
    last_words = a.publish()  # a publishes once more, then dies
    expected = rows(a.trace, f"SELECT * FROM steps WHERE session NOT IN ({SHADOWS}) "
                             "AND session NOT IN (SELECT session FROM sessions "
                             "WHERE published_seq = 3) ORDER BY hash")

    home = tmp_path / "home-c"
    home.mkdir()
    c_trace = home / "trace.db"
    if fresh_home_has_trace_db:
        ensure_schema(c_trace)
    backup = restore_snapshot(c_trace, snap.manifest_path, TRUSTED, node="c", new_machine=True).backup
    assert (backup is not None) == fresh_home_has_trace_db
    assert rows(c_trace) == expected
    assert {r[4] for r in rows(c_trace)} == {"a"}
    assert rows(c_trace, "SELECT count(*) FROM publish_log") == [(0,)]
    assert rows(c_trace, "SELECT count(*) FROM sessions") == [(0,)]
    assert rows(c_trace, "SELECT node, seq FROM merged ORDER BY seq") == [("a", 1), ("a", 2)]

    assert planned(root, c_trace, "c") == [last_words.manifest_path]
    assert receive(last_words.manifest_path, c_trace) == last_words.rows

    c = Node(tmp_path, "c", root, a.clock)  # the new machine: same trace.db, now c's
    own = c.record("c's first thought")
    segment = c.publish(sessions=0)
    assert (segment.seq, segment.first, segment.sessions) == (1, 1, (own,))
    with TraceDB(c.trace, "c") as tdb:
        assert {s.status for s in tdb.query("g") if s.author == "a"} == {"published"}
    assert planned(root, c.trace, "c") == []
    mine = c.snapshot()
    verified = verify_snapshot(mine.manifest_path, TRUSTED)
    assert (verified.seq, verified.merged) == (1, {"a": 3})


# --- listing, retention, schedule ------------------------------------------------------------

def test_list_snapshots_newest_first_without_verifying(make_node, root: Path) -> None:
    a, b = make_node("a"), make_node("b")
    a.publish()
    first = a.snapshot()
    b.publish()
    other = b.snapshot()
    a.publish()
    second = a.snapshot()
    second.path.unlink()  # still arriving
    (a.folder / "snapshots" / "snap-20990101T000000000000Z.json").write_text("{")
    listed = list_snapshots(root)
    assert [i.manifest_path for i in listed] == [second.manifest_path, other.manifest_path,
                                                first.manifest_path]
    assert [i.size for i in listed] == [None, other.size, first.size]
    assert [(i.node, i.seq, i.rows) for i in list_snapshots(root, "a")] == [("a", 2, 6),
                                                                          ("a", 1, 3)]
    assert list_snapshots(root / "nowhere") == []


def test_prune_keeps_the_newest_snapshots_and_never_a_db_without_its_manifest(
        make_node) -> None:
    a = make_node("a")
    segments = [a.publish() for _ in range(3)]
    old = a.snapshot()
    segments += [a.publish() for _ in range(2)]
    new = a.snapshot()
    segments.append(a.publish())
    snapshots = a.folder / "snapshots"
    arriving = snapshots / "snap-20990101T000000000000Z.db"
    arriving.write_bytes(b"still arriving")
    broken = snapshots / "snap-20990101T000000000001Z.json"
    broken.write_text("{")
    broken.with_suffix(".db").write_bytes(b"who knows")
    (a.folder / "segments" / "seg-00000099-00000099.db").write_bytes(b"no manifest")

    assert prune(a.folder, keep_snapshots=2) == [
        p for s in segments[:3] for p in (s.manifest_path, s.db_path)]
    deleted = prune(a.folder, keep_snapshots=1)
    assert deleted == [old.manifest_path, old.path] + [
        p for s in segments[3:5] for p in (s.manifest_path, s.db_path)]
    assert sorted(p.name for p in snapshots.iterdir()) == sorted(
        [new.path.name, new.manifest_path.name, arriving.name, broken.name,
         broken.with_suffix(".db").name])
    assert sorted(p.name for p in (a.folder / "segments").iterdir()) == sorted(
        [segments[5].db_path.name, segments[5].manifest_path.name, "seg-00000099-00000099.db"])
    assert prune(a.folder, keep_snapshots=1) == []
    with pytest.raises(TraceError, match="keep at least 1"):
        prune(a.folder, keep_snapshots=0)


def test_due_for_snapshot(make_node) -> None:
    a = make_node("a")
    assert not due_for_snapshot(a.folder, 3, 60, a.clock.now)
    a.publish()
    assert due_for_snapshot(a.folder, 3, 60, a.clock.now)
    snap = a.snapshot()
    made = datetime.fromisoformat(snap.created.replace("Z", "+00:00"))
    assert not due_for_snapshot(a.folder, 3, 60, made + timedelta(hours=5))  # nothing newer
    a.publish()
    assert not due_for_snapshot(a.folder, 3, 60, made + timedelta(minutes=59))
    assert due_for_snapshot(a.folder, 3, 60, made + timedelta(minutes=60))
    assert not due_for_snapshot(a.folder, 3, 0, made + timedelta(days=9))  # time rule off
    a.publish()
    a.publish()
    assert due_for_snapshot(a.folder, 3, 60, made + timedelta(minutes=1))
    assert not due_for_snapshot(a.folder, 0, 60, made + timedelta(minutes=1))


def test_verified_snapshot_fields_come_from_the_manifest(scene) -> None:
    a, _, snap = scene
    verified = verify_snapshot(snap.manifest_path, TRUSTED)
    assert verified == VerifiedSnapshot("a", 2, 9, snap.sha256, snap.created, {}, snap.path,
                                        snap.manifest_path, snap.size)
    with closing(connect(a.trace)) as conn:
        assert conn.execute("SELECT count(*) FROM steps").fetchone()[0] == 9


# --- restore keeps the user's unpublished work -----------------------------------------------

def test_restore_brings_this_nodes_shadow_sessions_back_on_top(make_node) -> None:
    a = make_node("a")
    a.publish()
    reopened = a.publish().sessions[0]
    snap = a.snapshot()
    open_shadow = a.record("still thinking", finish=False)
    finished_shadow = a.record("finished, not published yet")
    with TraceDB(a.trace, "a", clock=a.clock) as tdb:  # a published session, reopened since
        tdb.reopen(reopened)
        tdb.append(reopened, "observation", "one more thought")
    shadows = rows(a.trace, "SELECT session, status, head FROM sessions WHERE status != 'published' "
                   "ORDER BY session")
    shadow_steps = rows(a.trace, f"SELECT * FROM steps WHERE session IN ({SHADOWS}) ORDER BY hash")
    assert {s for s, _, _ in shadows} == {open_shadow, finished_shadow, reopened}

    backup = restore_snapshot(a.trace, snap.manifest_path, TRUSTED).backup
    assert backup is not None
    assert rows(a.trace, "SELECT session, status, head FROM sessions WHERE status != 'published' "
                "ORDER BY session") == shadows
    assert rows(a.trace, f"SELECT * FROM steps WHERE session IN ({SHADOWS}) ORDER BY hash") == shadow_steps
    with TraceDB(a.trace, "a", clock=a.clock) as tdb:  # and work goes on where it stopped
        tdb.finish(open_shadow, "done after the restore")
    segment = publish(a.trace, a.folder / "segments", "a", KEYS["a"], clock=a.clock)
    assert set(segment.sessions) == {open_shadow, finished_shadow}


@pytest.mark.parametrize("size, chunk", [(0, 4096), (1, 4096), (4096 * 64 + 17, 4096), (3 << 20, 1 << 16)])
def test_the_copy_holds_exactly_the_bytes_whose_hash_it_returns(tmp_path: Path, size: int, chunk: int) -> None:
    """Hashed on one thread while written on another, in two alternating buffers: a buffer
    refilled before its write ended would put bytes in place that were never hashed."""
    from folders.restore import _copy_hashing

    source, dest = tmp_path / "snap.db", tmp_path / "trace.db.tmp"
    source.write_bytes(os.urandom(size))
    calls: list[tuple[int, int]] = []
    digest = _copy_hashing(source, dest, lambda done, total: calls.append((done, total)), chunk)
    assert dest.read_bytes() == source.read_bytes()
    assert digest == _sha(dest)
    assert [done for done, _ in calls] == list(range(chunk, size, chunk)) + ([size] if size else [])


KILLED_RESTORE = """
import sys
from pathlib import Path
from folders.keys import parse_public_key
from folders.restore import restore_snapshot
restore_snapshot(Path(sys.argv[1]), Path(sys.argv[2]), {"a": parse_public_key(sys.argv[3])}, chunk=1 << 16)
"""


@pytest.mark.parametrize("moment", ["copying", "checking"])
def test_kill_9_mid_restore_leaves_the_old_trace_or_the_new_one_and_restores_again(make_node, moment: str) -> None:
    """SIGKILL while the copy is written, or once it is whole and being checked: trace.db is
    the old one or (the kill came after the rename) the restored one, never a mix; the next
    restore clears the leftover trace.db.tmp."""
    a, b = make_node("a"), make_node("b")
    with TraceDB(a.trace, "a", clock=a.clock) as tdb:  # a snapshot of some megabytes
        for i in range(120):
            session = tdb.start_session(f"goal {i}")
            tdb.append(session, "observation", os.urandom(40_000).hex())
            tdb.finish(session, f"answer {i}")
    a.publish()
    snap = a.snapshot()
    old = b.trace.read_bytes()
    tmp = b.trace.with_name("trace.db.tmp")
    child = subprocess.Popen([sys.executable, "-c", KILLED_RESTORE, str(b.trace), str(snap.manifest_path),
                              keys.public_key_text(TRUSTED["a"])])
    try:
        wait_for(lambda: child.poll() is not None or (tmp.exists() and (
            moment == "copying" or tmp.stat().st_size >= snap.size)), timeout=60, interval=0.001,
            what=f"the restore {moment}")
    finally:
        child.kill()
        child.wait()
    assert tmp.exists() or child.returncode == 0  # killed mid-restore, or it had already ended
    assert b.trace.read_bytes() == old or rows(b.trace) == published_steps(a.trace)
    assert rows(b.trace, "PRAGMA integrity_check") == [("ok",)]
    restore_snapshot(b.trace, snap.manifest_path, TRUSTED)
    assert rows(b.trace) == published_steps(a.trace)
    assert leftovers(b.trace.parent) == []
