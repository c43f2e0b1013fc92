"""The merge plan: contiguity per node, holes filled, nothing silent (issue 10 findings 1, 2).

Delivery is simulated the way Syncthing does it, in no particular order: each node
publishes into its own folder under `source`, and files are copied one by one into the
receiving node's recovery root.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import sqlite3
from contextlib import closing
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from folders.mergeplan import Bridge, Merge, Piece, Refuse, Survey, Wait, plan, survey
from folders.segments import Segment, merge_segment, publish, verify_segment
from folders.snapshots import make_snapshot
from folders.trace import TraceDB
from tests.unit.tracekit import TickClock, follow_plan, new_trace, node_keys

KEYS, TRUSTED = node_keys("a", "b", "c")


class Publisher:
    """Node b: records and publishes into its own folder, away from the receiver."""

    def __init__(self, tmp_path: Path, name: str = "b") -> None:
        self.name, self.clock = name, TickClock()
        self.trace = new_trace(tmp_path / f"home-{name}" / "trace.db")
        self.folder = tmp_path / "source" / name

    def publish(self, goal: str) -> Segment:
        with TraceDB(self.trace, self.name, clock=self.clock) as tdb:
            session = tdb.start_session(goal)
            tdb.append(session, "inference", f"thinking about {goal}")
            tdb.finish(session, f"{goal} done")
        segment = publish(self.trace, self.folder / "segments", self.name, KEYS[self.name],
                          clock=self.clock)
        assert segment is not None
        return segment

    def snapshot(self):
        return make_snapshot(self.trace, self.folder / "snapshots", self.name, KEYS[self.name],
                             clock=self.clock)

    def hashes(self) -> set[str]:
        with closing(sqlite3.connect(self.trace)) as conn:
            return {h for (h,) in conn.execute("SELECT hash FROM steps")}


def deliver(root: Path, node: str, *paths: Path) -> None:
    """Copy files into the receiver's folder of `node`, in the order given."""
    for path in paths:
        dest = root / node / path.parent.name / path.name
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, dest)


def pair(piece) -> tuple[Path, Path]:
    db = getattr(piece, "db_path", None) or piece.path
    return db, piece.manifest_path


def hashes(trace: Path) -> set[str]:
    with closing(sqlite3.connect(trace)) as conn:
        return {h for (h,) in conn.execute("SELECT hash FROM steps")}


def merged_seqs(trace: Path, node: str) -> list[int]:
    with closing(sqlite3.connect(trace)) as conn:
        return [s for (s,) in conn.execute("SELECT seq FROM merged WHERE node = ? ORDER BY seq",
                                           (node,))]


@pytest.fixture
def world(tmp_path: Path):
    a_trace = new_trace(tmp_path / "home-a" / "trace.db")
    return Publisher(tmp_path), a_trace, tmp_path / "a-recovery"


# --- finding 1: out-of-order delivery never loses a step -------------------------------------

def test_segment_arriving_after_a_later_one_and_a_snapshot_that_misses_it_is_merged(world):
    b, a_trace, root = world
    one = b.publish("g1")
    early = b.snapshot()  # covers seq 1 only
    two, three = b.publish("g2"), b.publish("g3")

    deliver(root, "b", *pair(three), *pair(early))
    done = follow_plan(root, a_trace, "a", TRUSTED)
    assert done == [("snapshot", "b", 1)]  # bridged seq 1; seq 3 waits for seq 2
    actions = plan(survey(root, a_trace, "a"))["b"]
    assert actions == [Wait("b", 2, actions[0].reason, (root / "b" / "segments" / three.manifest_path.name,))]
    assert "segment #2 of b has not arrived" in actions[0].reason

    deliver(root, "b", *pair(two))
    assert follow_plan(root, a_trace, "a", TRUSTED) == [("segment", "b", 2), ("segment", "b", 3)]
    assert b.hashes() <= hashes(a_trace)  # every published step of b, by hash
    assert merged_seqs(a_trace, "b") == [1, 2, 3]
    assert plan(survey(root, a_trace, "a")) == {}
    deliver(root, "b", *pair(one))  # late and already covered: nothing to do, nothing to say
    assert plan(survey(root, a_trace, "a")) == {}


def test_segment_with_an_unreadable_manifest_holds_the_next_one_until_it_is_fixed(world):
    b, a_trace, root = world
    one, two, three = b.publish("g1"), b.publish("g2"), b.publish("g3")
    deliver(root, "b", *pair(one), two.db_path, *pair(three))
    broken = root / "b" / "segments" / two.manifest_path.name
    broken.write_text("")  # half-arrived or damaged manifest of seq 2

    assert follow_plan(root, a_trace, "a", TRUSTED) == [("segment", "b", 1)]
    actions = plan(survey(root, a_trace, "a"))["b"]
    refused = [x for x in actions if isinstance(x, Refuse)]
    waits = [x for x in actions if isinstance(x, Wait)]
    assert [(r.path, r.code) for r in refused] == [(broken, "bad_manifest")] and "is empty" in refused[0].reason
    assert [(w.seq, w.files) for w in waits] == [(2, (root / "b" / "segments" / three.manifest_path.name,))]

    deliver(root, "b", two.manifest_path)  # the good manifest arrives
    assert follow_plan(root, a_trace, "a", TRUSTED) == [("segment", "b", 2), ("segment", "b", 3)]
    assert b.hashes() <= hashes(a_trace)


# --- heal what older versions lost ------------------------------------------------------------

@pytest.mark.parametrize("filler", ["segment", "snapshot"])
def test_a_hole_left_by_an_older_version_is_filled(world, filler: str):
    """trace.db merged b's seq 1 and 3 but skipped 2 (the old high-water mark did that)."""
    b, a_trace, root = world
    one, two, three = b.publish("g1"), b.publish("g2"), b.publish("g3")
    for segment in (one, three):
        merge_segment(a_trace, verify_segment(segment.manifest_path, TRUSTED))
    assert merged_seqs(a_trace, "b") == [1, 3] and not b.hashes() <= hashes(a_trace)

    deliver(root, "b", *pair(one), *pair(three))
    if filler == "segment":
        deliver(root, "b", *pair(two))
        expected = [("segment", "b", 2)]
    else:
        deliver(root, "b", *pair(b.snapshot()))  # segment 2 was pruned; a snapshot covers it
        expected = [("snapshot", "b", 3)]
    assert follow_plan(root, a_trace, "a", TRUSTED) == expected
    assert b.hashes() <= hashes(a_trace)
    assert merged_seqs(a_trace, "b") == [1, 2, 3]


# --- finding 2: every bad file is reported with its reason ------------------------------------

def test_every_bad_file_in_a_peer_folder_is_waiting_or_refused(world, tmp_path: Path):
    b, a_trace, root = world
    segs = [b.publish(f"g{i}") for i in range(1, 10)]
    seg_dir = root / "b" / "segments"
    deliver(root, "b", *pair(segs[0]))
    cases = {}

    def manifest(i: int, content: bytes | None = None) -> Path:
        path = seg_dir / segs[i].manifest_path.name
        deliver(root, "b", segs[i].db_path)
        if content is None:
            deliver(root, "b", segs[i].manifest_path)
        else:
            path.write_bytes(content)
        return path

    cases[manifest(1, b"")] = ("refused", "is empty")
    cases[manifest(2, b'{"twinsync": 1,')] = ("refused", "cannot be read as JSON")
    cases[manifest(3, b" " * (65 * 1024))] = ("refused", "too large to be a manifest")
    directory = seg_dir / segs[4].manifest_path.name
    directory.mkdir()
    cases[directory] = ("refused", "is a directory")
    fifo = seg_dir / segs[5].db_path.name
    os.mkfifo(fifo)
    deliver(root, "b", segs[5].manifest_path)
    cases[fifo] = ("refused", "is a FIFO")
    link = seg_dir / segs[6].db_path.name
    link.symlink_to(segs[6].db_path)
    deliver(root, "b", segs[6].manifest_path)
    cases[link] = ("refused", "is a symbolic link")
    forged = manifest(7)
    data = json.loads(forged.read_text())
    data["created"] = "2026-01-01T00:00:00.000000Z"
    forged.write_text(json.dumps(data))
    cases[seg_dir / segs[8].manifest_path.name] = ("waiting", "has not arrived yet")
    deliver(root, "b", segs[8].manifest_path)  # manifest without its .db
    orphan = seg_dir / "seg-00000100-00000102.db"
    orphan.write_bytes(b"x")
    cases[orphan] = ("waiting", "waits for its manifest")
    stray = seg_dir / "notes.txt"
    stray.write_text("hi")
    cases[stray] = ("refused", "is not a segment file")

    done = follow_plan(root, a_trace, "a", TRUSTED)  # never blocks on the FIFO
    assert done == [("segment", "b", 1)]
    failed = {forged: ("bad_signature", "signature does not verify")}
    actions = plan(survey(root, a_trace, "a"), failed)["b"]
    said = {}
    for action in actions:
        if isinstance(action, Refuse):
            said[action.path] = ("refused", action.reason)
        elif isinstance(action, Wait):
            for path in action.files:
                said.setdefault(path, ("waiting", action.reason))
    for path, (kind, words) in cases.items():
        assert path in said, f"{path.name} was not reported"
        assert said[path][0] == kind and words in said[path][1], (path.name, said[path])
    assert said[forged][0] == "refused"
    gap = [a for a in actions if isinstance(a, Wait) and a.seq is not None]
    assert [g.seq for g in gap] == [2]


# --- the pure planner, over shuffled arrivals -------------------------------------------------

def _piece(kind: str, seq: int, ready: bool = True) -> Piece:
    name = f"seg-{seq:08d}-{seq:08d}" if kind == "segment" else f"snap-2026{seq:04d}T000000000000Z"
    folder = Path("/r/b") / ("segments" if kind == "segment" else "snapshots")
    return Piece(kind, "b", seq, f"{seq:064x}", f"2026-11-25T08:00:{seq % 60:02d}.000000Z",
                 folder / f"{name}.json", folder / f"{name}.db", None if ready else "is missing")


def _run(pieces: list[Piece], held: dict[int, str]) -> list:
    """Execute the plan on `held` as the executor would; checks contiguity on the way."""
    actions = plan(Survey("a", tuple(pieces), held={"b": held})).get("b", [])
    for action in actions:
        if isinstance(action, Merge):
            seq = action.segment.seq
            assert seq == 1 or seq - 1 in held, f"seq {seq} merged before {seq - 1}"
            assert action.segment.db_problem is None
            held[seq] = action.segment.sha256
        elif isinstance(action, Bridge):
            assert action.gap == 1 or action.gap - 1 in held
            for seq in range(1, action.snapshot.seq + 1):
                held.setdefault(seq, "snapshot:x")
    return actions


@settings(max_examples=300, deadline=None)
@given(n=st.integers(1, 12), data=st.data())
def test_plan_merges_every_seq_in_order_whatever_the_arrival_order(n: int, data) -> None:
    snaps = data.draw(st.lists(st.integers(1, n), max_size=3))
    pruned = set(data.draw(st.lists(st.integers(1, n), max_size=n)))
    # a pruned segment is always covered by some snapshot, as prune keeps it so
    pruned = {s for s in pruned if any(x >= s for x in snaps)}
    everything = [_piece("segment", s) for s in range(1, n + 1) if s not in pruned]
    everything += [_piece("snapshot", s) for s in snaps]
    order = data.draw(st.permutations(everything))
    dupes = data.draw(st.lists(st.sampled_from(everything), max_size=3)) if everything else []
    arrivals = list(order) + dupes
    held: dict[int, str] = {}
    present: list[Piece] = []
    rng = random.Random(data.draw(st.integers(0, 2**16)))
    for piece in arrivals:
        # sometimes the manifest comes first and the .db a moment later
        if rng.random() < 0.3:
            present.append(_piece(piece.kind, piece.seq, ready=False))
            _run(present, held)
            present.pop()
        present.append(piece)
        _run(present, held)
    for _ in range(2):  # merging by the plan again changes nothing
        _run(present, held)
    assert set(range(1, n + 1)) <= set(held)
    assert plan(Survey("a", tuple(present), held={"b": held})) == {}


def test_a_link_where_a_node_folder_belongs_is_refused_not_followed(world, tmp_path: Path):
    b, a_trace, root = world
    deliver(root, "b", *pair(b.publish("g1")))
    root.joinpath("c").symlink_to(root / "b")
    actions = plan(survey(root, a_trace, "a"))
    assert [(a.code, "is a symbolic link" in a.reason) for a in actions["c"]] == [("not_a_folder", True)]
    assert [type(a) for a in actions["b"]] == [Merge]


def test_a_snapshot_claiming_a_huge_seq_costs_no_memory_in_the_plan() -> None:
    snapshot = _piece("snapshot", 10**12)
    actions = plan(Survey("a", (snapshot, _piece("segment", 1)), held={"b": {}}))["b"]
    assert actions == [Merge(_piece("segment", 1)), Bridge(snapshot, 2)]
