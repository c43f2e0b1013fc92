"""`ask` against peers that misbehave: real LinkServers on 127.0.0.1 with their own keys,
announced to a real node home by real signed fingerprints, so routing, addresses, the
handshake and the checks all run as they do between daemons. One peer hangs mid-answer,
one answers nonsense, one is honest; one is down; one proves it is someone else."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, given, settings, strategies as st

from folders.fingerprint import FINGERPRINT_NAME, make_fingerprint, write_fingerprint
from folders.keys import public_key_text
from folders.meaning import profile_of
from folders.metrics import METRIC_NAMES
from folders.trust import TrustedPeer, save_trusted
from orchestrator import ask
from orchestrator.link import LinkServer
from tests.conftest import wait_for
from tests.unit.test_sandbox import make_home

QUESTION = "how to grow tomatoes on the balcony"
KNOWS = {  # what each peer's profile says it knows: b nearest to the question, then c, then d
    "b": ["growing tomatoes on the balcony", "tomatoes on a balcony in pots"],
    "c": ["tomatoes and peppers in the greenhouse", "growing seedlings"],
    "d": ["garden soil and compost", "watering plants on a balcony"],
    "e": ["the tax return is due in July"],
}


class Peers:
    """A node home `a` and, per peer, a key, a LinkServer answering with `behaviour`, a
    trusted.toml entry and a fingerprint in a's recovery folder announcing its port."""

    def __init__(self, tmp_path: Path) -> None:
        self.node = make_home(tmp_path, "a")
        self.keys = {name: Ed25519PrivateKey.generate() for name in KNOWS}
        self.release = threading.Event()
        self.served: list[str] = []
        self.served_ports: dict[str, int] = {}
        self.kinds: dict[str, str] = {}
        self._stops: list[tuple[threading.Event, threading.Thread]] = []
        save_trusted(self.node.layout.trusted, {
            name: TrustedPeer(name, f"DEVICE-{name}", public_key_text(key.public_key()),
                              ("tcp://127.0.0.1:22000",), "2026-12-07T00:00:00Z")
            for name, key in self.keys.items()})

    def serve(self, name: str, behaviour, *, key=None) -> int:
        trusted = {"a": self.node.signing_key().public_key()}

        def answer(peer, request):
            self.served.append(name)
            return behaviour(request.body["goal"]) if request.op == "ask" else {}

        server = LinkServer(name, key or self.keys[name], lambda: trusted, answer, "127.0.0.1:0")
        stop = threading.Event()
        thread = threading.Thread(target=server.run, args=(stop,), daemon=True)
        thread.start()
        wait_for(lambda: server.port is not None, 10, f"{name}'s link")
        self._stops.append((stop, thread))
        self.announce(name, server.port)
        return server.port

    def announce(self, name: str, port: int | None) -> None:
        fp = make_fingerprint(node=name, device_id=f"DEVICE-{name}", version="test", frames_root="sha256:" + "0" * 64,
                              frames_count=0, trace_steps=0, trace_sessions=0, trace_head=None, last_publish=None,
                              last_merge=None, pending_conflicts=0, pending_forks=0,
                              metrics=dict.fromkeys(METRIC_NAMES), key=self.keys[name],
                              profile=profile_of(KNOWS[name]), link=port)
        write_fingerprint(self.node.layout.recovery(name) / FINGERPRINT_NAME, fp)

    def close(self) -> None:
        self.release.set()
        for stop, thread in self._stops:
            stop.set()
            thread.join(10)
        self.node.close()


@pytest.fixture
def peers(tmp_path):
    world = Peers(tmp_path)
    yield world
    world.close()


def honest(goal: str) -> dict:
    return {"goal": goal, "conclusion": "sow in March", "routes": 2, "supporters": 2,
            "newest": "2026-12-07T07:00:00.000000Z", "node": "d", "reasoned": False}


def test_a_hanging_peer_costs_its_share_a_lying_peer_is_refused_and_the_next_answers(peers):
    def hang(goal):
        peers.release.wait(30)
        return honest(goal)

    peers.serve("b", hang)
    peers.serve("c", lambda goal: {**honest(goal), "goal": "something else"})
    peers.serve("d", honest)
    peers.announce("e", None)  # e's daemon is not running: its fingerprint announces no port
    answer = ask.ask(peers.node, QUESTION, timeout=3)
    assert answer.conclusion == "sow in March" and answer.answered_by == "d" and answer.source == ask.PEER
    outcomes = [(t.peer, t.outcome) for t in answer.tried]
    assert outcomes == [("b", "unreachable"), ("c", "refused"), ("d", "answered")], answer.tried
    assert "did not answer in time" in answer.tried[0].detail and 1.3 < answer.tried[0].elapsed_ms / 1000 < 2.2
    assert "answered nonsense: it answers another goal" in answer.tried[1].detail
    assert answer.elapsed_ms < 3000
    assert [t.score for t in answer.tried] == sorted((t.score for t in answer.tried), reverse=True)


def test_a_peer_that_is_down_or_proves_to_be_someone_else_is_passed_over(peers):
    peers.serve("b", honest, key=peers.keys["c"])  # b's address, c's key: not b
    port = peers.serve("c", honest)
    peers.announce("d", port + 1 if port < 65535 else port - 1)  # nothing listens there (most likely)
    answer = ask.ask(peers.node, QUESTION, timeout=5)
    outcomes = [(t.peer, t.outcome) for t in answer.tried]
    assert outcomes[:2] == [("b", "refused"), ("c", "answered")], answer.tried
    assert "could not prove it is 'b'" in answer.tried[0].detail
    assert peers.served == ["c"]  # the impostor was never asked the question


def test_with_every_peer_unreachable_the_local_replica_answers_and_says_it_is_stale(peers):
    answer = ask.ask(peers.node, QUESTION, timeout=1)
    assert answer.source == ask.NONE and answer.conclusion is None and not answer.fresh
    assert {t.outcome for t in answer.tried} == {"unreachable"}
    text = ask.describe(answer)
    assert text.startswith("No node knows a conclusion for this goal.")
    assert "tried b: unreachable: neither b's fingerprint nor its invite says where its peer link listens" in text
    with pytest.raises(ask.AskError, match="'zed' is not a paired peer of a"):
        ask.ask(peers.node, QUESTION, peer="zed")
    with pytest.raises(ask.AskError, match="is empty"):
        ask.ask(peers.node, "   ")


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(answers=st.dictionaries(st.sampled_from(sorted(KNOWS)), st.sampled_from(["conclusion", "none", "nonsense"]),
                               min_size=1))
def test_peers_are_tried_nearest_first_never_twice_and_the_first_conclusion_wins(peers, answers):
    behaviours = {"conclusion": honest, "none": lambda goal: {**honest(goal), "conclusion": None},
                  "nonsense": lambda goal: {"goal": goal, "routes": -1}}
    for name in KNOWS:
        peers.announce(name, None)
    for name, kind in answers.items():
        if name not in peers.served_ports:
            peers.served_ports[name] = peers.serve(name, lambda goal, name=name: behaviours[peers.kinds[name]](goal))
        else:
            peers.announce(name, peers.served_ports[name])
    peers.kinds.update(answers)
    answer = ask.ask(peers.node, QUESTION, timeout=5)
    ranked = [name for name, _ in ask.Routes(peers.node, QUESTION).ranked][:ask.MAX_TRIES]
    tried = [t.peer for t in answer.tried]
    assert tried == ranked[:len(tried)] and len(set(tried)) == len(tried)
    first = next((name for name in ranked if answers.get(name) == "conclusion"), None)
    if first is None:
        assert answer.conclusion is None and tried == ranked
    else:
        assert answer.answered_by == first and tried[-1] == first
        assert all(answers.get(name) != "conclusion" for name in tried[:-1])
