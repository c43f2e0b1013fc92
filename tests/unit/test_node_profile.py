"""What a node's profile is built from (orchestrator/meaning.py), on a real trace.db,
state.db and frame files: its own goals and frames, the newest first, bounded."""

from __future__ import annotations

from pathlib import Path

from folders.frame import Frame, save_frame
from folders.meaning import profile_of, rank_peers
from folders.trace import TraceDB, ensure_schema
from orchestrator.meaning import knowledge
from orchestrator.state import ensure_schema as ensure_state, open_state
from tests.unit.tracekit import TickClock, node_keys

KEYS, _ = node_keys("a", "b")


def _home(tmp_path: Path) -> tuple[Path, Path, Path]:
    trace_db, state_db, frames = tmp_path / "trace.db", tmp_path / "state.db", tmp_path / "frames"
    ensure_schema(trace_db)
    ensure_state(state_db)
    return trace_db, state_db, frames


def _frame(state_db: Path, frames: Path, frame_id: str, author: str, text: str, updated: str) -> None:
    path = save_frame(frames, Frame.create(frame_id, author, {"text": text}, KEYS[author]))
    db = open_state(state_db)
    try:
        db["frames"].upsert({"path": path.relative_to(frames).as_posix(), "frame_id": frame_id,
                             "status": "valid", "updated": updated}, pk="path")
    finally:
        db.close()


def test_own_goals_and_frames_newest_first_and_bounded(tmp_path: Path) -> None:
    trace_db, state_db, frames = _home(tmp_path)
    clock = TickClock()
    with TraceDB(trace_db, "a", clock) as mine, TraceDB(trace_db, "b", clock) as merged:
        for goal in ("water the tomatoes", "полить томаты", "water the tomatoes", "prune roses"):
            mine.start_session(goal)
        merged.start_session("change the car oil")  # b's, merged here: not what a knows
    _frame(state_db, frames, "garden.notes/compost", "a", "компост из листьев", "2026-11-25T08:00:01Z")
    _frame(state_db, frames, "garden.notes/roses", "a", "roses need sun", "2026-11-25T08:00:02Z")
    _frame(state_db, frames, "car.notes/oil", "b", "5W-30 every 10 000 km", "2026-11-25T08:00:03Z")
    _frame(state_db, frames, "garden.notes/gone", "a", "deleted since", "2026-11-25T08:00:04Z")
    (frames / "garden.notes" / "gone.frame.json").unlink()  # the index has not caught up yet

    texts = knowledge(trace_db, state_db, frames, "a")
    assert texts == ["prune roses", "water the tomatoes", "полить томаты",
                     "garden.notes/roses roses need sun", "garden.notes/compost компост из листьев"]
    # The bound is on frames read (gone, b's oil, roses), not on frames kept.
    assert knowledge(trace_db, state_db, frames, "a", max_goals=1, max_frames=3) == [
        "prune roses", "garden.notes/roses roses need sun"]
    profiles = {"a": profile_of(texts), "b": profile_of(knowledge(trace_db, state_db, frames, "b"))}
    assert rank_peers("когда поливать томаты?", profiles)[0][0] == "a"
    assert rank_peers("which oil for my car", profiles)[0][0] == "b"


def test_a_new_node_has_an_empty_profile(tmp_path: Path) -> None:
    trace_db, state_db, frames = _home(tmp_path)
    assert knowledge(trace_db, state_db, frames, "a") == []
    assert profile_of([]).entries == ()
