"""A corpus of bad input, table-driven, against a node whose daemon runs: command-line
values, files dropped into frames.shared/ and files dropped into trace/recovery/. Every row
must get a non-zero exit (or a queue item) and one clear sentence: no traceback, a few
lines, an echoed value capped; the daemon stays alive and working; earlier good data is
unchanged. tests/integration/test_bad_input.py covers init, pair and a missing home; this
extends the idea to every other surface. Each test runs its whole table and reports every
failing row at once, so one run shows the full picture."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from folders.frame import Frame, save_frame
from folders.keys import load_private_key
from folders.layout import NodeLayout
from folders.segments import file_sha256, sign_manifest
from folders.snapshots import SEGMENTS_DIR, SNAPSHOTS_DIR
from tests.conftest import run_cli, wait_for
from tests.faults.cluster import configure, git, trace_steps

pytestmark = pytest.mark.faults

#: "A few lines": usage errors print usage, a hint and the error.
MAX_LINES = 5
#: An echoed value is capped at ~100 characters, so no message should come near this.
MAX_CHARS = 800
DEEP = 100_000


def _problem_with_output(output: str, exception: BaseException | None) -> str | None:
    """None when the output is one clear sentence, else what is wrong with it."""
    if exception is not None and not isinstance(exception, SystemExit):
        return f"crashed with {type(exception).__name__}: {str(exception)[:120]}"
    if "Traceback" in output:
        return "printed a traceback"
    lines = [line for line in output.splitlines() if line.strip()]
    if not lines:
        return "printed nothing"
    if len(lines) > MAX_LINES:
        return f"printed {len(lines)} lines"
    if len(output) > MAX_CHARS:
        return f"printed {len(output)} characters (an echoed value is not capped)"
    return None


def _frame_tree(home: Path) -> dict[str, bytes]:
    root = NodeLayout(home).frames_shared
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _head(home: Path) -> str:
    return git(home, "rev-parse", "HEAD").stdout.strip()


def _daemon_commits(node, name: str) -> bool:
    """The daemon still works: a frame that arrives as a file (as Syncthing writes it) is
    committed by the daemon, not by us."""
    layout = NodeLayout(node.home)
    save_frame(layout.frames_shared, Frame.create(f"alive/{name}", node.name, {"ok": True},
                                                  load_private_key(layout.private_key)))
    try:
        wait_for(lambda: git(node.home, "log", "--format=%H", "--", f"alive/{name}.frame.json").stdout.strip(),
                 timeout=20, what=f"the daemon to commit alive/{name}", interval=0.2)
    except AssertionError:
        return False
    return True


# -- the command line ------------------------------------------------------------------


@dataclass(frozen=True)
class CliCase:
    name: str
    args: Callable[[Path], list[str]] | tuple[str, ...]
    code: int = 1
    says: str | None = None  # a fragment the sentence must contain


def _file(tmp: Path, name: str, data: bytes | str) -> str:
    path = tmp / name
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return str(path)


LONG = "x" * 5000

CLI_CASES = [
    # frame ids
    *[CliCase(f"put id {i!r:.40}", ("frame", "put", i, "--body", '{"a": 1}'), 1) for i in (
        "notes", "notes/", "/notes/a", "../a", "notes/../a", "notes/./a", "notes//a", "notes/.hidden",
        "notes/-dash", "notes/a b", "notes/a\\b", "notes/é", "notes/a:b", "notes/a*b", "a/b/c/d/e/f/g/h/i/j",
        "notes/a.sync-conflict-20260101-000000-ABCDEFG", f"notes/{LONG}", "notes/a\nb", "notes/a\tb",
        " notes/a", "notes/a ", "notes/" + "a" * 129)],
    CliCase("put empty id", ("frame", "put", "", "--body", '{"a": 1}'), 1),
    # bodies
    *[CliCase(f"put body {b!r:.30}", ("frame", "put", "notes/body", "--body", b), 1) for b in (
        "", " ", "[]", "1", '"text"', "null", "true", "{", '{"a":', "{'a': 1}", '{"a": 1,}', '{"a": 1} x',
        '{"a": NaN}', '{"a": Infinity}', '{"a": -Infinity}', "1" * 5000, '{"a": ' + "1" * 5000 + "}",
        '{"a": "\\ud800"}', "\x00", LONG)],
    CliCase("put both --body and --file", lambda t: ["frame", "put", "notes/b", "--body", "{}",
                                                     "--file", _file(t, "b.json", "{}")], 2),
    CliCase("put neither --body nor --file", ("frame", "put", "notes/b"), 2),
    CliCase("put --file missing", lambda t: ["frame", "put", "notes/b", "--file", str(t / "nope.json")], 1, "nope.json"),
    CliCase("put --file a directory", lambda t: ["frame", "put", "notes/b", "--file", str(t)], 1),
    CliCase("put --file empty", lambda t: ["frame", "put", "notes/b", "--file", _file(t, "e.json", "")], 1),
    CliCase("put --file not UTF-8", lambda t: ["frame", "put", "notes/b", "--file", _file(t, "l1.json", b'{"a": "\xe9"}')], 1),
    CliCase("put --file with a BOM", lambda t: ["frame", "put", "notes/b", "--file", _file(t, "bom.json", b'\xef\xbb\xbf{"a": 1}')], 1),
    CliCase("put --file nested 100,000 deep", lambda t: ["frame", "put", "notes/b", "--file",
                                                         _file(t, "deep.json", '{"a":' * DEEP + "1" + "}" * DEEP)], 1),
    CliCase("put --file a list nested 100,000 deep", lambda t: ["frame", "put", "notes/b", "--file",
                                                                _file(t, "deepl.json", "[" * DEEP + "]" * DEEP)], 1),
    CliCase("put --file over max_size", lambda t: ["frame", "put", "notes/big", "--file",
                                                   _file(t, "big.json", json.dumps({"a": "x" * 1_100_000}))], 1, "max_size"),
    CliCase("put --file /dev/null", ("frame", "put", "notes/b", "--file", "/dev/null"), 1),
    CliCase("put --file a FIFO-free special file", ("frame", "put", "notes/b", "--file", "/proc/self/status"), 1),
    CliCase("put --shadow bad id", ("frame", "put", "../x", "--shadow", "--body", "{}"), 1),
    # get, log, restore, promote
    CliCase("get missing frame", ("frame", "get", "notes/none"), 1, "notes/none"),
    CliCase("get bad id", ("frame", "get", "../etc/passwd"), 1),
    CliCase("get long id", ("frame", "get", f"notes/{LONG}"), 1),
    CliCase("get --shadow missing", ("frame", "get", "notes/none", "--shadow"), 1),
    CliCase("log missing frame", ("frame", "log", "notes/none"), 1, "notes/none"),
    CliCase("log bad id", ("frame", "log", "/abs/x"), 1),
    CliCase("restore to unknown rev", ("frame", "restore", "notes/good", "--to", "0123456789ab"), 1),
    CliCase("restore to a ref that is an option", ("frame", "restore", "notes/good", "--to=--all"), 1),
    CliCase("restore to HEAD~999", ("frame", "restore", "notes/good", "--to", "HEAD~999"), 1),
    CliCase("restore to an unknown fork", ("frame", "restore", "notes/good", "--to", "fork/notes/good/X-1"), 1),
    CliCase("restore an unknown frame", ("frame", "restore", "notes/none", "--to", "HEAD"), 1),
    CliCase("restore to a long rev", ("frame", "restore", "notes/good", "--to", LONG), 1),
    CliCase("restore without --to", ("frame", "restore", "notes/good"), 2),
    CliCase("promote missing shadow", ("frame", "promote", "notes/none"), 1, "notes/none"),
    CliCase("promote bad id", ("frame", "promote", "..//x"), 1),
    # the conflict queue
    CliCase("conflict show unknown", ("conflict", "show", "999999"), 1, "999999"),
    CliCase("conflict show 0", ("conflict", "show", "0"), 1),
    CliCase("conflict show negative", ("conflict", "show", "--", "-1"), 1),
    CliCase("conflict show not a number", ("conflict", "show", "abc"), 1, "abc"),
    CliCase("conflict show huge", ("conflict", "show", "9" * 30), 1),
    CliCase("approve nothing", ("approve",), 2),
    CliCase("approve unknown id", ("approve", "999999"), 1),
    CliCase("approve huge id", ("approve", "9" * 30), 1),
    CliCase("approve --all-from garbage", ("approve", "--all-from", "ZZZZZZZ"), 0),
    CliCase("approve --all-from long", ("approve", "--all-from", LONG), 0),
    CliCase("reject --namespace ..", ("reject", "--namespace", ".."), 0),
    CliCase("reject unknown id", ("reject", "424242"), 1),
    CliCase("reject not a number", ("reject", "x"), 1),
    # traces
    CliCase("trace start empty goal", ("trace", "start", ""), 1),
    CliCase("trace add unknown session", ("trace", "add", "0" * 32, "observation", "x"), 1),
    CliCase("trace add long session", ("trace", "add", LONG, "observation", "x"), 1),
    CliCase("trace add bad kind", ("trace", "add", "0" * 32, "shout", "x"), 1),
    CliCase("trace add unknown parent", lambda t: ["trace", "add", "@open", "observation", "x", "--parent", "sha256:" + "0" * 64], 1),
    CliCase("trace add bad kind to an open session", lambda t: ["trace", "add", "@open", "feeling", "x"], 1),
    CliCase("trace finish unknown session", ("trace", "finish", "f" * 32, "done"), 1),
    CliCase("trace finish a peer's session", lambda t: ["trace", "finish", "@peer", "done"], 1),
    CliCase("trace continue unknown", ("trace", "continue", "nope"), 1),
    CliCase("trace continue a peer's session", lambda t: ["trace", "continue", "@peer"], 1),
    CliCase("trace show unknown", ("trace", "show", "nope"), 1),
    CliCase("trace query unknown goal", ("trace", "query", "no such goal"), 0),
    CliCase("fork approve unknown", ("fork", "approve", "nofork", "abc"), 1),
    CliCase("fork reject unknown", ("fork", "reject", "0" * 12, "0" * 8), 1),
    CliCase("fork approve long", ("fork", "approve", LONG, LONG), 1),
    # snapshots and restore
    CliCase("snapshots of a bad node name", ("snapshots", "--node", "../x"), 1),
    CliCase("snapshots of an unknown node", ("snapshots", "--node", "nobody"), 0),
    CliCase("restore unknown snapshot", ("restore", "snap-19700101T000000000000Z", "--yes"), 1),
    CliCase("restore a path", ("restore", "../../etc/passwd", "--yes"), 1),
    CliCase("restore long name", ("restore", LONG, "--yes"), 1),
    CliCase("restore unknown node", ("restore", "--latest", "--node", "nobody", "--yes"), 1),
    CliCase("restore bad node", ("restore", "--latest", "--node", "a/b", "--yes"), 1),
    CliCase("restore name and --latest", ("restore", "snap-x", "--latest", "--yes"), 2),
    CliCase("restore --as-new-machine of itself", ("restore", "--latest", "--as-new-machine", "--yes"), 1),
    # topology
    CliCase("topology unknown", ("topology", "apply", "ring"), 1, "ring"),
    CliCase("topology star without master", ("topology", "apply", "star"), 1),
    CliCase("topology star unknown master", ("topology", "apply", "star", "--master", "nobody"), 1),
    CliCase("topology sharded bad map", ("topology", "apply", "sharded", "--map", "garbage"), 1),
    CliCase("topology sharded bad namespace", ("topology", "apply", "sharded", "--map", "../x=node1"), 1),
    CliCase("topology p2p bad interest", ("topology", "apply", "p2p", "--interest", "==="), 1),
    # controls and alerts
    CliCase("pause nobody", ("pause",), 1),
    CliCase("pause unknown peer", ("pause", "nobody"), 1),
    CliCase("pause a path", ("pause", "../../etc"), 1),
    CliCase("pause peer and folder", ("pause", "nobody", "--folder", "frames"), 1),
    CliCase("resume long peer", ("resume", LONG), 1),
    CliCase("rescan unknown folder", ("rescan", "--folder", "../x"), 1),
    CliCase("unpair unknown peer", ("unpair", "nobody", "--yes"), 1),
    CliCase("unpair without a terminal", ("unpair", "node2"), 1),
    CliCase("watch --interval 0", ("watch", "--interval", "0"), 2),
    # init and pair against this home or with bad values
    CliCase("init --syncthing-url file://", lambda t: ["init", "--home", str(t / "n1"), "--name", "n",
                                                       "--syncthing-url", "file:///etc/passwd", "--api-key", "k"], 1),
    CliCase("init --syncthing-url ftp://", lambda t: ["init", "--home", str(t / "n2"), "--name", "n",
                                                      "--syncthing-url", "ftp://127.0.0.1/", "--api-key", "k"], 1),
    CliCase("init --syncthing-url no scheme", lambda t: ["init", "--home", str(t / "n3"), "--name", "n",
                                                         "--syncthing-url", "127.0.0.1:8384", "--api-key", "k"], 1),
    CliCase("init --syncthing-url garbage", lambda t: ["init", "--home", str(t / "n4"), "--name", "n",
                                                       "--syncthing-url", "http://[::1", "--api-key", "k"], 1),
    CliCase("init --syncthing-url port 0", lambda t: ["init", "--home", str(t / "n5"), "--name", "n",
                                                      "--syncthing-url", "http://127.0.0.1:0", "--api-key", "k"], 1),
    CliCase("init --syncthing-url with only a key", lambda t: ["init", "--home", str(t / "n6"), "--name", "n",
                                                               "--api-key", "k"], 1),
    CliCase("init --managed with a url", lambda t: ["init", "--home", str(t / "n7"), "--name", "n", "--managed",
                                                    "--syncthing-url", "http://127.0.0.1:1"], 2),
    CliCase("init long name", lambda t: ["init", "--home", str(t / "n8"), "--name", LONG, "--managed"], 1),
    CliCase("pair empty", ("pair", ""), 1),
    CliCase("pair prefix only", ("pair", "twinsync1."), 1),
    CliCase("pair three dots", ("pair", "twinsync1...."), 1),
    CliCase("pair huge", ("pair", "twinsync1." + "A" * 200_000 + ".00000000"), 1),
    CliCase("pair not base64", ("pair", "twinsync1.!!!!.deadbeef"), 1),
    # --home
    CliCase("frame put with --home a file", lambda t: ["frame", "put", "notes/a", "--body", "{}",
                                                       "--home", _file(t, "afile", "x")], 2),
    CliCase("trace start in a missing home", lambda t: ["trace", "start", "g", "--home", str(t / "missing")], 1),
    CliCase("conflicts in a missing home", lambda t: ["conflicts", "--home", str(t / "missing")], 1),
    CliCase("doctor in a missing home", lambda t: ["doctor", "--home", str(t / "missing")], 1),
]


def _cli(node, args: list[str]):
    """Rows that name their own --home run as given; others get this node's, before any `--`."""
    if "--home" in args:
        return run_cli(*args, ok=False)
    if "--" in args:
        cut = args.index("--")
        return run_cli(*args[:cut], "--home", node.home, *args[cut:], ok=False)
    return node.cli(*args, ok=False)


@pytest.mark.timeout(240)
def test_bad_command_line_values_get_one_sentence(cluster, tmp_path):
    c = cluster(2)
    a, b = c.nodes["node1"], c.nodes["node2"]
    _limit_frame_size(a)
    daemon = c.start_daemon("node1")
    a.cli("frame", "put", "notes/good", "--body", '{"text": "keep me"}')
    a.cli("frame", "put", "notes/good", "--body", '{"text": "keep me too"}')
    open_session = a.cli("trace", "start", "an open goal").output.strip()
    peer_session = b.cli("trace", "start", "the peer's goal").output.strip()
    b.cli("trace", "finish", peer_session, "done")
    b.cli("trace", "publish")
    wait_for(lambda: a.cli("trace", "merge", ok=False) and peer_session in _sessions(a), timeout=30,
             what="the peer's session on node1")
    before_frames, before_head, before_steps = _frame_tree(a.home), _head(a.home), trace_steps(a.home)
    work = tmp_path / "inputs"
    work.mkdir()
    failures = []
    for case in CLI_CASES:
        args = list(case.args(work) if callable(case.args) else case.args)
        args = [open_session if x == "@open" else peer_session if x == "@peer" else x for x in args]
        result = _cli(a, args)
        why = None
        if result.exit_code != case.code:
            why = f"exit {result.exit_code}, expected {case.code}"
        if case.code != 0:
            why = why or _problem_with_output(result.output, result.exception)
        if not why and case.says and case.says not in result.output:
            why = f"does not name {case.says!r}"
        if why:
            failures.append(f"{case.name}: {why}: {result.output.strip()[:160]!r}")
    assert daemon.proc.poll() is None, "the daemon died"
    tree = _frame_tree(a.home)
    changed = [p for p, data in before_frames.items() if tree.get(p) != data]
    assert not changed, f"good frames changed: {changed}"
    written = sorted(set(tree) - set(before_frames))
    if written:
        failures.append(f"refused input was written into frames.shared/: {written}")
    if _head(a.home) != before_head:
        failures.append("frames.git got a commit from refused input")
    if not before_steps <= trace_steps(a.home):
        failures.append("steps were lost")
    if not _daemon_commits(a, "cli"):
        failures.append("the daemon stopped committing")
    print(f"{len(CLI_CASES)} command-line cases, {len(failures)} failing")
    assert not failures, f"{len(failures)} of {len(CLI_CASES)} rows failed:\n" + "\n".join(failures)


def _sessions(node) -> set[str]:
    conn = sqlite3.connect(NodeLayout(node.home).trace_db)
    try:
        return {r[0] for r in conn.execute("SELECT DISTINCT session FROM steps")}
    finally:
        conn.close()


def _limit_frame_size(node, limit: int = 1_000_000) -> None:
    config = NodeLayout(node.home).config
    config.write_text(config.read_text().replace("max_size = 16777216", f"max_size = {limit}"))


# -- files in frames.shared/ -----------------------------------------------------------


def _genuine(node, frame_id: str, body: dict | None = None, author: str | None = None) -> Frame:
    key = load_private_key(NodeLayout(node.home).private_key)
    return Frame.create(frame_id, author or node.name, body or {"text": frame_id}, key)


def _mutated(node, frame_id: str, change: Callable[[dict], None]) -> bytes:
    doc = _genuine(node, frame_id).to_dict()
    change(doc)
    return json.dumps(doc).encode()


def _frame_file_cases(node, peer, good_old: bytes) -> dict[str, Callable[[Path], None]]:
    """Relative path in frames.shared/ → how to make the bad file there."""
    def text(data: bytes | str):
        return lambda p: p.write_bytes(data.encode() if isinstance(data, str) else data)

    def frame(frame_id: str, change: Callable[[dict], None]):
        return text(_mutated(node, frame_id, change))

    def drop(key: str):
        return lambda d: d.pop(key)

    def put(key: str, value):
        return lambda d: d.__setitem__(key, value)

    def body(value):
        return lambda d: d.__setitem__("body", value)

    valid = _genuine(node, "bad/truncated").to_bytes()
    cases: dict[str, Callable[[Path], None]] = {
        "bad/empty": text(""),
        "bad/spaces": text("   \n"),
        "bad/null": text("null"),
        "bad/list": text("[]"),
        "bad/number": text("42"),
        "bad/object": text("{}"),
        "bad/version-only": text('{"twinsync": 1}'),
        "bad/truncated": text(valid[: len(valid) // 2]),
        "bad/not-utf8": text(b'{"twinsync": 1, "id": "\xff\xfe"}'),
        "bad/bom": text(b"\xef\xbb\xbf" + _genuine(node, "bad/bom").to_bytes()),
        "bad/nul-bytes": text(b"\x00" * 64),
        "bad/binary": text(os.urandom(512)),
        "bad/deep": text('{"a":' * DEEP + "1" + "}" * DEEP),
        "bad/deep-list": text("[" * DEEP + "]" * DEEP),
        "bad/nan": frame("bad/nan", body({"x": float("nan")})),
        "bad/infinity": frame("bad/infinity", body({"x": float("inf")})),
        "bad/huge-int": text(json.dumps(_genuine(node, "bad/huge-int").to_dict()).replace(
            '"body": {', '"body": {"n": ' + "9" * 5000 + ", ", 1)),
        "bad/over-max-size": text(json.dumps({"twinsync": 1, "id": "bad/over-max-size", "pad": "x" * 1_100_000})),
        "bad/hash-altered": frame("bad/hash-altered", put("hash", "sha256:" + "0" * 64)),
        "bad/body-altered": frame("bad/body-altered", body({"text": "changed after signing"})),
        "bad/sig-altered": frame("bad/sig-altered", put("sig", "A" * 86 + "==")),
        "bad/sig-not-base64": frame("bad/sig-not-base64", put("sig", "!!!")),
        "bad/unknown-author": text(_genuine(node, "bad/unknown-author", author="mallory").to_bytes()),
        "bad/peer-name-own-key": text(_genuine(node, "bad/peer-name-own-key", author=peer.name).to_bytes()),
        "bad/id-mismatch": text(_genuine(node, "bad/somewhere-else").to_bytes()),
        "bad/version-2": frame("bad/version-2", put("twinsync", 2)),
        "bad/version-string": frame("bad/version-string", put("twinsync", "1")),
        "bad/extra-field": frame("bad/extra-field", put("extra", True)),
        "bad/created-garbage": frame("bad/created-garbage", put("created", "yesterday")),
        "bad/created-future": frame("bad/created-future", put("created", "9999-12-31T23:59:59.999999Z")),
        "bad/parents-string": frame("bad/parents-string", put("parents", "sha256:00")),
        "bad/parents-garbage": frame("bad/parents-garbage", put("parents", [1, None, {}])),
        "bad/body-list": frame("bad/body-list", body([1, 2, 3])),
        "bad/body-string": frame("bad/body-string", body("text")),
        "bad/id-number": frame("bad/id-number", put("id", 7)),
        "bad/id-climbs": frame("bad/id-climbs", put("id", "../../etc/passwd")),
        **{f"bad/missing-{k}": frame(f"bad/missing-{k}", drop(k))
           for k in ("twinsync", "id", "author", "created", "parents", "body", "hash", "sig")},
        "notes/good": text(good_old),  # a rollback: an older genuine version written back
        "bad/orphan.sync-conflict-20261201-000000-ABCDEFG": text(_genuine(node, "bad/orphan").to_bytes()),
        "bad/dir": lambda p: p.mkdir(),
        "bad/link-out": lambda p: p.symlink_to("/etc/passwd"),
        "bad/link-loop": lambda p: p.symlink_to(p),
        "bad/link-dangling": lambda p: p.symlink_to(p.parent / "nowhere"),
    }
    return cases


@pytest.mark.timeout(180)
def test_bad_files_in_frames_shared_become_queue_items(cluster):
    c = cluster(2)
    a, b = c.nodes["node1"], c.nodes["node2"]
    _limit_frame_size(a)
    c.stop_syncthing("node2")  # node2 only lends its name and key
    daemon = c.start_daemon("node1")
    a.cli("frame", "put", "notes/good", "--body", '{"text": "first"}')
    good_old = (NodeLayout(a.home).frames_shared / "notes/good.frame.json").read_bytes()
    a.cli("frame", "put", "notes/good", "--body", '{"text": "second"}')
    a.cli("frame", "put", "notes/other", "--body", '{"text": "other"}')
    shared = NodeLayout(a.home).frames_shared
    before_head = _head(a.home)
    cases = _frame_file_cases(a, b, good_old)
    good_now = _frame_tree(a.home)
    for rel, make in cases.items():
        path = shared / f"{rel}.frame.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        make(path)

    def items() -> dict[str, dict]:
        found = {}
        for item in json.loads(a.cli("conflicts", "--json").output):
            if item["status"] == "open":
                for key in ("path", "copy_path"):
                    if item.get(key):
                        found[item[key].removesuffix(".frame.json")] = item
                if item.get("frame"):
                    found.setdefault(item["frame"], item)
        return found

    try:
        wait_for(lambda: set(cases) <= set(items()), timeout=10, what="a queue item for every bad file",
                 interval=0.5)
    except AssertionError:
        pass
    queued = items()
    failures = []
    for rel in cases:
        item = queued.get(rel)
        if item is None:
            failures.append(f"{rel}: no queue item (accepted or ignored without a word)")
            continue
        reason = item.get("reason") or ""
        if "Traceback" in reason or "\n" in reason.strip() or len(reason) > MAX_CHARS:
            failures.append(f"{rel}: unclear reason {reason[:160]!r}")
    log = git(a.home, "log", "--all", "--format=", "--name-only").stdout
    committed = sorted(rel for rel in cases if rel.startswith("bad/") and f"{rel}.frame.json" in log)
    if committed:
        failures.append(f"bad files were committed to frames.git: {committed}")
    if git(a.home, "show", "HEAD:notes/good.frame.json").stdout.encode() != good_now["notes/good.frame.json"]:
        failures.append("notes/good: the rollback became the current revision without a decision")
    if _head(a.home) != before_head:
        failures.append("frames.git got a new commit from bad files")
    assert (shared / "notes/other.frame.json").read_bytes() == good_now["notes/other.frame.json"]
    assert daemon.proc.poll() is None, "the daemon died"
    if not _daemon_commits(a, "files"):
        failures.append("the daemon stopped committing after the bad files")
    fifo = shared / "bad/fifo.frame.json"
    os.mkfifo(fifo)
    try:
        if not _daemon_commits(a, "fifo"):
            failures.append("bad/fifo: a FIFO named like a frame stalls the daemon")
        elif "bad/fifo" not in items():
            failures.append("bad/fifo: no queue item")
    finally:
        _unblock(fifo)
    assert daemon.proc.poll() is None, "the daemon died"
    print(f"{len(cases) + 1} frames.shared/ cases, {len(failures)} failing")
    assert not failures, f"{len(failures)} of {len(cases) + 1} rows failed:\n" + "\n".join(failures)


def _unblock(fifo: Path) -> None:
    """Let whoever is stuck opening the FIFO go (it reads end of file), then remove it."""
    try:
        fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        os.close(fd)
    except OSError:
        pass
    fifo.unlink(missing_ok=True)


# -- files in trace/recovery/ ----------------------------------------------------------


@dataclass
class Published:
    """One genuine, not yet merged piece of node2 to mutate: its manifest, .db and key."""

    manifest: dict
    db: bytes
    name: str
    sub: str


def _resign(manifest: dict, key) -> dict:
    return sign_manifest({k: v for k, v in manifest.items() if k != "sig"}, key)


def _db_with(db: bytes, tmp: Path, sql: str) -> bytes:
    path = tmp / "edit.db"
    path.unlink(missing_ok=True)
    path.write_bytes(db)
    conn = sqlite3.connect(path)
    try:
        conn.executescript(sql)
        conn.commit()
    finally:
        conn.close()
    return path.read_bytes()


def _recovery_cases(seg: Published, snap: Published, key, tmp: Path) -> dict[str, tuple[str, Callable[[Path], list[Path]]]]:
    """Case name → (sub-folder, how to make the files there; returns what it made)."""
    def pair(p: Published, manifest: dict | bytes | None, db: bytes | None, *, db_name: str | None = None,
             manifest_name: str | None = None):
        def make(folder: Path) -> list[Path]:
            made = []
            if db is not None:
                target = folder / (db_name or p.manifest["file"])
                target.write_bytes(db)
                made.append(target)
            if manifest is not None:
                target = folder / (manifest_name or p.name)
                target.write_bytes(manifest if isinstance(manifest, bytes) else json.dumps(manifest, indent=2).encode())
                made.append(target)
            return made
        return make

    def signed_db(p: Published, sql: str, **fields) -> Callable[[Path], list[Path]]:
        """A db changed after the fact but with a manifest its node really signed: what a
        buggy or compromised trusted node could publish."""
        db = _db_with(p.db, tmp, sql)
        (tmp / "x.db").write_bytes(db)
        manifest = _resign({**p.manifest, "sha256": file_sha256(tmp / "x.db"), **fields}, key)
        return pair(p, manifest, db)

    def resigned(p: Published, **fields):
        return pair(p, _resign({**p.manifest, **fields}, key), p.db)

    def unsigned(p: Published, **fields):
        return pair(p, {**p.manifest, **fields}, p.db)

    def without(p: Published, field: str):
        return pair(p, _resign({k: v for k, v in p.manifest.items() if k not in (field, "sig")}, key)
                    if field != "sig" else {k: v for k, v in p.manifest.items() if k != "sig"}, p.db)

    def special_db(p: Published, how: Callable[[Path], None]):
        def make(folder: Path) -> list[Path]:
            target = folder / p.manifest["file"]
            how(target)
            manifest = folder / p.name
            manifest.write_text(json.dumps(p.manifest))
            return [target, manifest]
        return make

    def dir_manifest(p: Published):
        def make(folder: Path) -> list[Path]:
            (folder / p.name).mkdir()
            return [folder / p.name]
        return make

    cases: dict[str, tuple[str, Callable[[Path], list[Path]]]] = {}
    for label, p in (("segment", seg), ("snapshot", snap)):
        rows = p.manifest["rows"]
        cases.update({
            f"{label} manifest empty": (p.sub, pair(p, b"", p.db)),
            f"{label} manifest spaces": (p.sub, pair(p, b"  \n", p.db)),
            f"{label} manifest null": (p.sub, pair(p, b"null", p.db)),
            f"{label} manifest list": (p.sub, pair(p, b"[]", p.db)),
            f"{label} manifest malformed": (p.sub, pair(p, b'{"node": ', p.db)),
            f"{label} manifest not utf-8": (p.sub, pair(p, b'{"node": "\xff"}', p.db)),
            f"{label} manifest truncated": (p.sub, pair(p, json.dumps(p.manifest).encode()[:60], p.db)),
            f"{label} manifest over the size limit": (p.sub, pair(p, json.dumps({**p.manifest, "pad": "x" * 70_000}).encode(), p.db)),
            f"{label} manifest nested 100,000 deep": (p.sub, pair(p, ("[" * DEEP + "]" * DEEP).encode(), p.db)),
            f"{label} manifest is a directory": (p.sub, dir_manifest(p)),
            f"{label} manifest signature altered": (p.sub, unsigned(p, sig="A" * 86 + "==")),
            f"{label} manifest signature not text": (p.sub, unsigned(p, sig=12)),
            f"{label} manifest rows changed unsigned": (p.sub, unsigned(p, rows=rows + 1)),
            f"{label} manifest from an unknown node": (p.sub, unsigned(p, node="mallory")),
            f"{label} manifest claims this node": (p.sub, unsigned(p, node="node1")),
            f"{label} manifest sha256 altered": (p.sub, resigned(p, sha256="0" * 64)),
            f"{label} manifest sha256 malformed": (p.sub, resigned(p, sha256="xyz")),
            f"{label} manifest rows too many": (p.sub, resigned(p, rows=rows + 5)),
            f"{label} manifest version 2": (p.sub, resigned(p, twinsync=2)),
            f"{label} manifest extra field": (p.sub, resigned(p, extra=1)),
            f"{label} manifest seq string": (p.sub, resigned(p, seq="1")),
            f"{label} manifest seq negative": (p.sub, resigned(p, seq=-1)),
            f"{label} manifest created garbage": (p.sub, resigned(p, created="soon")),
            f"{label} manifest names another file": (p.sub, resigned(p, file="../../../trace.db")),
            **{f"{label} manifest without {k}": (p.sub, without(p, k)) for k in ("node", "seq", "sha256", "sig", "created")},
            f"{label} db empty": (p.sub, pair(p, p.manifest, b"")),
            f"{label} db truncated": (p.sub, pair(p, p.manifest, p.db[: len(p.db) // 2])),
            f"{label} db bit flipped": (p.sub, pair(p, p.manifest, p.db[:-100] + bytes([p.db[-100] ^ 0xFF]) + p.db[-99:])),
            f"{label} db with an extra table, signed": (p.sub, signed_db(p, "CREATE TABLE extra(x);")),
            f"{label} db with a trigger, signed": (p.sub, signed_db(
                p, "CREATE TABLE t(x); CREATE TRIGGER tr AFTER INSERT ON t BEGIN DELETE FROM steps; END;")),
            f"{label} db with a view, signed": (p.sub, signed_db(p, "CREATE VIEW v AS SELECT 1;")),
            f"{label} db with a forged step, signed": (p.sub, signed_db(p, "UPDATE steps SET content = 'forged';")),
            f"{label} db with a step of another author, signed": (p.sub, signed_db(p, "UPDATE steps SET author = 'node1';")),
            f"{label} db without steps, signed": (p.sub, signed_db(p, "DROP TABLE steps;")),
            f"{label} db is a symlink out": (p.sub, special_db(p, lambda t: t.symlink_to("/etc/passwd"))),
            f"{label} db is a directory": (p.sub, special_db(p, lambda t: t.mkdir())),
        })
    cases["segment db random bytes, signed"] = (seg.sub, _signed_bytes(seg, key, tmp))
    cases["snapshot db random bytes, signed"] = (snap.sub, _signed_bytes(snap, key, tmp))
    # Rows a signature may get through (the signer is trusted) go last: once one of them is
    # merged, the genuine piece is in and later rows would prove nothing.
    last = ("created garbage", "extra table", "trigger", "view")
    def order(name: str) -> tuple[bool, bool, bool]:
        risky = any(m in name for m in last)
        return risky, risky and name.startswith("segment"), risky and "created" in name

    return dict(sorted(cases.items(), key=lambda kv: order(kv[0])))


def _signed_bytes(p: Published, key, tmp: Path):
    data = os.urandom(4096)
    (tmp / "r.db").write_bytes(data)
    manifest = _resign({**p.manifest, "sha256": file_sha256(tmp / "r.db")}, key)

    def make(folder: Path) -> list[Path]:
        (folder / p.manifest["file"]).write_bytes(data)
        (folder / p.name).write_text(json.dumps(manifest))
        return [folder / p.manifest["file"], folder / p.name]
    return make


def _publish_piece(b, sub: str) -> Published:
    folder = NodeLayout(b.home).recovery(b.name) / sub
    newest = max(folder.glob("*.json"), key=lambda p: p.stat().st_mtime)
    manifest = json.loads(newest.read_text())
    return Published(manifest, (folder / manifest["file"]).read_bytes(), newest.name, sub)


def _remove(paths: list[Path]) -> None:
    for path in paths:
        if path.is_dir() and not path.is_symlink():
            path.rmdir()
        else:
            path.unlink(missing_ok=True)


@pytest.mark.timeout(240)
def test_bad_files_in_trace_recovery_are_refused_by_name(cluster, tmp_path):
    c = cluster(2)
    a, b = c.nodes["node1"], c.nodes["node2"]
    for name in c.nodes:  # files are delivered by hand, so Syncthing must not race them
        c.stop_syncthing(name)
    configure(b, snapshot_every_segments=1)
    first = b.cli("trace", "start", "goal one").output.strip()
    b.cli("trace", "finish", first, "one")
    b.cli("trace", "publish")
    src, dst = NodeLayout(b.home).recovery("node2"), NodeLayout(a.home).recovery("node2")
    for sub in (SEGMENTS_DIR, SNAPSHOTS_DIR):
        (dst / sub).mkdir(parents=True, exist_ok=True)
        for f in sorted((src / sub).iterdir(), key=lambda p: p.suffix != ".db"):
            (dst / sub / f.name).write_bytes(f.read_bytes())
    a.cli("trace", "merge")
    baseline = trace_steps(a.home)
    second = b.cli("trace", "start", "goal two").output.strip()
    b.cli("trace", "add", second, "observation", "never merged here")
    b.cli("trace", "finish", second, "two")
    b.cli("trace", "publish")
    seg, snap = _publish_piece(b, SEGMENTS_DIR), _publish_piece(b, SNAPSHOTS_DIR)
    unmerged = trace_steps(b.home) - baseline
    assert unmerged
    daemon = c.start_daemon("node1")
    key = load_private_key(NodeLayout(b.home).private_key)
    work = tmp_path / "edit"
    work.mkdir()
    cases = _recovery_cases(seg, snap, key, work)
    before_files = {p for p in dst.rglob("*")}
    failures = _fifo_db(a, seg, dst)  # first: a later row may let the genuine piece in
    for name, (sub, make) in cases.items():
        made = make(dst / sub)
        try:
            result = a.cli("trace", "merge", ok=False)
            why = None
            if result.exit_code != 1:
                why = f"exit {result.exit_code}, expected 1"
            why = why or _problem_with_output(result.output, result.exception)
            named = {p.name for p in made}
            if not why and not any(n in result.output for n in named):
                why = "does not name the file"
            if unmerged & trace_steps(a.home):
                why = (why + "; " if why else "") + "its steps were merged"
            if why:
                failures.append(f"{name}: {why}: {result.output.strip()[:200]!r}")
        finally:
            _remove(made)
        if unmerged & trace_steps(a.home):
            left = list(cases)[list(cases).index(name) + 1:]
            if left:
                failures.append(f"{len(left)} row(s) not run once {name!r} was merged: {left}")
            break
        assert baseline <= trace_steps(a.home), f"{name}: earlier good steps were lost"
    assert {p for p in dst.rglob("*")} == before_files
    assert daemon.proc.poll() is None, "the daemon died"
    if not _daemon_commits(a, "recovery"):
        failures.append("the daemon stopped committing frames")
    total = len(cases) + 1
    print(f"{total} trace/recovery/ cases, {len(failures)} failing")
    assert not failures, f"{len(failures)} of {total} rows failed:\n" + "\n".join(failures)


def _fifo_db(a, seg: Published, dst: Path) -> list[str]:
    """A FIFO as a segment's .db: the merge must not wait on it forever."""
    folder = dst / seg.sub
    fifo = folder / seg.manifest["file"]
    os.mkfifo(fifo)
    (folder / seg.name).write_text(json.dumps(seg.manifest))
    twinsync = str(Path(sys.executable).with_name("twinsync"))
    try:
        done = subprocess.run([twinsync, "trace", "merge", "--home", str(a.home)], capture_output=True,
                              text=True, timeout=20)
    except subprocess.TimeoutExpired:
        return ["segment db is a FIFO: `trace merge` waits on it forever"]
    finally:
        _unblock(fifo)
        (folder / seg.name).unlink(missing_ok=True)
    output = done.stdout + done.stderr
    why = None if done.returncode == 1 else f"exit {done.returncode}, expected 1"
    why = why or _problem_with_output(output, None)
    if not why and seg.manifest["file"] not in output:
        why = "does not name the file"
    return [f"segment db is a FIFO: {why}: {output.strip()[:200]!r}"] if why else []
