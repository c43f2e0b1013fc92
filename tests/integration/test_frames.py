"""Frames across real Syncthing nodes and real `twinsync run` daemons (DESIGN §3 flows 1-2)."""

from __future__ import annotations

import json
import signal
import subprocess

import pytest
from typer.testing import CliRunner

from folders.frame import Frame, save_frame
from folders.keys import load_private_key
from folders.gitstore import FrameRepo
from folders.validator import judge_one_by_one
from orchestrator.cli.app import app
from orchestrator.node import Node
from orchestrator.pipeline import FramePipeline
from syncthing.folderspec import FRAMES_FOLDER_ID
from tests.conftest import wait_for

pytestmark = pytest.mark.integration

FRAME = "notes/today"
REL = "notes/today.frame.json"


def _history(node, frame_id: str = FRAME) -> list[dict]:
    result = node.cli("frame", "log", frame_id, "--json", ok=False)
    return json.loads(result.output) if result.exit_code == 0 else []


def _conflicts(node, *extra: str) -> list[dict]:
    return json.loads(node.cli("conflicts", "--json", *extra).output)


def _body(node, frame_id: str = FRAME):
    result = node.cli("frame", "get", frame_id, ok=False)
    return json.loads(result.output) if result.exit_code == 0 else None


def _git(node, *args: str) -> str:
    """Plain `git` on the node's frames.git: the test reads history the way a person would."""
    done = subprocess.run(["git", f"--git-dir={node.home / 'frames.git'}", *args],
                          capture_output=True, check=True)
    return done.stdout.decode()


def test_put_on_one_node_is_committed_on_every_node_with_its_author(mesh, daemon_factory):
    nodes = mesh(3)
    for node in nodes:
        daemon_factory(node)
    a, b, c = nodes
    a.cli("frame", "put", FRAME, "--body", '{"text": "hello"}')
    for node in (b, c):
        wait_for(lambda: _history(node), timeout=20, what=f"commit of {FRAME} on {node.name}")
        assert _history(node)[0]["author"] == "node1"
        assert _body(node) == {"text": "hello"}
    assert [r["author"] for r in _history(a)] == ["node1"]


def _wide(node, *args: str) -> str:
    """The command's output on a 250-column terminal, so table cells are not wrapped."""
    result = CliRunner().invoke(app, [*args, "--home", str(node.home)], env={"COLUMNS": "250"})
    assert result.exit_code == 0, result.output
    return result.output


def test_concurrent_edits_become_one_conflict_item_everywhere_and_one_approval_settles_it(
        mesh, daemon_factory):
    """Every node names the same versions by their signers (not by the Syncthing device in
    the copy's name), says what approve and reject do, and shows who decided where."""
    a, b, c = mesh(3)
    for node in (a, b, c):
        daemon_factory(node)
    a.cli("frame", "put", FRAME, "--body", '{"v": 1}')
    for node in (b, c):
        wait_for(lambda: len(_history(node)) == 1, timeout=20, what=f"v1 committed on {node.name}")

    a.client().patch_folder(FRAMES_FOLDER_ID, {"paused": True})
    a.cli("frame", "put", FRAME, "--body", '{"v": "from A"}')
    b.cli("frame", "put", FRAME, "--body", '{"v": "from B"}')
    wait_for(lambda: _body(c) == {"v": "from B"}, timeout=20, what="B's edit on C")
    a.client().patch_folder(FRAMES_FOLDER_ID, {"paused": False})

    for node in (a, b, c):
        wait_for(lambda: [i for i in _conflicts(node) if i["kind"] == "conflict"], timeout=40,
                 what=f"a conflict item on {node.name}")
    for node in (a, b, c):  # Syncthing settles on one winner: the same current version everywhere
        wait_for(lambda: _conflicts(node)[0]["ours_hash"] == json.loads(
            (node.home / "frames.shared" / REL).read_text())["hash"], timeout=20, what=f"{node.name} settled")
    winner = json.loads((b.home / "frames.shared" / REL).read_text())["author"]
    loser = ({"node1", "node2"} - {winner}).pop()
    for node in (a, b, c):
        (item,) = _conflicts(node)
        assert (item["ours_author"], item["theirs_author"]) == (winner, loser)
        assert item["current_version"].startswith(f"by {winner}, written at ")
        assert item["set_aside_version"].startswith(f"by {loser}, written at ")
        assert item["approve"].startswith(f"the set-aside version by {loser} becomes {FRAME} on every node")
        assert item["reject"].startswith(f"the current version by {winner} stays {FRAME} on every node")
        listed = _wide(node, "conflicts")
        assert f"by {winner}, " in listed and f"by {loser}, " in listed and item["device"] not in listed
    item = _conflicts(b)[0]
    assert item["frame"] == FRAME and item["status"] == "open"
    assert item["branch"].startswith(f"fork/{FRAME}/")
    assert item["device_name"] in ("node1", "node2", "node3")
    shown = b.cli("conflict", "show", str(item["id"])).output
    assert '"from A"' in shown and '"from B"' in shown
    assert f"current version: by {winner}, written at " in shown
    assert f"Syncthing named it after device {item['device']} = {item['device_name']}" in shown
    assert f"approve: {item['approve']}" in shown and f"reject: {item['reject']}" in shown

    out = b.cli("approve", str(item["id"])).output
    assert out.startswith(f"#{item['id']} {FRAME}: approved on node2 at ")
    chosen = json.loads((b.home / "frames.shared" / REL).read_text())["body"]
    for node in (a, b, c):
        wait_for(lambda: _body(node) == chosen and not _conflicts(node)
                 and not list((node.home / "frames.shared/notes").glob("*sync-conflict*")),
                 timeout=40, what=f"{node.name} to settle on the approved version")
    decided = [i for i in _conflicts(b, "--decided") if i["id"] == item["id"]][0]
    assert (decided["status"], decided["decided_by"]) == ("approved", "node2")
    message = _git(b, "log", "-1", "--format=%B", "--", REL)
    assert message.startswith(f"{FRAME}: the set-aside version by {loser} becomes current "
                              f"(approved on node2, queue item #{item['id']})")
    assert _git(b, "log", "-1", "--format=%an", "--", REL).strip() == loser  # the text is the loser's
    versions = {json.loads(_git(b, "show", f"{c}:{REL}"))["body"]["v"]
                for c in _git(b, "rev-list", "--all", "--", REL).split()}
    assert {"from A", "from B"} <= versions

    b.cli("trace", "publish")  # the decision is a trace step of node2: peers learn who decided
    for node in (a, c):
        wait_for(lambda: [(i["status"], i["decided_by"]) for i in _conflicts(node, "--decided")
                          if i["kind"] == "conflict"] == [("approved", "node2")],
                 timeout=40, what=f"{node.name} to show who decided")
        assert "approved on node2 at " in _wide(node, "conflicts", "--decided")


def test_forged_frames_are_never_committed_and_are_queued_with_their_reason(mesh, daemon_factory, tmp_path):
    a, b = mesh(2)
    daemon_factory(b)
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    stranger = Frame.create("notes/stranger", "node9", {"x": 1}, Ed25519PrivateKey.generate())
    save_frame(b.home / "frames.shared", stranger)
    impostor = Frame.create("notes/impostor", "node1", {"x": 2}, Ed25519PrivateKey.generate())
    save_frame(b.home / "frames.shared", impostor)

    def reasons():
        return {i["path"]: i["reason"] for i in _conflicts(b) if i["kind"] == "invalid"}

    wait_for(lambda: len(reasons()) == 2, timeout=20, what="two invalid items")
    assert reasons()["notes/stranger.frame.json"].startswith("untrusted_author")
    assert reasons()["notes/impostor.frame.json"].startswith("bad_signature")
    assert _git(b, "log", "--all", "--format=%H", "--", "notes/").strip() == ""


def _bad_variants(good: Frame, key) -> dict[str, bytes]:
    """≥ 25 ways a frame file can be wrong, each written over a committed good frame."""
    d = good.to_dict()
    raw = good.to_bytes()

    def doc(**changes) -> bytes:
        return json.dumps({**d, **changes}).encode()

    def without(field) -> bytes:
        return json.dumps({k: v for k, v in d.items() if k != field}).encode()

    resigned_other = Frame.create(good.id, good.author, {"other": True}, key).to_dict()
    pretty_hash = "sha256:" + __import__("hashlib").sha256(
        json.dumps(good.unsigned_dict(), indent=2).encode()).hexdigest()
    return {
        "truncated": raw[: len(raw) // 2],
        "empty": b"",
        "not_json": b"hello world",
        "array": b"[1, 2, 3]",
        "string": b'"frame"',
        "bom": b"\xef\xbb\xbf" + raw,
        "not_utf8": raw.replace(b'"body"', b'"b\xff\xfey"'),
        "duplicate_key": raw[:-2] + b',"id":"notes/x"}\n',
        "nan": raw.replace(b'"twinsync":1', b'"twinsync":NaN'),
        "version_2": doc(twinsync=2),
        "id_int": doc(id=5),
        "body_list": doc(body=[1, 2]),
        "parents_str": doc(parents="sha256:00"),
        "parents_bad": doc(parents=["md5:00"]),
        "created_bad": doc(created="yesterday"),
        "author_list": doc(author=["a"]),
        "no_hash": without("hash"),
        "no_sig": without("sig"),
        "no_body": without("body"),
        "extra_field": doc(extra=1),
        "id_mismatch": doc(id="notes/elsewhere"),
        "dotdot_id": doc(id="../notes/today"),
        "absolute_id": doc(id="/notes/today"),
        "body_changed": doc(body={"tampered": True}),
        "hash_other_canon": doc(hash=pretty_hash),
        "sig_other_hash": doc(sig=resigned_other["sig"]),
        "sig_garbage": doc(sig="ed25519:AAAA"),
        "huge": b'{"pad": "' + b"x" * (17 * 1024 * 1024) + b'"}',
        "deep": raw.replace(b'"body":{', b'"body":{"d":' + b"[" * 100_000 + b"]" * 100_000 + b',', 1),
    }


def test_bad_frames_get_reasons_and_never_replace_the_last_good_version(node_factory, daemon_factory):
    node = node_factory("node1")
    daemon = daemon_factory(node)
    key = load_private_key(node.home / "keys/node.key")
    root = node.home / "frames.shared"
    goods = {}
    variants = None
    for i in range(29):
        frame = Frame.create(f"bad/f{i:02d}", "node1", {"i": i}, key)
        goods[frame.id] = frame
        variants = variants or _bad_variants(frame, key)
    node.cli("frame", "put", "bad/f00", "--body", '{"i": 0}')
    for frame in goods.values():
        save_frame(root, frame)
    wait_for(lambda: len(_git(node, "ls-tree", "-r", "--name-only", "HEAD", "bad/").split()) == 29, timeout=30, what="29 good frames")

    names = sorted(variants)
    assert len(names) >= 25
    for (frame_id, frame), name in zip(sorted(goods.items()), names):
        (root / f"{frame_id}.frame.json").write_bytes(_bad_variants(frame, key)[name])
    (root / "bad" / "dir.frame.json").mkdir()
    outside = node.home / "outside.json"
    outside.write_bytes(goods["bad/f00"].to_bytes())
    (root / "bad" / "link.frame.json").symlink_to(outside)

    def invalid():
        return {i["path"]: i["reason"] for i in _conflicts(node) if i["kind"] == "invalid"}

    wait_for(lambda: len(invalid()) >= len(names) + 1, timeout=40, what="an item per bad file")
    assert daemon.proc.poll() is None, "the daemon must survive every bad file"
    for path, reason in invalid().items():
        assert path in reason and ":" in reason, reason
    deep = f"bad/f{names.index('deep'):02d}.frame.json"
    assert "nested more than 100 levels deep" in invalid()[deep], "the daemon names what the CLI names"
    for frame_id, frame in goods.items():
        committed = _git(node, "show", f"HEAD:{frame_id}.frame.json").encode()
        assert committed == frame.to_bytes(), f"{frame_id}: the last good version was replaced"
    assert "bad/link.frame.json" not in _git(node, "ls-tree", "-r", "--name-only", "HEAD").split()
    assert "Traceback" not in daemon.log()


def test_bytes_written_after_a_frame_was_judged_never_reach_git(node_factory):
    """A writer between the pipeline's check of a file and its commit (a person, a script,
    Syncthing): what Git records is what was judged or nothing. The rollback test above
    once lost this race: the daemon judged v2, the old v1 was written back, and the commit
    took v1 unjudged. The judge here is the pipeline's own, followed by such a writer."""
    node = node_factory("node1")
    node.cli("frame", "put", FRAME, "--body", '{"v": 1}')
    key = load_private_key(node.home / "keys/node.key")
    path = node.home / "frames.shared" / REL
    good = path.read_bytes()
    v2 = Frame.create(FRAME, "node1", {"v": 2}, key, parents=[json.loads(good)["hash"]])
    after_the_check = [b'{"not": "a frame"}', good]  # garbage; the old version written back

    for written in after_the_check:
        save_frame(node.home / "frames.shared", v2)

        def judge_then_write(root, paths, trusted, max_size, written=written):
            judged = judge_one_by_one(root, paths, trusted, max_size)
            path.write_bytes(written)
            return judged

        with Node.open(node.home) as opened, FrameRepo(opened.layout.frames_git) as repo:
            head = repo.head()
            FramePipeline(opened, repo, judge=judge_then_write).process([REL])
            assert repo.head() == head, "bytes written after the check were committed"
            assert repo.show("HEAD", REL) == good
            # The next batch (the writer's own change event) judges what is there now.
            report = FramePipeline(opened, repo).process([REL])
            assert repo.show("HEAD", REL) == good and not report.commits, report.summary()
            if written == good:  # what Git holds is on disk again: nothing to commit or hold
                assert report.committed == [REL] and not report.rollbacks and not report.invalid
            else:
                assert report.invalid == [REL]


def test_sigkill_mid_batch_then_restart_commits_every_file_exactly_once(node_factory, daemon_factory):
    node = node_factory("node1")
    key = load_private_key(node.home / "keys/node.key")
    root = node.home / "frames.shared"
    frames = [Frame.create(f"bulk/f{i:04d}", "node1", {"i": i}, key) for i in range(1500)]
    first = daemon_factory(node)
    for frame in frames[:750]:
        save_frame(root, frame)
    wait_for(lambda: "batch:" in first.log(), timeout=30, what="the first batch")
    for frame in frames[750:]:
        save_frame(root, frame)
    first.proc.send_signal(signal.SIGKILL)
    first.proc.wait()

    second = daemon_factory(node)
    wait_for(lambda: len(_git(node, "ls-tree", "-r", "--name-only", "HEAD", "bulk/").split()) == len(frames),
             timeout=60, what="every frame committed after the restart")
    adds = _git(node, "log", "--format=", "--name-only", "--diff-filter=A", "--", "bulk/").split()
    assert sorted(adds) == sorted(f"{f.id}.frame.json" for f in frames), "a frame was committed twice"
    assert second.stop() == 0


def test_a_rollback_is_held_on_every_node_and_a_reject_brings_the_newer_version_back_everywhere(
        mesh, daemon_factory):
    a, b = mesh(2)
    for node in (a, b):
        daemon_factory(node)
    a.cli("frame", "put", FRAME, "--body", '{"v": 1}')
    # Committed, not merely on disk: a v2 landing inside node2's batch window would be
    # committed alone, and node2 would never hold two versions.
    wait_for(lambda: len(_history(b)) == 1, timeout=20, what="v1 committed on node2")
    a.cli("frame", "put", FRAME, "--body", '{"v": 2}')
    wait_for(lambda: len(_history(b)) == 2, timeout=20, what="v2 committed on node2")
    first = _history(a)[-1]["commit"]
    (a.home / "frames.shared" / REL).write_bytes(_git(a, "show", f"{first}:{REL}").encode())

    def held(node):
        return [i for i in _conflicts(node) if i["kind"] == "rollback"]

    for node in (a, b):
        wait_for(lambda: held(node), timeout=30, what=f"the rollback held on {node.name}")
        assert len(_history(node)) == 2, f"{node.name} committed the rollback"
    a.cli("reject", str(held(a)[0]["id"]))
    for node in (a, b):
        wait_for(lambda: _body(node) == {"v": 2} and not held(node), timeout=30,
                 what=f"the newer version back and the item closed on {node.name}")
        assert len(_history(node)) == 2
