"""trace.db: recording sessions, COHERENCE-CHECK codes, goals and queries, on real files."""

from __future__ import annotations

import sqlite3
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from folders.errors import TraceError
from folders.trace import (
    TraceDB,
    coherence_check,
    ensure_schema,
    format_ts,
    step_hash,
)
from tests.unit.tracekit import START, TickClock


@pytest.fixture
def trace_path(tmp_path: Path) -> Path:
    path = tmp_path / "trace.db"
    ensure_schema(path)
    return path


@pytest.fixture
def tdb(trace_path: Path):
    db = TraceDB(trace_path, "laptop", clock=TickClock())
    yield db
    db.close()


def record(tdb: TraceDB, goal: str = "why is the sky blue", conclusion: str = "scattering") -> str:
    session = tdb.start_session(goal)
    tdb.append(session, "observation", "the sky is blue at noon")
    tdb.append(session, "hypothesis", "short wavelengths scatter more")
    tdb.finish(session, conclusion)
    return session


def insert(conn: sqlite3.Connection, session: str, goal: str, parent: str | None, ts: str,
           kind: str, content: str, author: str = "laptop") -> str:
    """Write a step behind TraceDB's back, with a hash that recomputes."""
    h = step_hash(session, goal, parent, author, ts, kind, content)
    conn.execute("INSERT INTO steps VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                 (h, session, goal, parent, author, ts, kind, content))
    return h


def codes(tdb: TraceDB, session: str) -> set[str]:
    return {problem.code for problem in coherence_check(tdb, session)}


def test_ensure_schema_is_idempotent_and_uses_wal(trace_path: Path) -> None:
    ensure_schema(trace_path)
    conn = sqlite3.connect(trace_path)
    tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    indexes = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type='index'")}
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.close()
    assert {"steps", "sessions", "publish_log", "merged"} <= tables
    assert {"steps_goal", "steps_session", "steps_parent"} <= indexes


def test_ensure_schema_refuses_a_file_that_is_not_sqlite(tmp_path: Path) -> None:
    path = tmp_path / "trace.db"
    path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(TraceError, match="trace.db"):
        ensure_schema(path)


def test_missing_trace_db_says_to_run_init(tmp_path: Path) -> None:
    with pytest.raises(TraceError, match="twinsync init"):
        TraceDB(tmp_path / "nowhere.db", "laptop")


def test_a_session_is_a_chain_from_root_to_conclusion(tdb: TraceDB) -> None:
    session = record(tdb)
    steps = tdb.session_steps(session)
    assert [s.kind for s in steps] == ["question", "observation", "hypothesis", "conclusion"]
    assert steps[0].parent is None and steps[0].content == "why is the sky blue"
    assert [s.parent for s in steps[1:]] == [s.hash for s in steps[:-1]]
    assert all(s.recomputes() and s.hash.startswith("sha256:") for s in steps)
    assert all(s.author == "laptop" and s.session == session for s in steps)
    assert coherence_check(tdb, session) == []
    assert len(session) == 32 and int(session, 16) >= 0


def test_timestamps_never_go_backwards_even_when_the_clock_does(trace_path: Path) -> None:
    backwards = TickClock(step=timedelta(seconds=-5))
    with TraceDB(trace_path, "laptop", clock=backwards) as tdb:
        session = record(tdb)
        stamps = [s.ts for s in tdb.session_steps(session)]
    assert stamps == sorted(stamps) and len(set(stamps)) == len(stamps)
    assert stamps[1] == format_ts(datetime.fromisoformat(stamps[0][:-1] + "+00:00")
                                  + timedelta(microseconds=1))


def test_unknown_kind_is_refused(tdb: TraceDB) -> None:
    session = tdb.start_session("g")
    with pytest.raises(TraceError, match="'musing' is unknown"):
        tdb.append(session, "musing", "hmm")
    assert len(tdb.session_steps(session)) == 1


def test_appending_to_a_finished_or_unknown_session_is_refused(tdb: TraceDB) -> None:
    session = record(tdb)
    with pytest.raises(TraceError, match="is finished; start a new session"):
        tdb.append(session, "inference", "one more thing")
    with pytest.raises(TraceError, match="was not started"):
        tdb.append("0" * 32, "inference", "one more thing")


def test_a_naive_clock_is_refused(trace_path: Path) -> None:
    with TraceDB(trace_path, "laptop", clock=lambda: datetime(2026, 1, 1)) as tdb:
        with pytest.raises(TraceError, match="time zone"):
            tdb.start_session("g")


def test_explicit_parent_must_belong_to_the_session(tdb: TraceDB) -> None:
    one, two = tdb.start_session("g"), tdb.start_session("g")
    root_of_two = tdb.session_steps(two)[0].hash
    with pytest.raises(TraceError, match="not part of session"):
        tdb.append(one, "inference", "x", parent=root_of_two)


def test_goals_and_query(tdb: TraceDB) -> None:
    first = record(tdb, "g1", "yes")
    second = record(tdb, "g1", "no")
    open_one = tdb.start_session("g2")
    assert tdb.goals() == [("g1", 2, 8), ("g2", 1, 1)]
    answers = tdb.query("g1")
    assert [(a.session, a.author, a.steps, a.status, a.conclusion) for a in answers] == [
        (first, "laptop", 4, "finished", "yes"), (second, "laptop", 4, "finished", "no")]
    assert [(a.status, a.conclusion) for a in tdb.query("g2")] == [("open", None)]
    assert tdb.query("nobody asked") == []
    assert open_one


def test_query_and_goals_use_indexes(tdb: TraceDB) -> None:
    """Fast on a 1M-step trace means no full scan: check the plans rather than a stopwatch."""
    conn = tdb.connection
    plan = " ".join(row[3] for row in conn.execute(
        "EXPLAIN QUERY PLAN SELECT session, count(*) FROM steps WHERE goal = ? GROUP BY session",
        ("g",)))
    assert "steps_goal" in plan
    plan = " ".join(row[3] for row in conn.execute(
        "EXPLAIN QUERY PLAN SELECT content FROM steps WHERE session = ? AND kind = 'conclusion'",
        ("s",)))
    assert "steps_session" in plan


def test_coherence_empty(tdb: TraceDB) -> None:
    assert codes(tdb, "f" * 32) == {"empty"}


def test_coherence_no_conclusion(tdb: TraceDB) -> None:
    session = tdb.start_session("g")
    tdb.append(session, "inference", "still thinking")
    assert codes(tdb, session) == {"no_conclusion"}


def test_coherence_bad_hash(tdb: TraceDB) -> None:
    session = record(tdb)
    middle = tdb.session_steps(session)[1].hash
    tdb.connection.execute("UPDATE steps SET content = 'edited' WHERE hash = ?", (middle,))
    assert codes(tdb, session) == {"bad_hash"}


def test_coherence_many_roots(tdb: TraceDB) -> None:
    session = record(tdb)
    insert(tdb.connection, session, "why is the sky blue", None, format_ts(START), "question",
           "a second start")
    assert codes(tdb, session) == {"many_roots"}


def test_coherence_no_root(tdb: TraceDB) -> None:
    session = record(tdb)
    root = tdb.session_steps(session)[0]
    tdb.connection.execute("DELETE FROM steps WHERE hash = ?", (root.hash,))
    assert {"no_root", "missing_parent"} <= codes(tdb, session)


def test_coherence_missing_parent(tdb: TraceDB) -> None:
    session = record(tdb)
    middle = tdb.session_steps(session)[1]
    tdb.connection.execute("DELETE FROM steps WHERE hash = ?", (middle.hash,))
    assert "missing_parent" in codes(tdb, session)
    assert "bad_hash" not in codes(tdb, session)


def test_coherence_branching(tdb: TraceDB) -> None:
    session = record(tdb)
    steps = tdb.session_steps(session)
    insert(tdb.connection, session, steps[0].goal, steps[1].hash, steps[2].ts, "hypothesis",
           "another idea")
    assert codes(tdb, session) == {"branching"}


def test_coherence_time_backwards(tdb: TraceDB) -> None:
    session = record(tdb)
    steps = tdb.session_steps(session)
    tdb.connection.execute("DELETE FROM steps WHERE hash = ?", (steps[-1].hash,))
    insert(tdb.connection, session, steps[0].goal, steps[-2].hash, steps[0].ts, "conclusion",
           "scattering")
    assert codes(tdb, session) == {"time_backwards"}


def test_coherence_mixed_goal(tdb: TraceDB) -> None:
    session = record(tdb)
    steps = tdb.session_steps(session)
    tdb.connection.execute("DELETE FROM steps WHERE hash = ?", (steps[-1].hash,))
    insert(tdb.connection, session, "another goal", steps[-2].hash, steps[-1].ts, "conclusion",
           "scattering")
    assert codes(tdb, session) == {"mixed_goal"}


def test_coherence_unreachable(tdb: TraceDB) -> None:
    session = record(tdb)
    conn = tdb.connection
    goal, ts = "why is the sky blue", format_ts(START)
    conn.execute("INSERT INTO steps VALUES ('sha256:x', ?, ?, 'sha256:y', 'laptop', ?, "
                 "'inference', 'x')", (session, goal, ts))
    conn.execute("INSERT INTO steps VALUES ('sha256:y', ?, ?, 'sha256:x', 'laptop', ?, "
                 "'inference', 'y')", (session, goal, ts))
    assert codes(tdb, session) == {"bad_hash", "unreachable"}
