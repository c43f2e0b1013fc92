"""`twinsync ask` over real peer links between real daemons, each beside its own real
Syncthing on 127.0.0.1: routed to the peer nearest by meaning, then the next one, then the
stale local replica, and every peer tried said."""

from __future__ import annotations

import asyncio
import json
import re
import socket
import sys
import time
import tomllib

import pytest
import tomli_w
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from textual.widgets import Input, Static
from websockets.sync.client import connect

from folders import linkwire
from folders.keys import load_private_key

from orchestrator.node import Node
from orchestrator.metrics import node_metrics
from tests.conftest import wait_for
from tests.integration.test_modules import set_reasoner
from tests.tui.helpers import until
from tui.app import make_app
from tui.ask import AskScreen

pytestmark = pytest.mark.integration

TOMATOES = "how to grow tomatoes on the balcony"
TAXES = "when is the tax return due"


def reasoned(node, goal: str, steps: list[str], conclusion: str) -> None:
    session = node.cli("trace", "start", goal).output.strip()
    for step in steps:
        node.cli("trace", "add", session, "observation", step)
    node.cli("trace", "finish", session, conclusion)
    node.cli("trace", "publish")


def ask(node, goal: str, *extra: str) -> tuple[int, dict]:
    result = node.cli("ask", goal, "--json", *extra, ok=False)
    assert result.exit_code in (0, 3), result.output
    return result.exit_code, json.loads(result.stdout)


def announces_link(node, peer: str) -> bool:
    path = node.home / "trace/recovery" / peer / "fingerprint.json"
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    return bool(data.get("link")) and bool(data.get("profile", {}) or {})


def test_a_question_goes_to_the_peer_nearest_by_meaning_then_the_next_then_the_stale_replica(
        mesh, daemon_factory):
    a, b, c = mesh(3)
    reasoned(b, TOMATOES, ["tomato seedlings need sun on the balcony", "water tomatoes every morning"],
             "sow tomatoes in March, water every morning")
    reasoned(c, TAXES, ["the tax office sends the return form", "tax deadline is in July"],
             "file the tax return by 31 July")
    daemons = {n.name: daemon_factory(n) for n in (b, c)}  # `a` runs none: it merges nothing
    for peer in ("node2", "node3"):
        wait_for(lambda: announces_link(a, peer), 90, f"{peer}'s fingerprint with its link port on node1")

    code, answer = ask(a, TOMATOES)
    assert code == 0 and answer["source"] == "peer" and answer["answered_by"] == "node2", answer
    assert answer["via"] == "direct"  # node1 runs no daemon: the CLI dials node2 itself
    assert answer["conclusion"] == "sow tomatoes in March, water every morning"
    assert [t["peer"] for t in answer["tried"]] == ["node2"] and answer["fresh"] is True
    assert answer["tried"][0]["score"] > 0 and answer["elapsed_ms"] < 2000

    code, answer = ask(a, TAXES)
    assert code == 0 and answer["answered_by"] == "node3" and [t["peer"] for t in answer["tried"]] == ["node3"]

    # --node skips routing; a peer that knows nothing says so, and that is no answer.
    code, answer = ask(a, "what nobody has reasoned about", "--node", "node2", "--no-reason")
    assert code == 3 and answer["tried"][0]["outcome"] == "no conclusion" and answer["conclusion"] is None

    # The nearest peer is down: the next one answers from what it merged of it.
    wait_for(lambda: ask(c, TOMATOES)[1]["conclusion"] is not None, 60, "node3 merging node2's session")
    daemons["node2"].stop()
    code, answer = ask(a, TOMATOES)
    assert code == 0 and answer["answered_by"] == "node3", answer
    assert [(t["peer"], t["outcome"]) for t in answer["tried"]] == [("node2", "unreachable"), ("node3", "answered")]

    # Nobody answers: the local replica, stale (node1 merged nothing, so it knows nothing).
    daemons["node3"].stop()
    code, answer = ask(a, TOMATOES)
    assert code == 3 and answer["source"] == "nobody" and answer["conclusion"] is None
    assert {t["outcome"] for t in answer["tried"]} == {"unreachable"}
    text = a.cli("ask", TOMATOES, ok=False).output
    assert "No node knows a conclusion" in text and "tried node2: unreachable" in text

    # Once node1 holds the steps itself, it answers from its replica, marked stale.
    a.cli("trace", "merge")
    code, answer = ask(a, TOMATOES)
    assert code == 3 and answer["source"] == "stale local replica"
    assert answer["conclusion"] == "sow tomatoes in March, water every morning"

    # node2's daemon comes back on another port: its new fingerprint says where.
    old_port = json.loads((a.home / "trace/recovery/node2/fingerprint.json").read_text())["link"]
    daemon_factory(b)
    wait_for(lambda: ask(a, TOMATOES)[1]["answered_by"] == "node2", 60, "node2 answering again after its restart")
    new_port = json.loads((a.home / "trace/recovery/node2/fingerprint.json").read_text())["link"]
    assert new_port != old_port  # 127.0.0.1:0: another free port each start


def test_asks_answered_by_peers_are_the_access_metric_and_nodes_shows_each_link(mesh, daemon_factory,
                                                                               monkeypatch):
    monkeypatch.setenv("COLUMNS", "250")  # the whole `nodes` table on one line per node
    a, b = mesh(2)
    reasoned(b, TOMATOES, ["tomato seedlings need sun"], "sow in March")
    daemon_factory(a)
    daemon_factory(b)
    wait_for(lambda: announces_link(a, "node2"), 90, "node2's link port on node1")
    took = []
    for _ in range(3):
        answer = ask(a, TOMATOES, "--node", "node2")[1]
        assert answer["answered_by"] == "node2" and answer["via"] == "daemon"  # node1's daemon keeps the link
        took.append(answer["tried"][0]["elapsed_ms"])
    with Node.open(a.home) as node:
        metrics = node_metrics(node)
    assert metrics.access_samples == 3 and metrics.access_p95_ms == pytest.approx(max(took), abs=0.001)

    def link_of_node2() -> dict:
        rows = {row["name"]: row for row in json.loads(a.cli("nodes", "--json").output)}
        return rows["node2"]["link"] or {}

    wait_for(lambda: link_of_node2().get("rtt_ms") is not None, 60, "node1 pinging node2's link")
    assert link_of_node2()["problem"] is None
    status = json.loads(a.cli("status", "--json").output)
    assert status["link"]["listen"] == "127.0.0.1:0" and status["link"]["port"] > 0
    assert f"serving on port {status['link']['port']}" in a.cli("status").output
    table = a.cli("nodes").output
    assert " link " in table.splitlines()[1]
    assert re.search(r"node2 +│ yes +│ \d+ ms", table), table


REASONER = """import json, sys
request = json.load(sys.stdin)
print(json.dumps({"steps": [{"kind": "observation", "content": "thought about " + request["goal"]}],
                  "conclusion": "answer to " + request["goal"]}))
"""


def test_a_peer_without_a_conclusion_runs_its_reasoner_and_a_session_finished_there_is_answerable_at_once(
        mesh, daemon_factory, tmp_path):
    a, b = mesh(2)
    script = tmp_path / "reason.py"
    script.write_text(REASONER)
    set_reasoner(b, command=[sys.executable, str(script)], timeout_s=10)
    daemon_factory(b)
    wait_for(lambda: announces_link(a, "node2"), 90, "node2's link port on node1")

    code, answer = ask(a, "plan the week", "--node", "node2", "--timeout", "20")
    assert code == 0 and answer["reasoned"] is True and answer["conclusion"] == "answer to plan the week", answer
    code, answer = ask(a, "plan the week", "--node", "node2")
    assert code == 0 and answer["reasoned"] is False, answer["tried"]  # node2 holds it now, published
    code, answer = ask(a, "another week", "--node", "node2", "--no-reason")
    assert code == 3 and answer["tried"][0]["outcome"] == "no conclusion", answer["tried"]

    # Finished on node2 by hand: its daemon publishes it at once, so node1's question finds it.
    session = b.cli("trace", "start", "when to prune the roses").output.strip()
    b.cli("trace", "add", session, "observation", "roses bloom on new wood")
    b.cli("trace", "finish", session, "prune in early spring")
    # Within 3 s: the daemon's look for finished sessions is woken by its trace watcher, and
    # otherwise only every FINISH_FALLBACK_S (5 s).
    wait_for(lambda: ask(a, "when to prune the roses", "--node", "node2", "--no-reason")[0] == 0, 3,
             "the finished session answerable over the link (published within about half a second)")


def test_the_tui_asks_as_the_cli_does(mesh, daemon_factory):
    a, b = mesh(2)
    reasoned(b, TOMATOES, ["tomato seedlings need sun"], "sow in March")
    daemon_factory(b)
    wait_for(lambda: announces_link(a, "node2"), 90, "node2's link port on node1")

    def shown(app) -> str:
        return str(app.screen.query_one("#ask-answer", Static).content)

    async def drive() -> None:
        app = make_app(a.home, refresh_s=0.5)
        async with app.run_test(size=(120, 40)) as pilot:
            await pilot.press("k")
            await until(pilot, lambda: isinstance(app.screen, AskScreen), "the Ask dialog")
            app.screen.query_one(Input).value = TOMATOES
            await pilot.press("enter")
            await until(pilot, lambda: "sow in March" in shown(app), "the answer from node2", timeout=20)
            assert "node2 answered in" in shown(app) and "tried node2: answered" in shown(app)
            app.screen.query_one(Input).value = "what nobody knows"
            await pilot.press("enter")
            await until(pilot, lambda: "No node knows a conclusion" in shown(app), "no answer", timeout=20)
            await pilot.press("escape")
            await until(pilot, lambda: not isinstance(app.screen, AskScreen), "the dialog closed")

    asyncio.run(drive())


def test_a_hostile_connection_gets_sentences_and_the_daemon_goes_on_answering(mesh, daemon_factory, tmp_path):
    """Against node2's real daemon, on a link port someone else already holds."""
    a, b = mesh(2)
    reasoned(b, TOMATOES, ["tomato seedlings need sun"], "sow in March")
    squatter = socket.socket()
    squatter.bind(("127.0.0.1", 0))
    squatter.listen(1)
    taken = squatter.getsockname()[1]
    path = b.home / "twinsync.toml"
    doc = tomllib.loads(path.read_text())
    doc["link"] = {**doc.get("link", {}), "listen": f"127.0.0.1:{taken}"}
    path.write_text(tomli_w.dumps(doc))
    try:
        daemon = daemon_factory(b)
        wait_for(lambda: announces_link(a, "node2"), 90, "node2's link port on node1")
        port = json.loads((a.home / "trace/recovery/node2/fingerprint.json").read_text())["link"]
        assert port != taken and f"port {taken} is in use" in daemon.log()
        uri = f"ws://127.0.0.1:{port}"

        stranger = Ed25519PrivateKey.generate()
        with connect(uri, proxy=None, compression=None) as ws:
            hello = linkwire.decode(ws.recv(5))
            ws.send(linkwire.encode(linkwire.auth(stranger, "node1", "node2", hello["nonce"], linkwire.new_nonce())))
            assert "does not verify with its key" in linkwire.decode(ws.recv(5))["error"]

        key = load_private_key(a.home / "keys/node.key")
        with connect(uri, proxy=None, compression=None) as ws:
            hello = linkwire.decode(ws.recv(5))
            nonce = linkwire.new_nonce()
            ws.send(linkwire.encode(linkwire.auth(key, "node1", "node2", hello["nonce"], nonce)))
            assert linkwire.decode(ws.recv(5))["op"] == "welcome"
            session = linkwire.session_of(hello["nonce"], nonce)
            good = linkwire.encode(linkwire.request(key, session, "ask", 1, {"goal": TOMATOES, "reason": False}))
            stale = linkwire.encode(linkwire.request(key, session, "ask", 2, {"goal": TOMATOES},
                                                     now=lambda: time.time() - 300))
            replies = []
            for text in (good, good, "{", "x" * 70_000, stale):
                ws.send(text)
                replies.append(json.loads(ws.recv(5)))
            assert replies[0]["ok"] is True and replies[0]["body"]["conclusion"] == "sow in March"
            assert [(r["ok"], w in (r["error"] or "")) for r, w in zip(replies[1:], (
                "already served", "not JSON", "over the limit", "stale"))] == [(False, True)] * 4, replies
        code, answer = ask(a, TOMATOES, "--node", "node2")
        assert code == 0 and answer["conclusion"] == "sow in March"
        assert "refused a connection" in daemon.log() and "sent a bad request" in daemon.log()
    finally:
        squatter.close()
