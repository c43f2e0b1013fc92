"""What a node's profile is built from (orchestrator/meaning.py), on a real trace.db,
state.db and frame files: its own goals and frames, the newest first, bounded."""

from __future__ import annotations

from pathlib import Path

from folders.frame import Frame, save_frame
from folders.meaning import profile_of, rank_peers
from folders.trace import TraceDB, ensure_schema
from folders.fingerprint import FINGERPRINT_NAME, make_fingerprint, read_fingerprint, write_fingerprint
from folders.metrics import METRIC_NAMES
from orchestrator.meaning import PROFILE_KEY, cached_profile, knowledge, peer_profiles
from orchestrator.state import ensure_schema as ensure_state, open_state
from tests.unit.tracekit import TickClock, node_keys

KEYS, TRUSTED = node_keys("a", "b", "c", "d")


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


def test_peer_profiles_come_only_from_usable_fingerprints(tmp_path: Path) -> None:
    garden = profile_of(["полив томатов", "tomato blight"])
    for name, profile in (("a", profile_of(["me"])), ("b", garden), ("c", None)):
        write_fingerprint(tmp_path / name / FINGERPRINT_NAME, make_fingerprint(
            node=name, device_id="DEVICE", version="0.1.0", frames_root="sha256:" + "0" * 64,
            frames_count=0, trace_steps=0, trace_sessions=0, trace_head=None, last_publish=None,
            last_merge=None, pending_conflicts=0, pending_forks=0,
            metrics=dict.fromkeys(METRIC_NAMES), key=KEYS[name], profile=profile))
    forged = tmp_path / "d" / FINGERPRINT_NAME  # d's folder, signed by b: refused, so no profile
    forged.parent.mkdir()
    forged.write_text((tmp_path / "b" / FINGERPRINT_NAME).read_text().replace('"node": "b"', '"node": "d"'))
    views = [read_fingerprint(tmp_path / n / FINGERPRINT_NAME, TRUSTED) for n in "abcd"]
    assert not views[3].ok
    profiles = peer_profiles(views, "a")
    assert profiles == {"b": garden, "c": None, "d": None}
    assert [peer for peer, _ in rank_peers("когда поливать томаты", profiles)] == ["b", "c", "d"]


def test_the_profile_is_rebuilt_only_when_its_sources_change(tmp_path: Path) -> None:
    trace_db, state_db, frames = _home(tmp_path)
    clock = TickClock()
    with TraceDB(trace_db, "a", clock) as mine:
        mine.start_session("water the tomatoes")
    _frame(state_db, frames, "garden.notes/roses", "a", "roses need sun", "2026-11-25T08:00:02Z")
    first = cached_profile(trace_db, state_db, frames, "a")
    assert first == profile_of(knowledge(trace_db, state_db, frames, "a"))
    # Nothing indexed changed, so the file is not read again: the kept profile is returned.
    (frames / "garden.notes" / "roses.frame.json").write_text("{}")
    assert cached_profile(trace_db, state_db, frames, "a") == first
    with TraceDB(trace_db, "a", clock) as mine:
        mine.start_session("полить огурцы")
    second = cached_profile(trace_db, state_db, frames, "a")
    assert second == profile_of(["полить огурцы", "water the tomatoes"]) != first
    db = open_state(state_db)
    try:
        with db.conn:
            db.execute("UPDATE meta SET value = '{\"sources\": 1' WHERE key = ?", [PROFILE_KEY])
    finally:
        db.close()
    assert cached_profile(trace_db, state_db, frames, "a") == second  # garbage kept: rebuilt
