"""A merged trace does not depend on how its steps were checked.

The daemon verifies a segment without rehashing it and leaves the hashes to the union
(`hash_steps=False`, one pass, beside the INSERT, with the merge's own page cache). That
must give exactly what the full check followed by the union gives, and what a plain model
of the rules gives: the same steps in the same order (rowid), the same hashes, the same
`merged` rows and the same refusals, on generated segments merged in any order with
repeats, republished (overlapping), truncated, re-signed over hostile rows, and reusing a
seq with other content.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from contextlib import closing
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from folders.manifest import SegmentError
from folders.segments import merge_segment, publish, verify_segment
from folders.trace import STEP_COLUMNS, TraceDB, connect, step_hash
from tests.unit.tracekit import TickClock, new_trace, node_keys, resign

KEYS, TRUSTED = node_keys("a")
ROOT = Path(__file__).resolve().parents[2]

#: What is done to a published segment before it is merged, and the refusal it must earn
#: (None: none). Hostile rows come with a manifest a's real key signed, so only the rows
#: can tell.
MUTATIONS = {
    "none": None,
    "bad_hash": "bad_step_hash",       # a step's content edited, its hash kept
    "wrong_type": "bad_step_hash",     # a step's content stored as an integer
    "foreign": "foreign_author",       # a step of node b, with a hash that recomputes
    "row_count": "row_count",          # a step deleted, the manifest still counts it
    "truncated": "sha_mismatch",       # cut in half in transit
    "truncated_signed": "corrupt_db",  # cut in half, then signed
    "seq_reused": None,                # signed again under seq 1: refused after seq 1
}
SESSIONS = st.lists(st.tuples(st.sampled_from(["g1", "g2"]), st.sampled_from(["yes", "no"]),
                              st.integers(0, 3)), min_size=1, max_size=3)


def record(trace: Path, clock: TickClock, goal: str, conclusion: str, extra: int) -> None:
    with TraceDB(trace, "a", clock=clock) as tdb:
        session = tdb.start_session(goal)
        for i in range(extra):
            tdb.append(session, "inference", f"step {i} toward {conclusion}")
        tdb.finish(session, conclusion)


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def mutate(manifest: Path, mutation: str) -> None:
    """Do `mutation` to the segment of `manifest`, in place."""
    db = manifest.with_suffix(".db")
    if mutation in ("truncated", "truncated_signed"):
        data = db.read_bytes()
        db.write_bytes(data[:len(data) // 2])
        if mutation == "truncated_signed":
            resign(manifest, KEYS["a"], sha256=sha256_of(db))
        return
    if mutation == "seq_reused":
        resign(manifest, KEYS["a"], seq=1)
        return
    sql = {
        "bad_hash": "UPDATE steps SET content = 'forged' WHERE rowid = (SELECT max(rowid) FROM steps)",
        "wrong_type": "UPDATE steps SET content = 7 WHERE rowid = (SELECT min(rowid) FROM steps)",
        "row_count": "DELETE FROM steps WHERE rowid = (SELECT max(rowid) FROM steps)",
    }.get(mutation)
    with closing(sqlite3.connect(db)) as conn:
        if mutation == "foreign":
            ts, session = "2026-11-25T08:00:00.000000Z", "f" * 32
            conn.execute("UPDATE steps SET hash = ?, author = 'b', session = ?, parent = NULL, ts = ?, "
                         "goal = 'g', kind = 'question', content = 'g' "
                         "WHERE rowid = (SELECT max(rowid) FROM steps)",
                         (step_hash(session, "g", None, "b", ts, "question", "g"), session, ts))
        elif sql:
            conn.execute(sql)
        conn.commit()
    if mutation != "none":
        resign(manifest, KEYS["a"], sha256=sha256_of(db))


def build(root: Path, rounds: list[list], mutations: list[str], republish: list[bool]) -> list[Path]:
    """Node a publishes `rounds` with the real `publish` (after a round marked in
    `republish`, its sessions are marked finished again, as a crash before the mark leaves
    them, so the next segment repeats their steps); then each segment gets its mutation."""
    trace, clock, out = new_trace(root / "a.db"), TickClock(), root / "segments"
    manifests = []
    for sessions, again in zip(rounds, republish):
        for goal, conclusion, extra in sessions:
            record(trace, clock, goal, conclusion, extra)
        segment = publish(trace, out, "a", KEYS["a"], clock=clock)
        assert segment is not None
        manifests.append(segment.manifest_path)
        if again:
            with closing(connect(trace)) as conn:
                conn.execute("UPDATE sessions SET status = 'finished' WHERE status = 'published'")
    for manifest, mutation in zip(manifests, mutations):
        mutate(manifest, mutation)
    return manifests


def merged_by_us(target: Path, order: list[Path], hash_steps: bool) -> tuple[list, list, list]:
    """Merge `order` into `target` (made if missing); each outcome, then `contents`."""
    new_trace(target)
    outcomes = []
    for manifest in order:
        try:
            outcomes.append(("merged", merge_segment(target, verify_segment(manifest, TRUSTED,
                                                                            hash_steps=hash_steps))))
        except SegmentError as exc:
            outcomes.append(("refused", exc.code))
    return (outcomes, *contents(target))


def contents(target: Path) -> tuple[list, list]:
    """trace.db's steps by rowid and its `merged` rows (without the time of merging)."""
    with closing(connect(target)) as conn:
        steps = conn.execute(f"SELECT rowid, {', '.join(STEP_COLUMNS)} FROM steps ORDER BY rowid").fetchall()
        merged = conn.execute("SELECT node, seq, sha256, rows FROM merged ORDER BY node, seq").fetchall()
    return steps, merged


def merged_by_model(order: list[Path], expected: dict[Path, str | None],
                    hash_steps: bool) -> tuple[list, list, list]:
    """The rules, written plainly: a file that fails its checks is refused whole; a (node,
    seq) merged before is a no-op with the same file and refused with another; otherwise
    every step not held yet is appended, in the file's order. Without `hash_steps` a step
    whose hash does not recompute is found by the union, after the look at `merged`."""
    outcomes, held, merged = [], {}, {}
    for manifest in order:
        problem = expected[manifest]
        late = not hash_steps and problem == "bad_step_hash"
        if problem is not None and not late:
            outcomes.append(("refused", problem))
            continue
        signed = json.loads(manifest.read_text())
        key = (signed["node"], signed["seq"])
        if key in merged:
            outcomes.append(("merged", 0) if merged[key][0] == signed["sha256"]
                            else ("refused", "seq_reused"))
            continue
        if late:
            outcomes.append(("refused", problem))
            continue
        with closing(sqlite3.connect(manifest.with_suffix(".db"))) as conn:
            rows = conn.execute(f"SELECT {', '.join(STEP_COLUMNS)} FROM steps ORDER BY rowid").fetchall()
        assert all(step_hash(*row[1:]) == row[0] for row in rows)
        new = [row for row in rows if row[0] not in held]
        held.update((row[0], row) for row in new)
        merged[key] = (signed["sha256"], len(new))
        outcomes.append(("merged", len(new)))
    steps = [(rowid, *row) for rowid, row in enumerate(held.values(), start=1)]
    return outcomes, steps, [(*key, sha, rows) for key, (sha, rows) in sorted(merged.items())]


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rounds=st.lists(SESSIONS, min_size=1, max_size=4), data=st.data())
def test_the_daemons_merge_gives_what_the_full_check_and_the_rules_give(rounds, data) -> None:
    n = len(rounds)
    mutations = data.draw(st.lists(st.sampled_from(sorted(MUTATIONS)), min_size=n, max_size=n))
    mutations[0] = "none" if mutations[0] == "seq_reused" else mutations[0]
    republish = data.draw(st.lists(st.booleans(), min_size=n, max_size=n))
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        manifests = build(root, rounds, mutations, republish)
        expected = {m: MUTATIONS[mutation] for m, mutation in zip(manifests, mutations)}
        order = data.draw(st.lists(st.sampled_from(manifests), min_size=1, max_size=2 * n + 2))
        for hash_steps in (False, True):
            assert (merged_by_us(root / f"{hash_steps}.db", order, hash_steps)
                    == merged_by_model(order, expected, hash_steps))


MERGER = r"""
import json, sys
from pathlib import Path
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from folders.segments import merge_segment, verify_segment
spec = json.loads(sys.argv[1])
trusted = {"a": load_pem_public_key(spec["key"].encode())}
print(json.dumps([merge_segment(Path(spec["target"]), verify_segment(Path(m), trusted, hash_steps=False))
                  for m in spec["manifests"]]))
"""


def start_merger(target: Path, manifests: list[Path]) -> subprocess.Popen:
    key = TRUSTED["a"].public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo).decode()
    spec = {"target": str(target), "manifests": [str(m) for m in manifests], "key": key}
    return subprocess.Popen([sys.executable, "-c", MERGER, json.dumps(spec)], cwd=ROOT,
                            env={**os.environ, "PYTHONPATH": str(ROOT)},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.fixture
def many(tmp_path: Path) -> list[Path]:
    """Five segments of node a, each of 15 sessions of 6 steps."""
    rounds = [[("g1" if i % 2 else "g2", "yes" if i % 3 else "no", 4) for i in range(15)]] * 5
    return build(tmp_path, rounds, ["none"] * 5, [False] * 5)


def test_two_processes_merging_at_once_give_the_trace_one_merge_gives(many, tmp_path: Path) -> None:
    alone = merged_by_us(tmp_path / "alone.db", many, hash_steps=False)
    target = new_trace(tmp_path / "shared.db")
    procs = [start_merger(target, many) for _ in range(2)]
    results = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err for _, err in results]
    inserted = [json.loads(out) for out, _ in results]
    assert [a + b for a, b in zip(*inserted)] == [n for _, n in alone[0]], "each step inserted once"
    assert contents(target) == alone[1:]


def test_a_merge_killed_mid_way_leaves_a_trace_the_next_merge_completes(many, tmp_path: Path) -> None:
    alone = merged_by_us(tmp_path / "alone.db", many, hash_steps=False)
    target = new_trace(tmp_path / "killed.db")
    proc = start_merger(target, many)
    deadline = time.monotonic() + 60
    with closing(connect(target)) as watch:  # kill as soon as the first steps are committed
        while not watch.execute("SELECT count(*) FROM steps").fetchone()[0] and proc.poll() is None:
            assert time.monotonic() < deadline, "the merge never committed a step"
            time.sleep(0.001)
    proc.kill()  # SIGKILL: no rollback, no close; only the WAL tells what was committed
    proc.communicate()
    assert proc.returncode == -signal.SIGKILL, "killed before it had merged everything"
    with closing(sqlite3.connect(target)) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    outcomes, *again = merged_by_us(target, many, hash_steps=False)
    assert all(outcome == "merged" for outcome, _ in outcomes)
    assert again == list(alone[1:])
