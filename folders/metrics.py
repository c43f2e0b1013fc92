"""The seed metrics (DESIGN §5), computed from trace.db and counts the orchestrator passes in.

Four numbers say whether the network of nodes is thinking as one:

- **convergence**: published sessions whose conclusion equals their goal's consensus
  conclusion, over published sessions that have a conclusion (seed: ≥ 90 %);
- **conflict rate**: frames with a pending conflict copy, invalid, or whose hash differs
  across nodes' fingerprints, over all frames (seed: ≤ 5 %);
- **access time**: p95 of the wall time of the trace query behind `TraceDB.query` for a
  deterministic sample of goals, in ms (seed: ≤ 200 ms);
- **routes per goal**: mean distinct published sessions per goal (seed: ≥ 3).

"Published" means what it means everywhere else (`consensus.PUBLISHED`): a session is
published unless this node holds a local `sessions` row whose status is not 'published'.
Steps merged from peers have no local row, so they count, as `TraceDB.query` shows them.

Everything here is a pure function of its inputs and of trace.db; no Syncthing, no state.db.
"""

from __future__ import annotations

import hashlib
import json
import math
import sqlite3
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Literal, NamedTuple

from folders.decisions import DECISION_GOAL_PREFIX
from folders.consensus import GoalTally, tally_goals
from folders.errors import TwinsyncError
from folders.trace import TraceDB, as_connection, connect, content_hash

#: Prefix of every frames root; the version changes if the encoding below ever does.
FRAMES_ROOT_DOMAIN = b"twinsync frames root v1\n"
METRIC_NAMES = ("convergence", "conflict_rate", "access_p95_ms", "routes_per_goal")


class MetricsError(TwinsyncError):
    """The inputs of a metric make no sense; the message names the value to fix."""


class Threshold(NamedTuple):
    """One seed threshold: `op` is ">=" (at least `limit`) or "<=" (at most `limit`)."""

    op: Literal[">=", "<="]
    limit: float

    def met(self, value: float | None) -> bool:
        """A metric with no value (nothing measured yet) does not meet its threshold."""
        if value is None:
            return False
        return value >= self.limit if self.op == ">=" else value <= self.limit


#: The seed's targets (DESIGN §5), with the direction of each.
SEED_THRESHOLDS: Mapping[str, Threshold] = MappingProxyType({
    "convergence": Threshold(">=", 0.90),
    "conflict_rate": Threshold("<=", 0.05),
    "access_p95_ms": Threshold("<=", 200.0),
    "routes_per_goal": Threshold(">=", 3.0),
})


#: The fewest items behind each metric (its count field, how many, what they are) before its
#: value is judged: below that one item moves the value past its threshold (one frame of 20 is
#: 5 %, one session of 10 is 10 %), so a fresh network reads "not enough data yet", not a
#: failure. Routes per goal needs 10 published sessions in all, as convergence does: before
#: that it only says how the first few sessions happened to spread over goals.
MIN_SAMPLES: Mapping[str, tuple[str, int, str]] = MappingProxyType({
    "convergence": ("concluded", 10, "concluded sessions"),
    "conflict_rate": ("frames_total", 20, "frames"),
    "access_p95_ms": ("access_samples", 1, "timed goals"),
    "routes_per_goal": ("routes", 10, "published sessions"),
})

#: Each metric in words, as `status` and the TUI's help name them.
METRIC_WORDS: Mapping[str, str] = MappingProxyType({
    "convergence": "convergence", "conflict_rate": "conflict rate", "access_p95_ms": "access time",
    "routes_per_goal": "routes per goal"})

#: What every view (CLI, TUI, demo) says instead of a verdict while a metric lacks samples.
NOT_ENOUGH_DATA = "not enough data yet"
#: The same, where a narrow table cell has no room for it (`nodes`, the TUI's Nodes tab).
TOO_FEW = "too few"


def judge(name: str, value: float | None, samples: int) -> bool | None:
    """Whether metric `name` meets its seed threshold, measured over `samples` items (what
    MIN_SAMPLES counts); None while there is nothing measured or not enough data yet."""
    if value is None or samples < MIN_SAMPLES[name][1]:
        return None
    return SEED_THRESHOLDS[name].met(value)


def format_metric(name: str, value: float | None) -> str:
    """One unit per metric, wherever it is shown: the two rates in percent, access time in
    ms, routes per goal as a plain number; "—" when nothing was measured."""
    if value is None:
        return "—"
    if name in ("convergence", "conflict_rate"):
        return f"{value:.1%}"
    if name == "access_p95_ms":
        return f"{value:.1f} ms"
    return f"{value:.1f}"


def threshold_text(name: str) -> str:
    """The seed threshold in the metric's own unit: ≥ 90.0%, ≤ 5.0%, ≤ 200.0 ms, ≥ 3.0."""
    threshold = SEED_THRESHOLDS[name]
    return f"{'≥' if threshold.op == '>=' else '≤'} {format_metric(name, threshold.limit)}"


def frames_root(entries: Iterable[tuple[str, str]]) -> str:
    """A digest of the set of (frame path, frame hash) pairs: equal sets, equal roots.

    Computed as sha256 over a version line and then one line per distinct pair, in sorted
    order, each line the canonical JSON array `["<path>","<hash>"]`. JSON escaping makes
    the encoding injective (no path or hash can fake a line break or a separator), so the
    root changes whenever any pair does. Why not a binary Merkle tree: the root is only
    ever compared for equality between fingerprints, and a tree over a sorted list gives
    no useful proofs or diffs (one new frame shifts every later leaf), so the extra
    hashing would buy nothing; to find *which* frames differ, compare the frame indexes.
    """
    pairs = set()
    for entry in entries:
        try:
            path, frame_hash = entry if not isinstance(entry, str) else ()
        except (TypeError, ValueError):
            path = frame_hash = None
        if not isinstance(path, str) or not isinstance(frame_hash, str):
            raise MetricsError(f"Frames root entry {entry!r} is not a (path, hash) pair of "
                               "strings; pass the frame index's relative paths and hashes.")
        pairs.add((path, frame_hash))
    digest = hashlib.sha256(FRAMES_ROOT_DOMAIN)
    for path, frame_hash in sorted(pairs):
        digest.update(json.dumps([path, frame_hash], ensure_ascii=False,
                                 separators=(",", ":")).encode("utf-8") + b"\n")
    return "sha256:" + digest.hexdigest()


@dataclass(frozen=True)
class Metrics:
    """The four seed metrics and the raw counts behind each; None means nothing to measure."""

    convergence: float | None
    converged: int  # published sessions whose conclusion is their goal's consensus
    concluded: int  # published sessions that have a conclusion
    conflict_rate: float | None
    frames_total: int
    frames_in_conflict: int
    frames_invalid: int
    frames_disagreeing: int
    access_p95_ms: float | None
    access_samples: int  # goals whose query was timed
    routes_per_goal: float | None
    min_routes: int | None
    goals: int  # goals with at least one published session
    routes: int  # published sessions, summed over those goals

    def summary(self) -> dict[str, float | None]:
        """The four metric values by name, as fingerprints and `status --json` carry them."""
        return {name: getattr(self, name) for name in METRIC_NAMES}

    def meets(self, thresholds: Mapping[str, Threshold] = SEED_THRESHOLDS) -> dict[str, bool]:
        """Metric name → whether it meets its threshold; a metric with no value does not."""
        unknown = set(thresholds) - set(METRIC_NAMES)
        if unknown:
            raise MetricsError(f"Thresholds name unknown metrics ({', '.join(sorted(unknown))}); "
                               f"use {', '.join(METRIC_NAMES)}.")
        return {name: threshold.met(getattr(self, name)) for name, threshold in thresholds.items()}

    def samples(self, name: str) -> tuple[int, int, str]:
        """(items measured, items needed, what they are) behind metric `name`."""
        field, needed, noun = MIN_SAMPLES[name]
        return getattr(self, field), needed, noun

    def verdict(self, name: str) -> bool | None:
        """Whether metric `name` meets its seed threshold; None while there is not enough data."""
        return judge(name, getattr(self, name), self.samples(name)[0])


def compute_metrics(trace: TraceDB | sqlite3.Connection | Path, *, frames_total: int,
                    frames_in_conflict: int, frames_invalid: int, frames_disagreeing: int,
                    query_sample: int = 20, asked_ms: Sequence[float] = (),
                    clock: Callable[[], float] = time.perf_counter,
                    tallies: Mapping[str, GoalTally] | None = None) -> Metrics:
    """Measure the seed metrics on a trace.db and the frame counts the orchestrator keeps.

    `trace` is an open TraceDB, a connection to trace.db, or its path (opened and closed
    here). The counts are of distinct frames; when they overlap the rate is capped at 1.
    `clock` returns seconds (as `time.perf_counter` does) and times the access queries.
    `asked_ms` are round trips of real asks that peers answered (DESIGN §5): when there are
    any, the access metric is their p95, the network's answer time; otherwise this node's
    own query time, the floor under it. `tallies` are `tally_goals` of this trace when the
    caller kept them (a scan of every step).
    """
    counts = {"frames_total": frames_total, "frames_in_conflict": frames_in_conflict,
              "frames_invalid": frames_invalid, "frames_disagreeing": frames_disagreeing,
              "query_sample": query_sample}
    for name, value in counts.items():
        if type(value) is not int or value < 0:
            raise MetricsError(f"compute_metrics got {name}={value!r}; pass a count, a whole "
                               "number of zero or more.")
    if isinstance(trace, (str, Path)):
        conn = connect(Path(trace))
        try:
            return compute_metrics(conn, frames_total=frames_total,
                                   frames_in_conflict=frames_in_conflict,
                                   frames_invalid=frames_invalid,
                                   frames_disagreeing=frames_disagreeing,
                                   query_sample=query_sample, asked_ms=asked_ms, clock=clock,
                                   tallies=tallies)
        finally:
            conn.close()

    conn = as_connection(trace)
    tallies = tally_goals(conn) if tallies is None else tallies
    converged = sum(t.supporters for t in tallies.values())
    concluded = sum(t.concluded for t in tallies.values())
    routes = [t.routes for t in tallies.values()]
    bad_frames = frames_in_conflict + frames_invalid + frames_disagreeing
    timings = list(asked_ms) or time_queries(trace, sample_goals(conn, query_sample), clock)
    return Metrics(
        convergence=converged / concluded if concluded else None,
        converged=converged,
        concluded=concluded,
        conflict_rate=min(1.0, bad_frames / frames_total) if frames_total else None,
        frames_total=frames_total,
        frames_in_conflict=frames_in_conflict,
        frames_invalid=frames_invalid,
        frames_disagreeing=frames_disagreeing,
        access_p95_ms=p95(timings),
        access_samples=len(timings),
        routes_per_goal=sum(routes) / len(routes) if routes else None,
        min_routes=min(routes, default=None),
        goals=len(routes),
        routes=sum(routes),
    )


# --- access time ----------------------------------------------------------------------------

def sample_goals(db: TraceDB | sqlite3.Connection, size: int) -> list[str]:
    """Up to `size` goals, the same on every node holding the same goals and stable as goals
    are added: those with the smallest sha256 of their text, a spread across the alphabet."""
    if size <= 0:
        return []
    goals = [row[0] for row in as_connection(db).execute("SELECT DISTINCT goal FROM steps")
             if not row[0].startswith(DECISION_GOAL_PREFIX)]
    return sorted(goals, key=content_hash)[:size]


@dataclass(frozen=True)
class _Connected:
    """Just enough of a TraceDB for `TraceDB.query`, which only reads `self.connection`."""

    connection: sqlite3.Connection


def time_queries(trace: TraceDB | sqlite3.Connection, goals: Iterable[str],
                 clock: Callable[[], float] = time.perf_counter) -> list[float]:
    """Milliseconds each `TraceDB.query(goal)` takes, rows fetched and built.

    The timed code is TraceDB.query itself, not a copy of its SQL, so the metric follows
    any change to the query people actually run.
    """
    query = trace.query if isinstance(trace, TraceDB) else (
        lambda goal: TraceDB.query(_Connected(trace), goal))  # type: ignore[arg-type]
    timings = []
    for goal in goals:
        start = clock()
        query(goal)
        timings.append((clock() - start) * 1000.0)
    return timings


def p95(values: Iterable[float]) -> float | None:
    """Nearest-rank 95th percentile: the smallest value at or above 95 % of the values."""
    ordered = sorted(values)
    if not ordered:
        return None
    return ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)]
