"""The peer link against a hostile world: a real LinkServer on 127.0.0.1, real sockets, and
peers that lie, replay, flood and send garbage. Whatever they do, the server answers the
next honest peer."""

from __future__ import annotations

import json
import threading
import time

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings, strategies as st
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from folders import linkwire
from folders.linkwire import MAX_MESSAGE, WireError
from orchestrator import link as linkmod
from orchestrator.link import LinkError, LinkServer, PeerLink
from tests.conftest import wait_for

KEYS = {name: Ed25519PrivateKey.generate() for name in ("server", "honest", "other", "impostor")}
TRUSTED = {name: KEYS[name].public_key() for name in ("server", "honest", "other")}


@pytest.fixture
def server():
    served: list[tuple[str, str]] = []

    def answer(peer, request):
        served.append((peer, request.op))
        if request.body.get("goal") == "explode":
            raise RuntimeError("a bug in the answering code")
        return {"echo": request.body, "peer": peer}

    srv = LinkServer("server", KEYS["server"], lambda: TRUSTED, answer, "127.0.0.1:0")
    stop = threading.Event()
    thread = threading.Thread(target=srv.run, args=(stop,), daemon=True)
    thread.start()
    wait_for(lambda: srv.port is not None, 10, "the link listening")
    srv.served = served
    yield srv
    stop.set()
    thread.join(10)
    assert not thread.is_alive()


def uri(srv) -> str:
    return f"ws://127.0.0.1:{srv.port}"


def honest(srv, name="honest") -> PeerLink:
    return PeerLink(name, KEYS[name], "server", TRUSTED["server"], uri(srv), 5)


class Raw:
    """A peer that speaks the protocol by hand, so it can also break it."""

    def __init__(self, srv, name="honest", key=None) -> None:
        self.ws = connect(uri(srv), proxy=None, compression=None).__enter__()
        hello = linkwire.decode(self.ws.recv(5))
        self.server_nonce = hello["nonce"]
        self.name, self.key = name, key or KEYS[name]

    def authenticate(self) -> dict:
        self.nonce = linkwire.new_nonce()
        self.ws.send(linkwire.encode(linkwire.auth(self.key, self.name, "server", self.server_nonce, self.nonce)))
        answer = linkwire.decode(self.ws.recv(5))
        self.session = linkwire.session_of(self.server_nonce, self.nonce)
        return answer

    def send(self, text) -> dict:
        self.ws.send(text)
        return json.loads(self.ws.recv(5))

    def request(self, rid=1, body=None, **kw) -> dict:
        return linkwire.request(self.key, self.session, "ask", rid, body or {"goal": "tomatoes"}, **kw)


def test_an_honest_peer_is_served_and_both_ends_proved_who_they_are(server):
    with honest(server) as link:
        assert link.call("ask", {"goal": "tomatoes"}, 5) == {"echo": {"goal": "tomatoes"}, "peer": "honest"}
        assert link.call("ping", {}, 5)["peer"] == "honest"  # the connection stays for more
    assert server.served == [("honest", "ask"), ("honest", "ping")]


def test_a_node_that_is_not_the_one_dialled_is_not_believed(server):
    with pytest.raises(LinkError, match="says it is 'server', not 'other'"):
        PeerLink("honest", KEYS["honest"], "other", TRUSTED["other"], uri(server), 5)
    # The right name with the wrong key: the server cannot prove it is "other".
    srv_as_other = LinkServer("other", KEYS["server"], lambda: TRUSTED, lambda p, r: {}, "127.0.0.1:0")
    stop = threading.Event()
    thread = threading.Thread(target=srv_as_other.run, args=(stop,), daemon=True)
    thread.start()
    try:
        wait_for(lambda: srv_as_other.port is not None, 10, "the impostor listening")
        with pytest.raises(LinkError, match="could not prove it is 'other'"):
            PeerLink("honest", KEYS["honest"], "other", TRUSTED["other"], f"ws://127.0.0.1:{srv_as_other.port}", 5)
    finally:
        stop.set()
        thread.join(10)


@pytest.mark.parametrize("name, key, words", [
    ("stranger", KEYS["impostor"], "'stranger' is not a node this one trusts"),
    ("honest", KEYS["impostor"], "does not verify with its key"),
    ("server", KEYS["impostor"], "does not verify with its key"),  # claims to be the node itself
])
def test_a_peer_that_cannot_prove_a_trusted_identity_is_refused_and_served_nothing(server, name, key, words):
    raw = Raw(server, name, key)
    answer = raw.authenticate()
    assert answer["op"] == "refused" and words in answer["error"]
    with pytest.raises(ConnectionClosed):
        raw.ws.recv(5)
    assert server.served == []


def test_nothing_is_served_before_the_proof_and_silence_is_cut_off(server, monkeypatch):
    raw = Raw(server)
    raw.session = "not-authenticated"
    answer = raw.send(linkwire.encode(raw.request()))  # a request instead of the proof
    assert answer["op"] == "refused" and "expected 'auth'" in answer["error"]
    monkeypatch.setattr(linkmod, "HANDSHAKE_S", 0.3)
    slow = Raw(server)
    with pytest.raises(ConnectionClosed) as closed:
        slow.ws.recv(5)
    assert closed.value.rcvd.code == 1008 and "in time" in closed.value.rcvd.reason
    assert server.served == []


def test_replayed_stale_forged_and_garbage_requests_get_a_sentence_and_the_link_stays_usable(server):
    raw = Raw(server)
    assert raw.authenticate()["op"] == "welcome"
    good = raw.request(1)
    assert raw.send(linkwire.encode(good))["ok"] is True
    cases = {
        "a replay": linkwire.encode(good),
        "stale": linkwire.encode(raw.request(2, now=lambda: time.time() - 120)),
        "from the future": linkwire.encode(raw.request(3, now=lambda: time.time() + 120)),
        "tampered": linkwire.encode({**raw.request(4), "body": {"goal": "taxes"}}),
        "another session": linkwire.encode(linkwire.request(KEYS["honest"], "other:session", "ask", 5,
                                                            {"goal": "x"})),
        "not json": "{{{",
        "not an object": "[1, 2]",
        "unknown op": linkwire.encode({**raw.request(6), "op": "shell"}),
        "empty goal": linkwire.encode(raw.request(7, {"goal": "  "})),
        "too big": "x" * (MAX_MESSAGE + 1),
        "nested": "[" * 60_000,
    }
    words = {"a replay": "already served", "stale": "stale", "from the future": "stale",
             "tampered": "signature", "another session": "signature", "not json": "not JSON",
             "not an object": "JSON object", "unknown op": "unknown request", "empty goal": "needs a goal",
             "too big": "over the limit", "nested": "not JSON"}
    for case, text in cases.items():
        answer = raw.send(text)
        assert answer["ok"] is False and words[case] in answer["error"], (case, answer)
        assert linkwire.check_reply.__name__  # the error reply is signed for this session too:
        with pytest.raises(WireError, match="refused the request"):
            linkwire.check_reply(answer, TRUSTED["server"], raw.session, answer["re"])
    raw.ws.send(b"\x00binary")
    assert "binary messages" in json.loads(raw.ws.recv(5))["error"]
    after = raw.send(linkwire.encode(raw.request(99, {"goal": "still here?"})))
    assert after["ok"] is True and after["body"]["echo"] == {"goal": "still here?"}
    assert server.served == [("honest", "ask"), ("honest", "ask")]


def test_a_flooding_peer_is_slowed_a_garbage_only_peer_is_cut_off_and_others_are_served(server, monkeypatch):
    monkeypatch.setattr(linkmod, "RATE", 1.0)
    monkeypatch.setattr(linkmod, "BURST", 5)
    raw = Raw(server)
    raw.authenticate()
    answers = [raw.send(linkwire.encode(raw.request(i))) for i in range(8)]
    assert [a["ok"] for a in answers] == [True] * 5 + [False] * 3
    assert "slow down" in answers[-1]["error"]
    with honest(server, "other") as link:  # another peer has its own allowance
        assert link.call("ask", {"goal": "tomatoes"}, 5)["peer"] == "other"
    junk = Raw(server)
    junk.authenticate()
    with pytest.raises(ConnectionClosed):
        for _ in range(linkmod.MAX_STRIKES + 1):
            junk.send("garbage")
    with honest(server) as link:
        assert link.call("ping", {}, 5)["peer"] == "honest"


def test_a_bug_answering_is_an_error_reply_and_the_server_goes_on(server):
    with honest(server) as link:
        with pytest.raises(LinkError, match="server failed to answer; its log says why"):
            link.call("ask", {"goal": "explode"}, 5)
        assert link.call("ask", {"goal": "fine"}, 5)["echo"] == {"goal": "fine"}


def test_a_reply_meant_for_another_request_or_forged_is_not_taken():
    session, key = "s:c", KEYS["server"]
    good = linkwire.reply(key, session, 7, {"conclusion": "yes"})
    assert linkwire.check_reply(good, TRUSTED["server"], session, 7) == {"conclusion": "yes"}
    with pytest.raises(WireError, match="answers request 7, not 8"):
        linkwire.check_reply(good, TRUSTED["server"], session, 8)
    with pytest.raises(WireError, match="signature"):
        linkwire.check_reply({**good, "body": {"conclusion": "no"}}, TRUSTED["server"], session, 7)
    with pytest.raises(WireError, match="signature"):
        linkwire.check_reply(good, TRUSTED["server"], "other:session", 7)


def test_nothing_listens_and_a_port_in_use_is_named():
    with pytest.raises(LinkError, match="does not answer at ws://127.0.0.1:9"):
        PeerLink("honest", KEYS["honest"], "server", TRUSTED["server"], "ws://127.0.0.1:9", 2)
    with pytest.raises(WireError, match="is not host:port"):
        linkwire.parse_listen("22100")
    assert linkwire.parse_listen("[::1]:0") == ("::1", 0)


_VALUES = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=40),
                       lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                                   max_size=4), max_leaves=10)
_FIELDS = st.sampled_from(["op", "proto", "node", "nonce", "sig", "id", "t", "body", "re", "ok", "error"])


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(max_size=300), st.binary(max_size=300), _VALUES.map(json.dumps)))
def test_whatever_bytes_a_peer_sends_decoding_fails_only_with_a_wire_error(raw):
    try:
        assert isinstance(linkwire.decode(raw)["op"], str)
    except WireError:
        pass


@settings(max_examples=500, deadline=None)
@given(st.dictionaries(_FIELDS | st.text(max_size=5), _VALUES, max_size=8))
def test_whatever_message_a_peer_sends_every_check_fails_only_with_a_wire_error(message):
    session = "s:c"
    checks = (lambda: linkwire.check_hello(message, "server"),
              lambda: linkwire.check_auth(message, TRUSTED, "server", "0" * 32),
              lambda: linkwire.check_welcome(message, TRUSTED["server"], "server", "honest", "0" * 32, "1" * 32),
              lambda: linkwire.check_request(message, TRUSTED["honest"], session, linkwire.Replays()),
              lambda: linkwire.check_reply(message, TRUSTED["server"], session, 1))
    for check in checks:
        with pytest.raises(WireError):
            check()  # nothing random is ever a valid, signed message


def test_only_the_node_itself_may_watch_or_route_and_a_watcher_gets_each_event(server):
    with honest(server) as link:
        for op in ("watch", "route"):
            with pytest.raises(LinkError, match=f"'{op}' is served to this node's own commands only"):
                link.call(op, {"goal": "x"}, 5)
    got, stop, watching = [], threading.Event(), threading.Event()
    own = PeerLink("server", KEYS["server"], "server", TRUSTED["server"], uri(server), 5)
    thread = threading.Thread(target=own.watch, args=(got.append, stop.is_set), kwargs={"on_watching": watching.set})
    thread.start()
    try:
        wait_for(watching.is_set, 10, "the watch taken")
        server.publish({"kind": "merge"})
        server.publish({"kind": "frames", "summary": "1 committed"})
        wait_for(lambda: len(got) == 2, 10, "both events")
        assert got == [{"kind": "merge"}, {"kind": "frames", "summary": "1 committed"}]
    finally:
        stop.set()
        thread.join(10)
        own.close()
    server.publish({"kind": "nobody listens"})  # a watcher gone is no error
