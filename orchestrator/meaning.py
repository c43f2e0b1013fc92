"""This node's profile for routing by meaning (folders/meaning.py), built each time the
fingerprint is written (recovery.refresh_fingerprint) from what the node itself knows: the
goals it reasoned about and the frames it wrote.

Own goals and own frames only: after merges every node holds every node's trace, and in a
full topology every node's frames, so what a node *holds* says little about what it
*knows*. The cost is bounded, not proportional to the node's size: the newest MAX_GOALS
goals and the newest MAX_FRAMES frames are read (tests/benchmarks/routing.py measures it
at 100,000 frames); and a refresh that finds the same sources as the last one (counts and
newest times of own sessions and indexed frames) reuses the profile kept in state.db.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from pathlib import Path

from collections.abc import Iterable

from folders.fingerprint import FingerprintView
from folders.frame import FRAME_SUFFIX
from folders.meaning import DEFAULT, Profile, ProfileError, Representation, body_text, profile_of
from folders.trace import connect
from orchestrator.node import Node
from orchestrator.state import open_state, upsert, write_state

logger = logging.getLogger(__name__)

MAX_GOALS = 2000
MAX_FRAMES = 2000
#: state.db `meta` key of the last profile built and what it was built from.
PROFILE_KEY = "meaning_profile"


def knowledge(trace_db: Path, state_db: Path, frames_root: Path, author: str, *,
              max_goals: int = MAX_GOALS, max_frames: int = MAX_FRAMES) -> list[str]:
    """`author`'s newest goals, then the ids and bodies of its newest frames. A frame file
    that is gone or unreadable since it was indexed is skipped: the next refresh sees the
    index catch up."""
    conn = connect(trace_db)
    try:
        texts = [goal for goal, in conn.execute(
            "SELECT goal FROM sessions WHERE author = ? GROUP BY goal "
            "ORDER BY max(started) DESC, goal LIMIT ?", (author, max_goals))]
    finally:
        conn.close()
    db = open_state(state_db)
    try:
        rows = db.execute("SELECT path FROM frames WHERE status = 'valid' "
                          "ORDER BY updated DESC, path LIMIT ?", [max_frames]).fetchall()
    except sqlite3.OperationalError:  # a state.db from before its frames table: no frames yet
        rows = []
    finally:
        db.close()
    for rel, in rows:
        if not rel.endswith(FRAME_SUFFIX):
            continue
        try:
            frame = json.loads((frames_root / rel).read_bytes())
        except (OSError, ValueError):
            continue
        if isinstance(frame, dict) and frame.get("author") == author:
            texts.append(f"{frame.get('id', '')} {body_text(frame.get('body'))}")
    return texts


def _sources(trace_db: Path, state_db: Path, author: str) -> list[object]:
    """What a profile is built from, in four aggregates: while none changes, neither does it."""
    conn = connect(trace_db)
    try:
        sessions = conn.execute("SELECT count(*), max(started) FROM sessions WHERE author = ?",
                                (author,)).fetchone()
    finally:
        conn.close()
    db = open_state(state_db)
    try:
        frames = db.execute("SELECT count(*), max(updated) FROM frames WHERE status = 'valid'").fetchone()
    finally:
        db.close()
    return [*sessions, *frames]


def cached_profile(trace_db: Path, state_db: Path, frames_root: Path, author: str,
                   representation: Representation = DEFAULT, *,
                   through: sqlite3.Connection | None = None) -> Profile:
    """The profile of `knowledge`, rebuilt only when its sources changed since the last one
    (kept in state.db's meta table; a kept one that does not read is rebuilt). `through`: the
    connection to state.db to keep it with (see `remember`)."""
    sources = [representation.name, representation.version, *_sources(trace_db, state_db, author)]
    db = open_state(state_db)
    try:
        row = db.execute("SELECT value FROM meta WHERE key = ?", [PROFILE_KEY]).fetchone()
    finally:
        db.close()
    if row is not None:
        try:
            kept = json.loads(row[0])
            if kept["sources"] == sources:
                return Profile.from_dict(kept["profile"])
        except (ValueError, TypeError, KeyError, ProfileError) as exc:
            logger.warning("rebuilding this node's profile: the one kept in state.db does not "
                           "read (%s)", exc)
    profile = profile_of(knowledge(trace_db, state_db, frames_root, author), representation)
    with write_state(state_db, through) as conn:
        upsert(conn, "meta", [{"key": PROFILE_KEY, "value": json.dumps(
            {"sources": sources, "profile": profile.to_dict()})}], "key")
    return profile


def node_profile(node: Node, representation: Representation = DEFAULT, *,
                 through: sqlite3.Connection | None = None) -> Profile:
    return cached_profile(node.layout.trace_db, node.layout.state_db, node.layout.frames_shared,
                          node.name, representation, through=through)


def peer_profiles(views: Iterable[FingerprintView], me: str) -> dict[str, Profile | None]:
    """Each peer's profile from its fingerprint, for folders.meaning.rank_peers: None (ranked
    last) when the fingerprint is unusable (missing, forged, garbage: nothing of it is
    trusted) or older than profiles. A stale fingerprint's profile still counts: what a
    node knows changes slowly. This node is left out: asking itself is the caller's
    "local first"."""
    return {view.node: view.fingerprint.meaning() if view.ok and view.fingerprint else None
            for view in views if view.node != me}
