"""Seed metrics on real trace.dbs: convergence, routes, conflict rate, access time, roots."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from folders.metrics import (
    SEED_THRESHOLDS,
    Metrics,
    MetricsError,
    Threshold,
    compute_metrics,
    frames_root,
    p95,
    sample_goals,
    time_queries,
)
from folders.consensus import RETALLY_SHARE, GoalTally, consensus, tally_goals, update_tallies
from folders.forks import detect_forks
from folders.segments import merge_segment, publish, verify_segment
from folders.trace import TraceDB, connect, content_hash, step_hash
from tests.unit.tracekit import TickClock, TraceChanges, new_trace, node_keys, trace_changes

NODES = ("a", "b", "c")
KEYS, TRUSTED = node_keys(*NODES)
NO_FRAMES = {"frames_total": 0, "frames_in_conflict": 0, "frames_invalid": 0,
             "frames_disagreeing": 0}


def record(path: Path, author: str, goal: str, conclusion: str | None, clock: TickClock) -> str:
    """One session of two steps and, unless `conclusion` is None, a conclusion."""
    with TraceDB(path, author, clock=clock) as tdb:
        session = tdb.start_session(goal)
        tdb.append(session, "inference", f"toward {conclusion}")
        if conclusion is not None:
            tdb.finish(session, conclusion)
    return session


def publish_and_merge(node: str, trace: Path, out: Path, into: list[Path]) -> None:
    segment = publish(trace, out, node, KEYS[node], clock=TickClock())
    assert segment is not None
    for peer in into:
        merge_segment(peer, verify_segment(segment.manifest_path, TRUSTED))


@pytest.fixture(scope="module")
def network_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Node a's trace.db after merging b's and c's segments, with a's own shadows.

    Goal "g": 10 published sessions, 9 conclude "42" and 1 "41" (a: 4, b: 3, c: 3).
    Goal "h": 2 published sessions that disagree, "x" and "y".
    Shadows on a, never counted: 2 finished-unpublished sessions of "g" concluding "0",
    1 open session of "g", and one of goal "shadow-only".
    """
    root = tmp_path_factory.mktemp("network")
    traces = {n: new_trace(root / n / "trace.db") for n in NODES}
    clock = TickClock()
    plan = {"a": [("g", "42")] * 4 + [("h", "x")],
            "b": [("g", "42")] * 3 + [("h", "y")],
            "c": [("g", "42")] * 2 + [("g", "41")]}
    for node, sessions in plan.items():
        for goal, answer in sessions:
            record(traces[node], node, goal, answer, clock)
    for node in ("b", "c"):
        publish_and_merge(node, traces[node], root / node / "out", [traces["a"]])
    segment = publish(traces["a"], root / "a" / "out", "a", KEYS["a"], clock=TickClock())
    assert segment is not None and len(segment.sessions) == 5
    record(traces["a"], "a", "g", "0", clock)
    record(traces["a"], "a", "g", "0", clock)
    record(traces["a"], "a", "g", None, clock)
    record(traces["a"], "a", "shadow-only", "z", clock)
    return traces["a"]


@pytest.fixture
def network(network_db: Path, tmp_path: Path) -> Path:
    """A private copy, so a test may change it."""
    copy = tmp_path / "a.db"
    with closing(sqlite3.connect(network_db)) as src, closing(sqlite3.connect(copy)) as dst:
        src.backup(dst)
    return copy


def test_convergence_routes_and_conflict_rate_on_a_merged_trace(network: Path) -> None:
    m = compute_metrics(network, frames_total=100, frames_in_conflict=2, frames_invalid=1,
                        frames_disagreeing=1)
    # g: 9 of 10 agree with "42"; h: a tie, so one of its 2 sessions agrees.
    assert (m.converged, m.concluded) == (10, 12)
    assert m.convergence == pytest.approx(10 / 12)
    assert (m.goals, m.routes, m.min_routes) == (2, 12, 2)
    assert m.routes_per_goal == 6.0
    assert m.conflict_rate == pytest.approx(0.04)
    assert m.access_samples == 3 and m.access_p95_ms is not None and m.access_p95_ms > 0
    assert m.meets() == {"convergence": False, "conflict_rate": True, "access_p95_ms": True,
                         "routes_per_goal": True}


def test_nine_of_ten_sessions_agreeing_is_ninety_percent(network: Path) -> None:
    with closing(connect(network)) as conn:
        tallies = tally_goals(conn)
        assert tallies["g"] == GoalTally("g", "42", 9, 10, 10)
        assert tallies["h"] == GoalTally("h", min("x", "y", key=content_hash), 1, 2, 2)
        assert set(tallies) == {"g", "h"}  # "shadow-only" has no published session
        for goal, tally in tallies.items():
            c = consensus(conn, goal)
            assert (c.conclusion, c.supporters, c.routes) == (
                tally.conclusion, tally.supporters, tally.routes)
        conn.execute("DELETE FROM steps WHERE goal = 'h'")
        m = compute_metrics(conn, **NO_FRAMES)
        assert m.convergence == pytest.approx(0.9)
        assert m.meets()["convergence"] is True
        assert (m.routes_per_goal, m.min_routes) == (10.0, 10)


def test_compute_metrics_accepts_a_tracedb_a_connection_or_a_path(network: Path) -> None:
    by_path = compute_metrics(network, **NO_FRAMES)
    with closing(connect(network)) as conn:
        by_conn = compute_metrics(conn, **NO_FRAMES)
    with TraceDB(network, "a") as tdb:
        by_db = compute_metrics(tdb, **NO_FRAMES)
    assert len({(m.convergence, m.concluded, m.routes, m.goals, m.access_samples)
                for m in (by_path, by_conn, by_db)}) == 1


def test_everything_is_none_on_an_empty_node(tmp_path: Path) -> None:
    m = compute_metrics(new_trace(tmp_path / "t.db"), **NO_FRAMES)
    assert m.summary() == {"convergence": None, "conflict_rate": None, "access_p95_ms": None,
                           "routes_per_goal": None}
    assert (m.min_routes, m.goals, m.routes, m.concluded, m.access_samples) == (None, 0, 0, 0, 0)
    assert m.meets() == dict.fromkeys(SEED_THRESHOLDS, False)


def test_shadows_alone_give_no_convergence_but_can_be_queried(tmp_path: Path) -> None:
    trace = new_trace(tmp_path / "t.db")
    record(trace, "a", "g", "42", TickClock())
    m = compute_metrics(trace, **NO_FRAMES)
    assert (m.convergence, m.routes_per_goal, m.goals) == (None, None, 0)
    assert m.access_samples == 1


def metrics_with(**values: float) -> Metrics:
    base = dict(convergence=None, converged=0, concluded=0, conflict_rate=None, frames_total=0,
                frames_in_conflict=0, frames_invalid=0, frames_disagreeing=0,
                access_p95_ms=None, access_samples=0, routes_per_goal=None, min_routes=None,
                goals=0, routes=0)
    return Metrics(**{**base, **values})


def test_meets_knows_which_way_each_threshold_points() -> None:
    at_limits = metrics_with(convergence=0.90, conflict_rate=0.05, access_p95_ms=200.0,
                             routes_per_goal=3.0)
    assert at_limits.meets() == dict.fromkeys(SEED_THRESHOLDS, True)
    past = metrics_with(convergence=0.899, conflict_rate=0.051, access_p95_ms=200.1,
                        routes_per_goal=2.99)
    assert past.meets() == dict.fromkeys(SEED_THRESHOLDS, False)
    better = metrics_with(convergence=1.0, conflict_rate=0.0, access_p95_ms=0.5,
                          routes_per_goal=7.0)
    assert better.meets() == dict.fromkeys(SEED_THRESHOLDS, True)
    assert better.meets({"convergence": Threshold(">=", 1.0)}) == {"convergence": True}
    with pytest.raises(MetricsError, match="unknown metrics"):
        better.meets({"latency": Threshold("<=", 1.0)})
    assert {n: (t.op, t.limit) for n, t in SEED_THRESHOLDS.items()} == {
        "convergence": (">=", 0.90), "conflict_rate": ("<=", 0.05),
        "access_p95_ms": ("<=", 200.0), "routes_per_goal": (">=", 3.0)}


def test_conflict_rate_counts_all_three_kinds_and_is_capped(tmp_path: Path) -> None:
    trace = new_trace(tmp_path / "t.db")
    m = compute_metrics(trace, frames_total=40, frames_in_conflict=1, frames_invalid=2,
                        frames_disagreeing=3)
    assert m.conflict_rate == pytest.approx(6 / 40)
    assert (m.frames_total, m.frames_in_conflict, m.frames_invalid, m.frames_disagreeing) == (
        40, 1, 2, 3)
    assert compute_metrics(trace, frames_total=2, frames_in_conflict=2, frames_invalid=2,
                           frames_disagreeing=0).conflict_rate == 1.0
    with pytest.raises(MetricsError, match="frames_invalid=-1"):
        compute_metrics(trace, frames_total=2, frames_in_conflict=0, frames_invalid=-1,
                        frames_disagreeing=0)


def test_access_time_runs_tracedb_query_for_a_deterministic_sample(network: Path) -> None:
    ticks = iter(range(1000))
    fake = lambda: next(ticks) * 0.004  # noqa: E731 — every query takes exactly 4 ms
    with closing(connect(network)) as conn:
        assert compute_metrics(conn, **NO_FRAMES, clock=fake).access_p95_ms == pytest.approx(4.0)
        assert sample_goals(conn, 2) == sorted(["g", "h", "shadow-only"], key=content_hash)[:2]
        assert sample_goals(conn, 0) == []
        assert compute_metrics(conn, **NO_FRAMES, query_sample=0).access_p95_ms is None
        assert len(time_queries(conn, ["g", "h"])) == 2
    with TraceDB(network, "a") as tdb:
        assert all(t > 0 for t in time_queries(tdb, ["g"]))


def test_p95_is_nearest_rank() -> None:
    assert p95([]) is None
    assert p95([3.0]) == 3.0
    assert p95(range(1, 21)) == 19
    assert p95(range(1, 101)) == 95
    assert p95([5.0, 1.0]) == 5.0


# --- tally_goals is consensus for every goal -----------------------------------------------

def test_tally_follows_choose_branch_through_a_fork(tmp_path: Path) -> None:
    """A node restored from an old snapshot went on: both ends arrive at a peer."""
    trace, out, clock = new_trace(tmp_path / "a.db"), tmp_path / "a", TickClock()
    with TraceDB(trace, "a", clock=clock) as tdb:
        session = tdb.start_session("g")
        tdb.append(session, "observation", "x")
    snapshot = tmp_path / "snapshot.db"
    with closing(sqlite3.connect(trace)) as src, closing(sqlite3.connect(snapshot)) as dst:
        src.backup(dst)
    with TraceDB(trace, "a", clock=clock) as tdb:
        tdb.append(session, "inference", "short way")
        tdb.finish(session, "short answer")
    record(trace, "a", "g", "short answer", clock)
    first = publish(trace, out, "a", KEYS["a"], clock=clock)
    with TraceDB(snapshot, "a", clock=clock) as tdb:
        tdb.append(session, "inference", "long way")
        tdb.append(session, "inference", "longer")
        tdb.finish(session, "long answer")
    second = publish(snapshot, out, "a", KEYS["a"], clock=clock)
    peer = new_trace(tmp_path / "b.db")
    for segment in (first, second):
        assert segment is not None
        merge_segment(peer, verify_segment(segment.manifest_path, TRUSTED))
    with closing(connect(peer)) as conn:
        c = consensus(conn, "g")
        assert tally_goals(conn)["g"] == GoalTally("g", c.conclusion, c.supporters, 2, c.routes)
        assert c.conclusion == min(("long answer", "short answer"), key=content_hash)


def test_a_chain_with_a_gap_counts_its_newest_conclusion(tmp_path: Path) -> None:
    with closing(connect(new_trace(tmp_path / "t.db"))) as conn:
        def put(parent: str | None, second: int, kind: str, content: str) -> str:
            ts = f"2026-11-25T08:00:{second:02d}.000000Z"
            h = step_hash("s", "g", parent, "b", ts, kind, content)
            conn.execute("INSERT INTO steps VALUES (?, 's', 'g', ?, 'b', ?, ?, ?)",
                         (h, parent, ts, kind, content))
            return h
        put(put(None, 0, "question", "g"), 1, "conclusion", "older")
        put("sha256:" + "0" * 64, 3, "conclusion", "newer")  # its parent never arrived
        put("sha256:" + "1" * 64, 2, "conclusion", "middle")
        assert tally_goals(conn)["g"] == GoalTally("g", "newer", 1, 1, 1)


GOALS = ("g", "h")
step_plans = st.lists(
    st.tuples(st.integers(0, 3),            # session
              st.sampled_from(GOALS),       # goal (a session may mix them)
              st.integers(0, 6),            # parent: index into the session's steps, or root
              st.sampled_from(("a", "b")),  # author
              st.booleans(),                # conclusion?
              st.sampled_from(("yes", "no", "maybe"))),
    max_size=18)
statuses = st.lists(st.sampled_from((None, "open", "finished", "published")), min_size=4,
                    max_size=4)


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return new_trace(tmp_path_factory.mktemp("scratch") / "t.db")


@settings(max_examples=200, deadline=None)
@given(plan=step_plans, status=statuses)
def test_tally_goals_equals_consensus_for_every_goal(scratch: Path, plan, status) -> None:
    with closing(connect(scratch)) as conn:
        conn.execute("DELETE FROM steps")
        conn.execute("DELETE FROM sessions")
        made: dict[str, list[str]] = {}
        for n, (s, goal, parent_at, author, concludes, content) in enumerate(plan):
            session = f"s{s}"
            earlier = made.setdefault(session, [])
            parent = earlier[parent_at] if parent_at < len(earlier) else None
            kind = "conclusion" if concludes else "inference"
            ts = f"2026-11-25T08:00:{n:02d}.000000Z"
            h = step_hash(session, goal, parent, author, ts, kind, content)
            conn.execute("INSERT INTO steps VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                         (h, session, goal, parent, author, ts, kind, content))
            earlier.append(h)
        for s, state in enumerate(status):
            if state is not None:
                conn.execute("INSERT INTO sessions (session, goal, author, status, head, "
                             "started) VALUES (?, 'g', 'a', ?, 'x', 'x')", (f"s{s}", state))
        tallies = tally_goals(conn)
        event(f"forks: {bool(detect_forks(conn))}, goals concluded: "
              f"{sum(t.concluded > 0 for t in tallies.values())}")
        for goal in GOALS:
            c = consensus(conn, goal)
            if c.routes == 0:
                assert goal not in tallies
                continue
            t = tallies[goal]
            assert (t.conclusion, t.supporters, t.routes) == (
                c.conclusion, c.supporters, c.routes)
            assert t.supporters <= t.concluded <= t.routes
            assert (t.concluded == 0) == (c.conclusion is None)


@settings(max_examples=150, deadline=None)
@given(plan=trace_changes, share=st.sampled_from((1.0, RETALLY_SHARE)))
def test_tallies_brought_up_to_date_equal_tallies_taken_whole(scratch: Path, plan, share) -> None:
    """After any run of merges (new steps in old and new sessions, forks, conclusions),
    sessions changing between published and not, and steps removed (a replaced trace.db),
    the book's tallies are what tallying every step gives."""
    with closing(connect(scratch)) as conn:
        changes, book = TraceChanges(conn), None
        for batch in plan:
            changes.apply(batch)
            book = update_tallies(conn, book, share=share)
            assert book.tallies == tally_goals(conn)
            event(f"share {share}, {len(book.tallies)} goals tallied")


# --- frames root -------------------------------------------------------------------------

H1, H2 = "sha256:" + "1" * 64, "sha256:" + "2" * 64


def test_frames_root_ignores_order_and_repeats() -> None:
    pairs = [("notes/a.frame.json", H1), ("notes/b.frame.json", H2), ("x/y.frame.json", H1)]
    root = frames_root(pairs)
    assert root.startswith("sha256:") and len(root) == 7 + 64
    assert frames_root(reversed(pairs)) == root
    assert frames_root(pairs + pairs[:1]) == root
    assert frames_root(iter(pairs)) == root


def test_frames_root_changes_when_anything_does() -> None:
    pairs = [("notes/a.frame.json", H1), ("notes/b.frame.json", H2)]
    root = frames_root(pairs)
    assert frames_root([pairs[0], ("notes/b.frame.json", H1)]) != root
    assert frames_root([pairs[0], ("notes/c.frame.json", H2)]) != root
    assert frames_root(pairs[:1]) != root
    assert frames_root([]) != root
    assert frames_root([]) == frames_root([])
    # No separator trick: a path holding a newline or quote cannot pose as two entries.
    assert frames_root([("a", "b\n"), ("c", "d")]) != frames_root([("a", 'b"],["c'), ("", "d")])


def test_frames_root_refuses_what_is_not_a_pair_of_strings() -> None:
    with pytest.raises(MetricsError, match="not a \\(path, hash\\) pair"):
        frames_root([("a", H1, "extra")])  # type: ignore[list-item]
    for bad in [(Path("a"), H1), "ab", None, ("a",)]:
        with pytest.raises(MetricsError):
            frames_root([bad])  # type: ignore[list-item]
    assert frames_root([["a/x", H1]]) == frames_root([("a/x", H1)])  # type: ignore[list-item]


pair_sets = st.sets(st.tuples(st.sampled_from(["a/x", "a/y", "b/x", "b/ÿ", "c/z"]),
                              st.sampled_from([H1, H2, "sha256:" + "f" * 64])), max_size=6)


@settings(max_examples=300)
@given(one=pair_sets, other=pair_sets, data=st.data())
def test_equal_roots_exactly_when_equal_sets(one, other, data) -> None:
    shuffled = data.draw(st.permutations(sorted(one)))
    assert frames_root(shuffled) == frames_root(one)
    assert (frames_root(one) == frames_root(other)) == (one == other)
