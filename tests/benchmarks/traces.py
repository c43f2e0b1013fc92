"""Trace benchmarks: merge, query and restore, each against a raw SQLite (or file-copy)
baseline measured in the same run, on the same machine.

    .venv/bin/python -m tests.benchmarks.traces [--quick] [--only merge,query,restore]
                                                [--segment-steps N]

Nothing of ours is mocked. Node "a"'s steps are written straight into a trace.db made by
`folders.trace.ensure_schema` (real hashes from `folders.trace.step_hash`, sessions rows
'finished' with their real head), then published in rounds by the real
`folders.segments.publish`, so every segment is a real, signed one. Merges run in a
subprocess of their own (only `folders.segments` imported) so that its peak RSS is the
merge's and nobody else's: the child reads the kernel's high-water mark of its own address
space (VmHWM in /proc/self/status) after each segment. Not ru_maxrss (getrusage or wait4):
Linux carries the parent's peak RSS into a child started by vfork + exec, as subprocess
does, so a child of a 300 MB parent reports >= 300 MB however little it uses.

Each `measure_*` takes `(tmp, console, sizes)` and returns one JSON-able dict. The figures
share what they build under `tmp/traces/` (built once, on first use, by whichever runs
first), so run.py may call any subset in any order. The caller owns `tmp` and removes it.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timedelta, timezone
from pathlib import Path

from rich.console import Console

from folders import keys
from folders.segments import merge_segment, publish, verify_segment
from folders.restore import restore_snapshot
from folders.snapshots import make_snapshot
from folders.trace import (MERGE_CACHE_KIB, STEP_COLUMNS, TraceDB, connect, ensure_schema,
                           format_ts, step_hash, write_transaction)
from orchestrator.forked import cores
from tests.benchmarks.common import percentile, progress, r, step

ROOT = Path(__file__).resolve().parents[2]
FIGURES = ("merge", "query", "restore")
MB = 1024 * 1024


@dataclass(frozen=True)
class Sizes:
    steps: int               # merge/query: steps recorded and published on node "a"
    segment_steps: int       # merge: steps per published segment (one publish round)
    steps_per_session: int   # a session: question, ..., conclusion
    sessions_per_goal: int   # routes per goal; goals = steps / (steps_per_session * this)
    queries: int             # query: random goals asked (after a warm-up)
    snapshot_mb: int         # restore: size the snapshot is grown to
    big_content: int         # restore: bytes of content of each step added to grow it
    merge_runs: int = 3      # merge: (ours, bare) pairs; medians are compared

    @property
    def goals(self) -> int:
        return max(1, self.steps // (self.steps_per_session * self.sessions_per_goal))


FULL = Sizes(steps=1_000_000, segment_steps=100_000, steps_per_session=10, sessions_per_goal=10,
             queries=500, snapshot_mb=1024, big_content=4096)
QUICK = Sizes(steps=50_000, segment_steps=10_000, steps_per_session=10, sessions_per_goal=10,
              queries=200, snapshot_mb=50, big_content=4096)

#: Targets (see the issue): merge >= 90 % of bare SQLite and <= 200 MB peak RSS;
#: query p95 <= 20 ms (seed: 200 ms); restore of the snapshot, verification included, <= 10 s.
MERGE_RATIO = 0.90
MERGE_RSS_MB = 200.0
QUERY_P95_S = 0.020
SEED_P95_S = 0.200
RESTORE_S = 10.0
#: Free disk needed before growing the snapshot, as a multiple of its size.
DISK_FACTOR = 4
BASE_TIME = datetime(2026, 1, 1, tzinfo=timezone.utc)
MIDDLE_KINDS = ("observation", "inference", "hypothesis")
INSERT_STEP = f"INSERT INTO steps ({', '.join(STEP_COLUMNS)}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
INSERT_SESSION = ("INSERT INTO sessions (session, goal, author, status, head, started, finished) "
                  "VALUES (?, ?, ?, 'finished', ?, ?, ?)")


# -- small helpers ---------------------------------------------------------------------------

def db_bytes(path: Path) -> int:
    """Bytes of the database's used pages (its WAL folded in as SQLite sees it)."""
    conn = sqlite3.connect(path)
    try:
        pages, free, size = (conn.execute(f"PRAGMA {p}").fetchone()[0]
                             for p in ("page_count", "freelist_count", "page_size"))
    finally:
        conn.close()
    return (pages - free) * size


# -- node "a": recorded steps, published as real segments ------------------------------------

@dataclass
class World:
    """What the figures share under tmp/traces/."""

    root: Path
    sizes: Sizes
    a_trace: Path
    a_recovery: Path
    public_key: str
    manifests: list[str]     # the merge figure's segment manifests, in seq order
    sessions: int            # sessions recorded on "a" so far (numbering of the next ones)
    build_s: dict[str, float]

    @property
    def key_path(self) -> Path:
        return self.root / "a" / "keys" / "node.key"

    @property
    def b_trace(self) -> Path:
        return self.root / "b" / "trace.db"

    @property
    def state(self) -> Path:
        return self.root / "world.json"

    def save(self) -> None:
        data = {**asdict(self), "root": str(self.root), "sizes": asdict(self.sizes),
                "a_trace": str(self.a_trace), "a_recovery": str(self.a_recovery)}
        self.state.write_text(json.dumps(data))


def record_sessions(conn: sqlite3.Connection, author: str, first: int, count: int, sizes: Sizes,
                    content: Callable[[int, int, str, str], str]) -> int:
    """Insert `count` finished sessions (numbers first..first+count-1) straight into trace.db.

    Session i reasons toward goal i % goals; each step's hash is the real `step_hash`, its
    parent the previous step, its ts one microsecond after it; the sessions row is
    'finished' with its real head, as `TraceDB.finish` leaves it. Returns the steps written.
    """
    steps, sessions = [], []
    length = sizes.steps_per_session
    for i in range(first, first + count):
        session = hashlib.sha256(f"bench/{author}/{i}".encode()).hexdigest()[:32]
        goal = f"goal-{i % sizes.goals:05d}"
        start = BASE_TIME + timedelta(milliseconds=i)
        parent, started, ts = None, None, None
        for k in range(length):
            kind = ("question" if k == 0 else "conclusion" if k == length - 1
                    else MIDDLE_KINDS[k % len(MIDDLE_KINDS)])
            text = goal if k == 0 else content(i, k, kind, goal)
            ts = format_ts(start + timedelta(microseconds=k))
            started = started or ts
            digest = step_hash(session, goal, parent, author, ts, kind, text)
            steps.append((digest, session, goal, parent, author, ts, kind, text))
            parent = digest
        sessions.append((session, goal, author, parent, started, ts))
    with write_transaction(conn):
        conn.executemany(INSERT_STEP, steps)
        conn.executemany(INSERT_SESSION, sessions)
    return len(steps)


def small_content(i: int, k: int, kind: str, goal: str) -> str:
    if kind == "conclusion":
        return f"{goal}: answer {(i // 7) % 3}"
    return f"{kind} {k} of session {i} toward {goal}: {hashlib.md5(f'{i}/{k}'.encode()).hexdigest()}"


def big_content_of(size: int) -> Callable[[int, int, str, str], str]:
    def content(i: int, k: int, kind: str, goal: str) -> str:
        if kind == "conclusion":
            return f"{goal}: answer {(i // 7) % 3}"
        return os.urandom(size // 2).hex()
    return content


def publish_round(world: World, conn: sqlite3.Connection, count: int,
                  content: Callable[[int, int, str, str], str]) -> tuple[int, object]:
    """Record `count` sessions on "a", then publish them with the real `publish`."""
    written = record_sessions(conn, "a", world.sessions, count, world.sizes, content)
    world.sessions += count
    segment = publish(world.a_trace, world.a_recovery / "segments", "a",
                      keys.load_private_key(world.key_path))
    if segment is None or segment.rows != written:
        raise AssertionError(f"publish took {segment and segment.rows} steps, expected {written}")
    return written, segment


def world(tmp: Path, console: Console, sizes: Sizes) -> World:
    """Node "a" with `sizes.steps` published steps in segments of `sizes.segment_steps`."""
    root = tmp / "traces"
    state = root / "world.json"
    if state.is_file():
        data = json.loads(state.read_text())
        if Sizes(**data["sizes"]) == sizes:
            return World(**{**data, "root": Path(data["root"]), "sizes": sizes,
                            "a_trace": Path(data["a_trace"]), "a_recovery": Path(data["a_recovery"])})
        shutil.rmtree(root)  # built for other sizes: start again
    if sizes.segment_steps % sizes.steps_per_session or sizes.steps % sizes.segment_steps:
        raise ValueError(f"steps ({sizes.steps}) must be a multiple of segment_steps "
                         f"({sizes.segment_steps}), itself a multiple of steps_per_session "
                         f"({sizes.steps_per_session})")
    home = root / "a"
    (home / "keys").mkdir(parents=True)
    key = keys.generate_keypair(home / "keys" / "node.key", home / "keys" / "node.pub")
    w = World(root, sizes, home / "trace.db", home / "trace" / "recovery" / "a",
              keys.public_key_text(key.public_key()), [], 0, {})
    ensure_schema(w.a_trace)
    rounds = sizes.steps // sizes.segment_steps
    started = time.perf_counter()
    record_s = publish_s = 0.0
    conn = connect(w.a_trace)
    conn.execute("PRAGMA cache_size=-262144")  # our generator's own connection: 256 MiB
    try:
        with progress(console, f"node a: record {sizes.steps:,} steps ({sizes.goals:,} goals), "
                      f"publish {rounds} segments of {sizes.segment_steps:,}", sizes.steps) as advance:
            for _ in range(rounds):
                t0 = time.perf_counter()
                written = record_sessions(conn, "a", w.sessions,
                                          sizes.segment_steps // sizes.steps_per_session,
                                          sizes, small_content)
                w.sessions += sizes.segment_steps // sizes.steps_per_session
                t1 = time.perf_counter()
                segment = publish(w.a_trace, w.a_recovery / "segments", "a", key)
                publish_s += time.perf_counter() - t1
                record_s += t1 - t0
                if segment is None or segment.rows != written:
                    raise AssertionError(f"publish took {segment and segment.rows} steps, "
                                         f"expected {written}")
                w.manifests.append(str(segment.manifest_path))
                advance(written)
    finally:
        conn.close()
    w.build_s = {"record_s": r(record_s, 1), "publish_s": r(publish_s, 1),
                 "total_s": r(time.perf_counter() - started, 1)}
    w.save()
    return w


# -- merging in a subprocess of its own --------------------------------------------------------

#: Ours: only what a merging node imports. One JSON line per segment on stdout.
CHILD_OURS = r"""
import json, sys, time
from pathlib import Path
from folders.keys import parse_public_key
from folders.segments import merge_segment, verify_segment

spec = json.loads(sys.argv[1])
trusted = {spec["node"]: parse_public_key(spec["public_key"])}
target = Path(spec["target"])
def rss_mb():  # VmHWM: peak RSS of this process's own address space since exec
    with open("/proc/self/status") as status:
        return next(int(l.split()[1]) for l in status if l.startswith("VmHWM:")) / 1024
print(json.dumps({"ready": True, "rss_mb": rss_mb()}), flush=True)
for manifest in spec["manifests"]:
    t0 = time.perf_counter()
    verified = verify_segment(Path(manifest), trusted, hash_steps=False)  # as merge_now: hashed once
    t1 = time.perf_counter()
    inserted = merge_segment(target, verified)
    t2 = time.perf_counter()
    print(json.dumps({"rows": verified.rows, "inserted": inserted, "verify_s": t1 - t0,
                      "merge_s": t2 - t1, "rss_mb": rss_mb()}), flush=True)
"""

#: The raw baseline: bare SQLite, same segment files, a fresh db of the same schema; with
#: SQLite's default page cache, or (`cache_kib`) with the one a merge gives itself.
CHILD_BARE = r"""
import json, sqlite3, sys, time

spec = json.loads(sys.argv[1])
conn = sqlite3.connect(spec["target"], isolation_level=None)
if spec["cache_kib"]:
    conn.execute(f"PRAGMA cache_size=-{spec['cache_kib']}")
def rss_mb():  # VmHWM: peak RSS of this process's own address space since exec
    with open("/proc/self/status") as status:
        return next(int(l.split()[1]) for l in status if l.startswith("VmHWM:")) / 1024
print(json.dumps({"ready": True, "rss_mb": rss_mb()}), flush=True)
for db in spec["segments"]:
    t0 = time.perf_counter()
    before = conn.total_changes
    conn.execute("ATTACH DATABASE ? AS seg", (db,))
    conn.execute("INSERT OR IGNORE INTO steps SELECT * FROM seg.steps")
    inserted = conn.total_changes - before
    conn.execute("DETACH DATABASE seg")
    t1 = time.perf_counter()
    print(json.dumps({"rows": inserted, "inserted": inserted, "verify_s": 0.0, "merge_s": t1 - t0,
                      "rss_mb": rss_mb()}), flush=True)
conn.close()
"""


def run_child(console: Console, code: str, spec: dict, text: str, total: int,
              log: Path) -> tuple[list[dict], float, float]:
    """Run `code` in a fresh interpreter; returns (its per-segment lines, its peak RSS in
    MB after its imports, its ru_maxrss in MB from wait4, which includes our own peak)."""
    lines: list[dict] = []
    os.sync()  # start clean: no writeback of earlier work competing with this child
    with open(log, "wb") as err, progress(console, text, total) as advance:
        proc = subprocess.Popen([sys.executable, "-c", code, json.dumps(spec)], cwd=ROOT,
                                stdout=subprocess.PIPE, stderr=err, stdin=subprocess.DEVNULL)
        status = None
        try:
            for raw in proc.stdout:
                line = json.loads(raw)
                lines.append(line)
                if "rows" in line:
                    advance(line["rows"])
            _, status, usage = os.wait4(proc.pid, 0)
        finally:
            proc.stdout.close()
            if status is None:  # interrupted: stop the child, by its pid, and reap it
                proc.kill()
                _, status, usage = os.wait4(proc.pid, 0)
            proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"{text} failed with exit code {proc.returncode}:\n"
                           f"{log.read_text(errors='replace')[-3000:]}")
    ready = lines.pop(0)
    return lines, ready["rss_mb"], usage.ru_maxrss / 1024


def count_steps(path: Path) -> int:
    conn = sqlite3.connect(path)
    try:
        return conn.execute("SELECT count(*) FROM steps").fetchone()[0]
    finally:
        conn.close()


def remove_db(path: Path) -> None:
    for suffix in ("", "-wal", "-shm", "-journal"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


def measure_merge(tmp: Path, console: Console, sizes: Sizes) -> dict:
    """verify_segment + merge_segment of every segment of "a" into b's fresh trace.db, in a
    subprocess, against bare ATTACH + INSERT OR IGNORE of the same files into a fresh db.

    `sizes.merge_runs` runs of three (ours, bare, and bare with the page cache a merge gives
    itself, so the reader sees how much of the figure that PRAGMA is), reversing the order
    every other run; medians are compared. The first run's b trace.db is kept for the
    query figure, the others are removed."""
    w = world(tmp, console, sizes)
    n, segs, k = sizes.steps, len(w.manifests), sizes.merge_runs
    seg_files = [str(Path(m).with_suffix(".db")) for m in w.manifests]
    seg_mb = sum(Path(f).stat().st_size for f in seg_files) / MB
    if w.b_trace.exists():
        raise RuntimeError(f"{w.b_trace} exists already; the merge figure runs once per temp dir")
    runs: list[dict] = []
    for i in range(k):
        targets = {"ours": w.b_trace if i == 0 else w.root / f"b-run{i + 1}" / "trace.db",
                   "bare": w.root / f"bare-run{i + 1}" / "trace.db",
                   "bare_cache": w.root / f"bare-cache-run{i + 1}" / "trace.db"}
        for path in targets.values():
            path.parent.mkdir(parents=True, exist_ok=True)
            ensure_schema(path)
        run: dict = {}
        for name in (("bare", "ours", "bare_cache") if i % 2 == 0 else ("bare_cache", "ours", "bare")):
            if name == "ours":
                code, spec = CHILD_OURS, {"target": str(targets["ours"]), "manifests": w.manifests,
                                          "node": "a", "public_key": w.public_key}
                text = f"merge (run {i + 1}/{k}): verify_segment + merge_segment of {segs} segments"
            else:
                cache = MERGE_CACHE_KIB if name == "bare_cache" else 0
                code, spec = CHILD_BARE, {"target": str(targets[name]), "segments": seg_files,
                                          "cache_kib": cache}
                text = (f"merge baseline (run {i + 1}/{k}): bare ATTACH + INSERT OR IGNORE of {segs} "
                        f"segments{f', cache_size {cache} KiB' if cache else ''}")
            lines, rss0, wait4_rss = run_child(console, code, spec, text, n,
                                               w.root / f"{name}-run{i + 1}.log")
            inserted, held = sum(x["inserted"] for x in lines), count_steps(targets[name])
            if inserted != n or held != n:
                raise AssertionError(f"{name} merge (run {i + 1}) inserted {inserted} and holds "
                                     f"{held} steps, expected {n}")
            run[name] = {"lines": lines, "rss0": rss0, "wait4": wait4_rss,
                         "rss": max(x["rss_mb"] for x in lines),
                         "verify_s": sum(x["verify_s"] for x in lines),
                         "merge_s": sum(x["merge_s"] for x in lines)}
            run[name]["total_s"] = run[name]["verify_s"] + run[name]["merge_s"]
        if i == 0:
            db_mb = {name: r(db_bytes(path) / MB, 1) for name, path in targets.items()}
            (w.root / "b" / "merged.ok").touch()
        for name, path in targets.items():
            if path != w.b_trace:
                remove_db(path)
        runs.append(run)

    ours_s = statistics.median(run["ours"]["total_s"] for run in runs)
    bare_s = statistics.median(run["bare"]["total_s"] for run in runs)
    bare_cache_s = statistics.median(run["bare_cache"]["total_s"] for run in runs)
    verify_s = statistics.median(run["ours"]["verify_s"] for run in runs)
    merge_s = statistics.median(run["ours"]["merge_s"] for run in runs)
    ours_rss = max(run["ours"]["rss"] for run in runs)
    bare_rss = max(run["bare"]["rss"] for run in runs)
    ours_rate, bare_rate = n / ours_s, n / bare_s
    first = runs[0]
    value = {"steps_per_s": round(ours_rate), "peak_rss_mb": r(ours_rss, 1)}
    limit = {"steps_per_s": round(MERGE_RATIO * bare_rate), "peak_rss_mb": MERGE_RSS_MB}
    return {
        "figure": "merge", "n": n, "unit": {"steps_per_s": "steps/s", "peak_rss_mb": "MB"},
        "value": value, "baseline": {"steps_per_s": round(bare_rate), "peak_rss_mb": r(bare_rss, 1)},
        "target": f"steps_per_s >= {MERGE_RATIO:.0%} of baseline and peak_rss_mb <= {MERGE_RSS_MB:.0f}",
        "limit": limit, "ratio": r(ours_rate / bare_rate, 3),
        "meets_target": ours_rate >= limit["steps_per_s"] and ours_rss <= MERGE_RSS_MB,
        "detail": {
            "segments": segs, "segment_steps": sizes.segment_steps,
            "segment_files_mb": r(seg_mb, 1), "goals": sizes.goals, "runs": k,
            "value_is": f"n / median over {k} runs of (sum of verify_segment + merge_segment, per "
                        "segment in seq order, into a fresh trace.db of node b), in a subprocess "
                        "importing folders.segments",
            "baseline_is": f"n / median over {k} runs of (sum of ATTACH + INSERT OR IGNORE INTO "
                           "steps SELECT * FROM seg.steps + DETACH of the same files into a fresh "
                           "ensure_schema db), in a subprocess importing sqlite3 only; runs "
                           "alternate which goes first, os.sync() before each",
            "runs_s": {"value": [r(run["ours"]["total_s"], 2) for run in runs],
                       "baseline": [r(run["bare"]["total_s"], 2) for run in runs]},
            "runs_ratio": [r(run["bare"]["total_s"] / run["ours"]["total_s"], 3) for run in runs],
            "verify_s": r(verify_s, 2), "merge_s": r(merge_s, 2), "baseline_s": r(bare_s, 2),
            "merge_only_ratio": r(bare_s / merge_s, 3),
            "baseline_same_cache": {
                "is": f"the baseline with PRAGMA cache_size=-{MERGE_CACHE_KIB} (KiB), the page "
                      "cache merge_segment gives its connection",
                "steps_per_s": round(n / bare_cache_s), "ratio": r(bare_cache_s / ours_s, 3),
                "runs_ratio": [r(run["bare_cache"]["total_s"] / run["ours"]["total_s"], 3)
                               for run in runs],
                "peak_rss_mb": r(max(run["bare_cache"]["rss"] for run in runs), 1)},
            "per_segment_s_run1": {"verify": [r(x["verify_s"], 2) for x in first["ours"]["lines"]],
                                   "merge": [r(x["merge_s"], 2) for x in first["ours"]["lines"]],
                                   "baseline": [r(x["merge_s"], 2) for x in first["bare"]["lines"]]},
            "rss_is": "VmHWM (kernel high-water mark of resident memory) of the merging "
                      "child's own address space, read in the child after each segment; max "
                      "over runs",
            "wait4_ru_maxrss_mb": {"value": r(max(run["ours"]["wait4"] for run in runs), 1),
                                   "baseline": r(max(run["bare"]["wait4"] for run in runs), 1),
                                   "note": "not used: Linux carries this (parent) process's "
                                           "peak RSS into a vfork+exec child's ru_maxrss"},
            "rss_after_imports_mb": {"value": r(first["ours"]["rss0"], 1),
                                     "baseline": r(first["bare"]["rss0"], 1)},
            "rss_mb_after_each_segment_run1": [r(x["rss_mb"], 1) for x in first["ours"]["lines"]],
            "trace_db_mb": {"value": db_mb["ours"], "baseline": db_mb["bare"],
                            "baseline_same_cache": db_mb["bare_cache"]},
            "build_node_a": w.build_s,
        },
    }


# -- query ----------------------------------------------------------------------------------

def merged_b(tmp: Path, console: Console, sizes: Sizes) -> Path:
    """b's trace.db holding every segment of "a": the merge figure's, or merged here."""
    w = world(tmp, console, sizes)
    if (w.root / "b" / "merged.ok").exists():
        return w.b_trace
    w.b_trace.parent.mkdir(parents=True, exist_ok=True)
    ensure_schema(w.b_trace)
    trusted = {"a": keys.parse_public_key(w.public_key)}
    with progress(console, f"query: merge {len(w.manifests)} segments into b", sizes.steps) as advance:
        for manifest in w.manifests:
            verified = verify_segment(Path(manifest), trusted)
            merge_segment(w.b_trace, verified)
            advance(verified.rows)
    (w.root / "b" / "merged.ok").touch()
    return w.b_trace


def measure_query(tmp: Path, console: Console, sizes: Sizes) -> dict:
    """TraceDB.query(goal) on b's merged trace.db, against bare SELECT * FROM steps WHERE
    goal = ?, alternating which goes first on each goal."""
    path = merged_b(tmp, console, sizes)
    rng = random.Random(20261125)
    goals = [f"goal-{g:05d}" for g in rng.sample(range(sizes.goals), min(sizes.queries, sizes.goals))]
    if len(goals) < sizes.queries:  # fewer goals than queries: ask some twice
        goals += [rng.choice(goals) for _ in range(sizes.queries - len(goals))]
    warm = [f"goal-{g:05d}" for g in rng.sample(range(sizes.goals), min(20, sizes.goals))]
    ours, bare = [], []
    routes, rows = set(), set()
    db = TraceDB(path, "b")
    raw = sqlite3.connect(path)
    try:
        def ask_ours(goal: str) -> None:
            t0 = time.perf_counter()
            found = db.query(goal)
            ours.append(time.perf_counter() - t0)
            routes.add(len(found))

        def ask_bare(goal: str) -> None:
            t0 = time.perf_counter()
            found = raw.execute("SELECT * FROM steps WHERE goal = ?", (goal,)).fetchall()
            bare.append(time.perf_counter() - t0)
            rows.add(len(found))

        first = time.perf_counter()
        db.query(warm[0])
        first_s = time.perf_counter() - first
        for goal in warm:
            db.query(goal)
            raw.execute("SELECT * FROM steps WHERE goal = ?", (goal,)).fetchall()
        with step(console, f"query: {len(goals)} random goals of {sizes.goals:,}, "
                  "TraceDB.query and bare SELECT, alternating"):
            for i, goal in enumerate(goals):
                first_fn, second_fn = (ask_ours, ask_bare) if i % 2 == 0 else (ask_bare, ask_ours)
                first_fn(goal)
                second_fn(goal)
        total = raw.execute("SELECT count(*) FROM steps").fetchone()[0]
    finally:
        db.close()
        raw.close()
    per_goal = sizes.steps_per_session * sizes.sessions_per_goal
    if routes != {sizes.sessions_per_goal} or rows != {per_goal}:
        raise AssertionError(f"query found {routes} routes and SELECT {rows} steps per goal, "
                             f"expected {sizes.sessions_per_goal} and {per_goal}")
    value = {"p50": r(percentile(ours, 0.5), 5), "p95": r(percentile(ours, 0.95), 5)}
    base = {"p50": r(percentile(bare, 0.5), 5), "p95": r(percentile(bare, 0.95), 5)}
    return {
        "figure": "query", "n": total, "unit": "s", "value": value, "baseline": base,
        "target": f"p95 <= {QUERY_P95_S * 1000:.0f} ms (seed: <= {SEED_P95_S * 1000:.0f} ms)",
        "limit": {"p95": QUERY_P95_S}, "meets_target": value["p95"] <= QUERY_P95_S,
        "detail": {
            "queries": len(ours), "goals": sizes.goals,
            "routes_per_goal": sizes.sessions_per_goal, "steps_per_goal": per_goal,
            "value_is": "TraceDB(b).query(goal): every route toward the goal with its author, "
                        "start, steps, status and conclusion",
            "baseline_is": "SELECT * FROM steps WHERE goal = ? (.fetchall) on a plain connection",
            "warm_up": f"{len(warm)} other goals asked by both first; OS page cache warm "
                       "(the db was just merged)",
            "first_query_s": r(first_s, 5),
            "max_s": {"value": r(max(ours), 5), "baseline": r(max(bare), 5)},
            "meets_seed": value["p95"] <= SEED_P95_S,
            "trace_db_mb": r(db_bytes(path) / MB, 1),
        },
    }


# -- restore ---------------------------------------------------------------------------------

def measure_restore(tmp: Path, console: Console, sizes: Sizes) -> dict:
    """restore_snapshot (which verifies the snapshot as it copies it in) of a ~snapshot_mb
    snapshot of "a" into a node home's trace.db, against shutil.copyfile of the same file."""
    target = sizes.snapshot_mb * MB
    free = shutil.disk_usage(tmp).free
    if free < DISK_FACTOR * target:
        return {"figure": "restore", "skipped": f"only {free / MB:,.0f} MB free in {tmp}; the "
                f"restore figure needs {DISK_FACTOR} x {sizes.snapshot_mb:,} MB"}
    w = world(tmp, console, sizes)
    key = keys.load_private_key(w.key_path)
    conn = connect(w.a_trace)
    conn.execute("PRAGMA cache_size=-262144")
    per_step = sizes.big_content + 1000  # first guess, corrected after each round
    grow_rounds = 0
    try:
        size = db_bytes(w.a_trace)
        with progress(console, f"restore: grow a's published trace to {sizes.snapshot_mb:,} MB "
                      f"with {sizes.big_content:,}-byte steps", target) as advance:
            advance(completed=min(size, target), total=target)
            while size < target:
                want = (target - size) // per_step + 1
                sessions = max(1, min(want // sizes.steps_per_session + 1,
                                      (100 * MB // per_step) // sizes.steps_per_session))
                written, _ = publish_round(w, conn, sessions, big_content_of(sizes.big_content))
                grow_rounds += 1
                before, size = size, db_bytes(w.a_trace)
                per_step = max(1, (size - before) // written)
                advance(completed=min(size, target), total=target)
    finally:
        conn.close()
    w.save()
    snaps = w.root / "a" / "trace" / "recovery" / "a" / "snapshots"
    with step(console, "restore: make_snapshot of a's trace.db"):
        t0 = time.perf_counter()
        snapshot = make_snapshot(w.a_trace, snaps, "a", key)
        make_s = time.perf_counter() - t0

    home = w.root / "a-restored"
    home.mkdir()
    ensure_schema(home / "trace.db")  # the new machine's `init` left an empty trace.db
    trusted = {"a": keys.parse_public_key(w.public_key)}
    copy = w.root / "copy-of-snapshot.db"
    with step(console, f"restore baseline: shutil.copyfile of the {snapshot.size / MB:,.0f} MB snapshot"):
        t0 = time.perf_counter()
        shutil.copyfile(snapshot.path, copy)
        copy_s = time.perf_counter() - t0
        fd = os.open(copy, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        copy_fsync_s = time.perf_counter() - t0
    copy.unlink()
    with progress(console, "restore: restore_snapshot into a new node home", 1) as advance:
        t0 = time.perf_counter()
        restored = restore_snapshot(home / "trace.db", snapshot.manifest_path, trusted, workers=cores(),
                                    progress=lambda done, total: advance(completed=done, total=total))
        value = time.perf_counter() - t0
    held = count_steps(home / "trace.db")
    if held != snapshot.rows or restored.backup is None or restored.snapshot.sha256 != snapshot.sha256:
        raise AssertionError(f"restored trace.db holds {held} steps, the snapshot {snapshot.rows}; "
                             f"old trace.db kept at {restored.backup}")
    shutil.rmtree(home)  # the disk the figure asked for holds one restore at a time
    home = w.root / "b-new-machine"
    home.mkdir()
    ensure_schema(home / "trace.db")
    with progress(console, "restore: the same snapshot onto node b, as a new machine "
                  "(its indexes are checked here)", 1) as advance:
        t0 = time.perf_counter()
        restore_snapshot(home / "trace.db", snapshot.manifest_path, trusted, workers=cores(), node="b",
                         new_machine=True, progress=lambda done, total: advance(completed=done, total=total))
        new_machine_s = time.perf_counter() - t0
    shutil.rmtree(home)
    return {
        "figure": "restore", "n": snapshot.rows, "unit": "s",
        "value": r(value, 2), "baseline": r(copy_s, 2),
        "target": f"restore_snapshot, verification included, <= {RESTORE_S:.0f} s", "limit": RESTORE_S,
        "meets_target": value <= RESTORE_S, "ratio": r(value / copy_s, 1),
        "detail": {
            "snapshot_mb": r(snapshot.size / MB, 1), "snapshot_steps": snapshot.rows,
            "big_steps_content_bytes": sizes.big_content, "grow_rounds": grow_rounds,
            "value_is": "restore_snapshot: manifest and signature, copy into trace.db.tmp "
                        "hashing the bytes written (sha256 against the signed one), then on "
                        "the copy quick_check, schema, row count, coverage, authors, every "
                        "step hash in one child process per core, fsync on a second thread; "
                        "ensure_schema, move aside, rename, fsync; into a node home holding "
                        "an empty trace.db. No integrity_check: the node's own snapshot was "
                        "checked before it was signed",
            "as_new_machine_s": r(new_machine_s, 2),
            "as_new_machine_is": "the same restore by another node taking the snapshot over, "
                                 "which also runs integrity_check on a second thread",
            "hash_workers": cores(),
            "baseline_is": "shutil.copyfile of the same .db (no fsync; OS page cache warm, "
                           "the snapshot was just written)",
            "baseline_with_fsync_s": r(copy_fsync_s, 2), "make_snapshot_s": r(make_s, 2),
        },
    }


# -- command line ----------------------------------------------------------------------------

MEASURES = {"merge": measure_merge, "query": measure_query, "restore": measure_restore}


def _interrupt(signum, frame):  # noqa: ARG001 - SIGTERM ends the run like Ctrl-C does
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.benchmarks.traces",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, a smoke check")
    parser.add_argument("--only", default=",".join(FIGURES),
                        help=f"comma-separated figures (default: all of {', '.join(FIGURES)})")
    parser.add_argument("--segment-steps", type=int, default=None,
                        help="steps per published segment (default: 100,000; quick: 10,000)")
    args = parser.parse_args(argv)
    wanted = [f.strip() for f in args.only.split(",") if f.strip()]
    unknown = set(wanted) - set(FIGURES)
    if unknown:
        parser.error(f"unknown figure(s) {', '.join(sorted(unknown))}; choose from {', '.join(FIGURES)}")
    sizes = QUICK if args.quick else FULL
    if args.segment_steps:
        sizes = replace(sizes, segment_steps=args.segment_steps)

    console = Console(file=sys.stderr)
    signal.signal(signal.SIGTERM, _interrupt)
    tmp = Path(tempfile.mkdtemp(prefix="twinsync-bench-traces-"))
    started = time.perf_counter()
    console.print(f"twinsync trace benchmarks ({'quick' if args.quick else 'full'}: {sizes}) in {tmp}")
    code = 0
    try:
        for figure in FIGURES:
            if figure in wanted:
                t0 = time.perf_counter()
                print(json.dumps(MEASURES[figure](tmp, console, sizes), ensure_ascii=False), flush=True)
                console.print(f"[bold]{figure}[/] figure: {time.perf_counter() - t0:.1f} s")
    except KeyboardInterrupt:
        console.print("[yellow]interrupted: removing the temp dir[/]")
        code = 130
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        shutil.rmtree(tmp, ignore_errors=True)
        console.print(f"wall time {time.perf_counter() - started:.1f} s; removed {tmp}")
    return code


if __name__ == "__main__":
    sys.exit(main())
