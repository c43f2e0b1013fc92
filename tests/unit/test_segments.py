"""Segments: publish, verify, merge, refusals, the union property, forks and consensus."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import tempfile
from contextlib import closing
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from folders import keys
from folders.consensus import Consensus, consensus
from folders.forks import Fork, choose_branch, detect_forks
from folders.manifest import SegmentError
from folders.segments import (
    VerifiedSegment,
    merge_segment,
    publish,
    segment_name,
    verify_segment,
)
from folders.trace import (
    TraceDB,
    canonical_json,
    connect,
    content_hash,
    step_hash,
)
from tests.unit.tracekit import TickClock, new_trace, node_keys, resign

NODES = ("a", "b", "c")
KEYS, TRUSTED = node_keys(*NODES)


def record(path: Path, author: str, goal: str, conclusion: str, extra: int = 1,
           clock: TickClock | None = None) -> str:
    with TraceDB(path, author, clock=clock or TickClock()) as tdb:
        session = tdb.start_session(goal)
        for i in range(extra):
            tdb.append(session, "inference", f"step {i} toward {conclusion}")
        tdb.finish(session, conclusion)
    return session


def all_steps(path: Path) -> list[tuple]:
    conn = connect(path)
    try:
        return conn.execute("SELECT * FROM steps ORDER BY hash").fetchall()
    finally:
        conn.close()


def receive(manifest: Path, trace: Path) -> int:
    """What a node does with a peer's segment: verify, then merge."""
    return merge_segment(trace, verify_segment(manifest, TRUSTED))


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def published(tmp_path: Path):
    """Node a with two finished sessions and one open one, published once."""
    trace = new_trace(tmp_path / "a" / "trace.db")
    clock = TickClock()
    sessions = [record(trace, "a", "g", "yes", clock=clock), record(trace, "a", "g", "no", clock=clock)]
    with TraceDB(trace, "a", clock=clock) as tdb:
        tdb.start_session("g", "still open")
    out = tmp_path / "a" / "segments"
    segment = publish(trace, out, "a", KEYS["a"], clock=clock)
    assert segment is not None
    return trace, out, segment, sessions


def test_publish_writes_a_signed_segment_of_finished_coherent_sessions(published) -> None:
    trace, out, segment, sessions = published
    assert (segment.seq, segment.first, segment.last, segment.rows) == (1, 1, 6, 6)
    assert segment.sessions == tuple(sessions)
    assert segment.db_path == out / "seg-00000001-00000006.db"
    manifest = json.loads(segment.manifest_path.read_text())
    assert set(manifest) == {"twinsync", "node", "seq", "file", "sha256", "rows", "first", "last",
                             "created", "sig"}
    assert manifest["file"] == segment.db_path.name and manifest["sha256"] == segment.sha256
    unsigned = {k: v for k, v in manifest.items() if k != "sig"}
    assert keys.verify(TRUSTED["a"], canonical_json(unsigned), manifest["sig"])
    assert sorted(p.name for p in out.iterdir()) == ["seg-00000001-00000006.db",
                                                     "seg-00000001-00000006.json"]
    assert publish(trace, out, "a", KEYS["a"]) is None
    with TraceDB(trace, "a") as tdb:
        statuses = {a.session: a.status for a in tdb.query("g")}
    assert [statuses[s] for s in sessions] == ["published", "published"]
    assert sorted(statuses.values()) == ["open", "published", "published"]


def test_next_publish_continues_the_numbering(published) -> None:
    trace, out, first, _ = published
    record(trace, "a", "g", "maybe", extra=2)
    second = publish(trace, out, "a", KEYS["a"])
    assert second is not None
    assert (second.seq, second.first, second.last, second.rows) == (2, 7, 10, 4)


def test_incoherent_sessions_stay_local(tmp_path: Path) -> None:
    trace = new_trace(tmp_path / "trace.db")
    good, bad = record(trace, "a", "g", "yes"), record(trace, "a", "g", "no")
    conn = connect(trace)
    conn.execute("UPDATE steps SET content = 'edited' WHERE session = ? AND kind = 'inference'",
                 (bad,))
    conn.close()
    segment = publish(trace, tmp_path / "out", "a", KEYS["a"])
    assert segment is not None and segment.sessions == (good,)


def test_publish_verify_merge_gives_the_same_steps(published, tmp_path: Path) -> None:
    trace, out, segment, sessions = published
    peer = new_trace(tmp_path / "b" / "trace.db")
    verified = verify_segment(segment.manifest_path, TRUSTED)
    assert (verified.node, verified.seq, verified.rows) == ("a", 1, 6)
    assert merge_segment(peer, verified) == 6
    source = [row for row in all_steps(trace) if row[1] in sessions]
    assert all_steps(peer) == source
    assert merge_segment(peer, verified) == 0
    assert all_steps(peer) == source


def test_publish_never_reuses_a_seq_found_in_its_folder(published, tmp_path: Path) -> None:
    """trace.db restored from before the last publish: the folder still knows seq 1."""
    trace, out, _, _ = published
    fresh = new_trace(tmp_path / "restored.db")
    record(fresh, "a", "g", "again")
    segment = publish(fresh, out, "a", KEYS["a"])
    assert segment is not None and (segment.seq, segment.first) == (2, 7)


# --- refusals: each names its reason, and nothing reaches the peer's trace.db --------------

def refused(manifest: Path, peer: Path, code: str) -> SegmentError:
    """The same refusal, and nothing merged, whether the check or the merge hashes the steps."""
    with pytest.raises(SegmentError) as info:
        receive(manifest, peer)
    with pytest.raises(SegmentError) as deferred:
        merge_segment(peer, verify_segment(manifest, TRUSTED, hash_steps=False))
    assert info.value.code == deferred.value.code == code
    assert str(info.value) == str(deferred.value)
    assert str(manifest.parent) in str(info.value)
    assert all_steps(peer) == []
    with closing(sqlite3.connect(peer)) as conn:
        assert conn.execute("SELECT count(*) FROM merged").fetchone()[0] == 0
    return info.value


@pytest.fixture
def peer(tmp_path: Path) -> Path:
    return new_trace(tmp_path / "peer" / "trace.db")


def test_truncated_segment_is_refused(published, peer: Path) -> None:
    _, _, segment, _ = published
    data = segment.db_path.read_bytes()
    segment.db_path.write_bytes(data[: len(data) // 2])
    refused(segment.manifest_path, peer, "sha_mismatch")


def test_corrupted_byte_is_refused(published, peer: Path) -> None:
    _, _, segment, _ = published
    data = bytearray(segment.db_path.read_bytes())
    data[len(data) - 100] ^= 0xFF
    segment.db_path.write_bytes(bytes(data))
    refused(segment.manifest_path, peer, "sha_mismatch")


def test_manifest_from_an_untrusted_node_is_refused(tmp_path: Path, peer: Path) -> None:
    trace = new_trace(tmp_path / "z.db")
    record(trace, "z", "g", "yes")
    segment = publish(trace, tmp_path / "z", "z", Ed25519PrivateKey.generate())
    assert segment is not None
    error = refused(segment.manifest_path, peer, "untrusted_node")
    assert "trusted.toml" in str(error)


def test_manifest_signed_by_an_unknown_key_is_refused(tmp_path: Path, peer: Path) -> None:
    trace = new_trace(tmp_path / "a.db")
    record(trace, "a", "g", "yes")
    segment = publish(trace, tmp_path / "a", "a", Ed25519PrivateKey.generate())
    assert segment is not None
    refused(segment.manifest_path, peer, "bad_signature")


def test_impersonation_is_refused(tmp_path: Path, peer: Path) -> None:
    """b signs a manifest that claims to be a's, over steps authored by a."""
    trace = new_trace(tmp_path / "a.db")
    record(trace, "a", "g", "yes")
    segment = publish(trace, tmp_path / "a", "a", KEYS["b"])
    assert segment is not None
    refused(segment.manifest_path, peer, "bad_signature")


def forge(segment_db: Path, manifest: Path, sql: str, *args: object) -> Path:
    """Change the segment, then give it a manifest a's real key signed: only rows can tell.
    Returns the manifest's path, renamed like the file when the row count changed."""
    conn = sqlite3.connect(segment_db)
    conn.execute(sql, args)
    conn.commit()
    rows = conn.execute("SELECT count(*) FROM steps").fetchone()[0]
    conn.close()
    first = json.loads(manifest.read_text())["first"]
    renamed = segment_db.with_name(segment_name(first, first + rows - 1) + ".db")
    segment_db.rename(renamed)
    resign(manifest, KEYS["a"], sha256=file_sha256(renamed), rows=rows,
           last=first + rows - 1, file=renamed.name)
    return manifest.rename(renamed.with_suffix(".json"))


def test_step_whose_hash_does_not_recompute_is_refused(published, peer: Path) -> None:
    _, _, segment, _ = published
    manifest = forge(segment.db_path, segment.manifest_path,
                     "UPDATE steps SET content = 'forged' WHERE kind = 'conclusion'")
    error = refused(manifest, peer, "bad_step_hash")
    assert "does not recompute" in str(error)


def test_step_authored_by_another_node_is_refused(published, peer: Path) -> None:
    _, _, segment, _ = published
    h = step_hash("s" * 32, "g", None, "b", "2026-11-25T08:00:00.000000Z", "question", "g")
    manifest = forge(segment.db_path, segment.manifest_path,
                     "INSERT INTO steps VALUES (?, ?, 'g', NULL, 'b', '2026-11-25T08:00:00.000000Z', "
                     "'question', 'g')", h, "s" * 32)
    refused(manifest, peer, "foreign_author")


def test_a_segment_changed_after_verification_brings_no_forged_step(published,
                                                                    peer: Path) -> None:
    _, _, segment, _ = published
    verified = verify_segment(segment.manifest_path, TRUSTED)
    with closing(sqlite3.connect(segment.db_path)) as conn:
        conn.execute("UPDATE steps SET content = 'forged' WHERE kind = 'conclusion'")
        conn.commit()
    assert merge_segment(peer, verified) == 4
    assert all(row[7] != "forged" for row in all_steps(peer))


def test_a_segment_changed_after_a_check_that_left_the_hashes_to_the_merge_is_refused_whole(
        published, peer: Path) -> None:
    _, _, segment, _ = published
    verified = verify_segment(segment.manifest_path, TRUSTED, hash_steps=False)
    with closing(sqlite3.connect(segment.db_path)) as conn:
        conn.execute("UPDATE steps SET content = 'forged' WHERE kind = 'conclusion'")
        conn.commit()
    with pytest.raises(SegmentError) as info:
        merge_segment(peer, verified)
    assert info.value.code == "bad_step_hash"
    assert all_steps(peer) == []


def test_segment_with_a_wrong_row_count_is_refused(published, peer: Path) -> None:
    _, _, segment, _ = published
    resign(segment.manifest_path, KEYS["a"], rows=5, last=5, file=segment_name(1, 5) + ".db")
    segment.db_path.rename(segment.db_path.with_name(segment_name(1, 5) + ".db"))
    manifest = segment.manifest_path.rename(segment.db_path.with_name(segment_name(1, 5) + ".json"))
    refused(manifest, peer, "row_count")


def test_segment_that_is_not_sqlite_is_refused(published, peer: Path) -> None:
    _, _, segment, _ = published
    segment.db_path.write_bytes(b"\x00garbage" * 512)
    resign(segment.manifest_path, KEYS["a"], sha256=file_sha256(segment.db_path))
    refused(segment.manifest_path, peer, "corrupt_db")


def test_segment_with_another_schema_is_refused(published, peer: Path) -> None:
    _, _, segment, _ = published
    manifest = forge(segment.db_path, segment.manifest_path, "ALTER TABLE steps ADD COLUMN extra TEXT")
    refused(manifest, peer, "bad_schema")


@pytest.mark.parametrize("extra", ["CREATE TABLE notes (x TEXT)",
                                   "CREATE VIEW v AS SELECT hash FROM steps",
                                   "CREATE TRIGGER t AFTER INSERT ON steps BEGIN SELECT 1; END",
                                   "CREATE INDEX steps_kind ON steps (kind)"])
def test_segment_with_extra_tables_views_triggers_or_indexes_is_refused(published, peer: Path,
                                                                      extra: str) -> None:
    """Finding 7: refused exactly as a snapshot with the same extras is."""
    _, _, segment, _ = published
    manifest = forge(segment.db_path, segment.manifest_path, extra)
    error = refused(manifest, peer, "bad_schema")
    assert "which a segment never carries" in str(error)


def test_missing_segment_file_means_wait(published, peer: Path) -> None:
    _, _, segment, _ = published
    segment.db_path.unlink()
    error = refused(segment.manifest_path, peer, "missing_file")
    assert "wait for Syncthing" in str(error)


def test_unreadable_manifest_is_refused(published, peer: Path) -> None:
    _, _, segment, _ = published
    segment.manifest_path.write_text('{"twinsync": 1, "node": "a"')
    refused(segment.manifest_path, peer, "bad_manifest")


def test_an_older_segment_arriving_late_is_merged_not_refused(published, peer: Path) -> None:
    """Finding 1: order is the merge plan's business; merge_segment fills the hole."""
    trace, out, first, _ = published
    record(trace, "a", "g", "later")
    second = publish(trace, out, "a", KEYS["a"])
    assert second is not None
    assert receive(second.manifest_path, peer) == 3
    assert receive(first.manifest_path, peer) == 6
    assert receive(second.manifest_path, peer) == 0 and receive(first.manifest_path, peer) == 0
    assert all_steps(peer) == all_steps_published(trace)


def all_steps_published(path: Path) -> list[tuple]:
    conn = connect(path)
    try:
        return conn.execute("SELECT * FROM steps WHERE session IN (SELECT session FROM sessions "
                            "WHERE status = 'published') ORDER BY hash").fetchall()
    finally:
        conn.close()


def test_same_seq_with_other_content_is_refused(published, peer: Path, tmp_path: Path) -> None:
    """Node a restored from an old copy and published a different seq 1 elsewhere."""
    _, _, first, _ = published
    other = new_trace(tmp_path / "other.db")
    record(other, "a", "g", "different")
    clash = publish(other, tmp_path / "elsewhere", "a", KEYS["a"])
    assert clash is not None and clash.seq == 1
    assert receive(first.manifest_path, peer) == 6
    before = all_steps(peer)
    with pytest.raises(SegmentError) as info:
        receive(clash.manifest_path, peer)
    assert info.value.code == "seq_reused"
    assert all_steps(peer) == before


# --- the union property ---------------------------------------------------------------------

SESSION = st.tuples(st.sampled_from(["g1", "g2"]), st.sampled_from(["yes", "no", "maybe"]),
                    st.integers(0, 2))
ROUNDS = st.lists(st.lists(SESSION, min_size=1, max_size=2), min_size=1, max_size=3)


def publish_plan(root: Path, plan: dict[str, list]) -> list[VerifiedSegment]:
    segments = []
    for node, rounds in plan.items():
        trace, clock = new_trace(root / f"{node}.db"), TickClock()
        for round_ in rounds:
            for goal, conclusion, extra in round_:
                record(trace, node, goal, conclusion, extra, clock=clock)
            segment = publish(trace, root / node, node, KEYS[node], clock=clock)
            assert segment is not None
            segments.append(verify_segment(segment.manifest_path, TRUSTED))
    return segments


def merge_order(data: st.DataObject, chosen: list[VerifiedSegment]) -> list[VerifiedSegment]:
    """Any interleaving of the nodes' streams (each kept in seq order), plus repeats anywhere."""
    shuffled = data.draw(st.permutations(chosen))
    streams = {node: sorted((s for s in chosen if s.node == node), key=lambda s: s.seq)
               for node in NODES}
    order = [streams[s.node].pop(0) for s in shuffled]
    for _ in range(data.draw(st.integers(0, 3)) if order else 0):
        i = data.draw(st.integers(0, len(order) - 1))
        order.insert(data.draw(st.integers(i + 1, len(order))), order[i])
    return order


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(plan=st.fixed_dictionaries({node: ROUNDS for node in NODES}), data=st.data())
def test_merging_is_a_union_in_any_order_with_repeats(plan, data) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        segments = publish_plan(root, plan)
        chosen = data.draw(st.lists(st.sampled_from(segments), unique=True))
        expected = sorted(row for s in chosen for row in _segment_rows(s.db_path))
        results = []
        for n in range(2):
            target = new_trace(root / f"target{n}.db")
            for segment in merge_order(data, chosen):
                merge_segment(target, segment)
            results.append(all_steps(target))
        assert results[0] == results[1] == expected


def _segment_rows(path: Path) -> list[tuple]:
    conn = sqlite3.connect(path)
    try:
        return conn.execute("SELECT * FROM steps").fetchall()
    finally:
        conn.close()


# --- forks, trace-consensus -----------------------------------------------------------------

def test_a_restored_node_that_went_on_makes_a_fork_every_peer_resolves_alike(
        tmp_path: Path) -> None:
    trace, out, clock = new_trace(tmp_path / "a.db"), tmp_path / "a", TickClock()
    with TraceDB(trace, "a", clock=clock) as tdb:
        session = tdb.start_session("g")
        fork_point = tdb.append(session, "observation", "x")
    snapshot = tmp_path / "snapshot.db"
    with sqlite3.connect(trace) as src, sqlite3.connect(snapshot) as dst:
        src.backup(dst)
    with TraceDB(trace, "a", clock=clock) as tdb:
        short = tdb.append(session, "inference", "short way")
        tdb.finish(session, "short answer")
    first = publish(trace, out, "a", KEYS["a"], clock=clock)
    with TraceDB(snapshot, "a", clock=clock) as tdb:
        long_ = tdb.append(session, "inference", "long way")
        tdb.append(session, "inference", "longer")
        tdb.finish(session, "long answer")
    second = publish(snapshot, out, "a", KEYS["a"], clock=clock)
    assert first is not None and second is not None and second.seq == 2

    peer = new_trace(tmp_path / "b.db")
    for segment in (first, second):
        receive(segment.manifest_path, peer)
    reordered = new_trace(tmp_path / "c.db")
    with closing(connect(reordered)) as conn:
        conn.execute("ATTACH DATABASE ? AS p", (str(peer),))
        conn.execute("INSERT INTO steps SELECT * FROM p.steps ORDER BY hash DESC")
    assert all_steps(reordered) == all_steps(peer)

    with closing(connect(peer)) as one, closing(connect(reordered)) as other:
        forks = detect_forks(one)
        assert forks == [Fork(session, fork_point, tuple(sorted((short, long_))))]
        assert detect_forks(other) == forks
        assert choose_branch(one, forks[0]) == choose_branch(other, forks[0]) == long_
        assert consensus(one, "g") == consensus(other, "g")
        assert consensus(one, "g").conclusion == "long answer"


def insert(conn: sqlite3.Connection, session: str, parent: str | None, author: str, ts: str,
           kind: str = "inference", content: str = "") -> str:
    h = step_hash(session, "g", parent, author, ts, kind, content)
    conn.execute("INSERT INTO steps VALUES (?, ?, 'g', ?, ?, ?, ?, ?)",
                 (h, session, parent, author, ts, kind, content))
    return h


def ts(n: int) -> str:
    return f"2026-11-25T08:00:{n:02d}.000000Z"


def test_choose_branch_prefers_more_authors_then_length_then_smallest_hash(
        tmp_path: Path) -> None:
    with closing(connect(new_trace(tmp_path / "t.db"))) as conn:
        check_branch_rule(conn)


def check_branch_rule(conn: sqlite3.Connection) -> None:
    root = insert(conn, "s", None, "a", ts(0), "question", "g")
    lonely = insert(conn, "s", root, "a", ts(1), content="long")
    insert(conn, "s", insert(conn, "s", lonely, "a", ts(2)), "a", ts(3))
    endorsed = insert(conn, "s", root, "a", ts(1), content="endorsed")
    insert(conn, "s", endorsed, "b", ts(2))
    assert choose_branch(conn, Fork("s", root, tuple(sorted((lonely, endorsed))))) == endorsed

    twin_one = insert(conn, "t", None, "a", ts(0), "question", "one")
    twin_two = insert(conn, "t", None, "a", ts(0), "question", "two")
    [fork] = [f for f in detect_forks(conn) if f.session == "t"]
    assert fork.parent is None and choose_branch(conn, fork) == min(twin_one, twin_two)

    tampered = insert(conn, "u", None, "a", ts(0), "question", "u")
    good = insert(conn, "u", tampered, "a", ts(1), content="good")
    bad = insert(conn, "u", tampered, "a", ts(1), content="bad")
    insert(conn, "u", bad, "a", ts(2))
    conn.execute("UPDATE steps SET content = 'edited' WHERE parent = ?", (bad,))
    insert(conn, "u", good, "a", ts(0))  # goes back in time: not part of a coherent chain
    assert choose_branch(conn, Fork("u", tampered, tuple(sorted((good, bad))))) == min(good, bad)


def test_consensus_counts_published_sessions_and_breaks_ties_by_hash(tmp_path: Path) -> None:
    peer = new_trace(tmp_path / "peer.db")
    with closing(connect(peer)) as conn:
        assert consensus(conn, "g") == Consensus("g", None, 0, 0, 0.0)
    for node, answers in (("a", ["42", "41"]), ("b", ["42"]), ("c", ["43"])):
        trace = new_trace(tmp_path / f"{node}.db")
        for answer in answers:
            record(trace, node, "g", answer)
        segment = publish(trace, tmp_path / node, node, KEYS[node])
        assert segment is not None
        receive(segment.manifest_path, peer)
    for _ in range(3):
        record(peer, "b", "g", "local shadow")  # finished here, not published: not counted
    with TraceDB(peer, "b") as tdb:
        assert consensus(tdb, "g") == Consensus("g", "42", 2, 4, 0.5)

    tie = new_trace(tmp_path / "tie.db")
    for node, answer in (("a", "left"), ("b", "right")):
        trace = new_trace(tmp_path / f"tie-{node}.db")
        record(trace, node, "h", answer)
        segment = publish(trace, tmp_path / f"tie-{node}", node, KEYS[node])
        assert segment is not None
        receive(segment.manifest_path, tie)
    with closing(connect(tie)) as conn:
        assert consensus(conn, "h").conclusion == min(("left", "right"), key=content_hash)


@pytest.mark.parametrize("created", ["soon", "", "2026-11-25T08:00:00Z", "2026-13-01T00:00:00.000000Z", 5])
def test_a_signed_manifest_whose_created_is_not_a_utc_time_is_refused(published, peer: Path,
                                                                      created: object) -> None:
    """Its node really signed it, but merge, latency and retention parse `created` later:
    the one manifest reader refuses it, so nothing is merged and nothing crashes after."""
    _, _, segment, _ = published
    resign(segment.manifest_path, KEYS["a"], created=created)
    error = refused(segment.manifest_path, peer, "bad_manifest")
    assert "created time" in str(error)


steps_graphs = st.lists(st.tuples(st.sampled_from(["s", "t", "u"]), st.sampled_from([None, 0, 1, 2, 3]),
                                  st.sampled_from(["g", "h"])), max_size=40)


@settings(max_examples=80, deadline=None)
@given(graph=steps_graphs, goal=st.sampled_from([None, "g", "h"]),
       sessions=st.sampled_from([None, set(), {"s"}, {"t", "u", "elsewhere"}]))
def test_forks_found_on_the_index_are_the_forks_of_every_step(tmp_path_factory, graph, goal, sessions):
    """detect_forks reads only the fork points' steps; the answer is exactly what grouping
    every step with its hash gives, NULL parents (a session's twin first steps) included,
    in a goal or in some sessions only."""
    path = new_trace(tmp_path_factory.mktemp("forks") / "t.db")
    with closing(connect(path)) as conn:
        hashes: list[str] = []
        for n, (session, parent, goal_of) in enumerate(graph):
            ref = hashes[parent] if parent is not None and parent < len(hashes) else None
            h = step_hash(session, goal_of, ref, "a", ts(n % 60), "inference", str(n))
            conn.execute("INSERT INTO steps VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                         (h, session, goal_of, ref, "a", ts(n % 60), "inference", str(n)))
            hashes.append(h)
        where, args = ("WHERE goal = ?", (goal,)) if goal is not None else ("", ())
        expected = sorted((Fork(session, parent, tuple(sorted(joined.split(" ")))) for session, parent, joined in
                           conn.execute(f"SELECT session, parent, group_concat(hash, ' ') FROM steps {where} "
                                        "GROUP BY session, parent HAVING count(*) > 1", args)),
                          key=lambda f: (f.session, f.parent or "", f.branches))
        if sessions is not None:
            expected = [f for f in expected if f.session in sessions]
        assert detect_forks(conn, goal, sessions) == expected
