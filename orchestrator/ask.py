"""`ask`: a goal → the network's consensus conclusion, from whichever node can answer first
(DESIGN §8), for the CLI, the TUI and Python callers alike.

Local first: when this node holds a conclusion for the goal and merged its peers' steps
lately (`[link] fresh_s`), it answers without a round trip. Otherwise the question goes
over the peer link to the peers nearest by meaning (their signed profiles,
folders/meaning.py), one after the other, until one answers with a conclusion or the
deadline passes. A peer that knows no conclusion runs its reasoner on the goal when it has
one (orchestrator/reasoner.py). With every peer out of reach the answer comes from the
local replica and says it is stale. Every peer tried is in the answer, with what happened.

`ask_network` (the CLI's and the TUI's) hands the question to this node's own daemon when
it runs, whose links to the peers stay open (`route`); `ask` asks from this process. The
same module serves the other side: `serve` answers a request in the daemon.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, replace
from datetime import timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from folders.consensus import PUBLISHED, consensus
from folders.errors import TwinsyncError, echo
from folders import linkwire
from folders.linkwire import Request
from folders.meaning import rank_peers
from folders.trust import TrustedPeer
from folders.trace import connect, format_ts, parse_ts, utc_now
from orchestrator.heartbeat import link_port, load_heartbeat
from orchestrator.lock import running_daemon
from orchestrator.node import Node
from syncthing.errors import SyncthingError

if TYPE_CHECKING:
    from orchestrator.link import LinkPool

logger = logging.getLogger(__name__)

#: Where an answer came from.
LOCAL, PEER, STALE, NONE = "local", "peer", "stale local replica", "nobody"
#: The most peers one question is sent to before the local replica answers.
MAX_TRIES = 4
#: Asks remembered for the access metric (its p95 reads the latest 100).
KEEP_ASKS = 1000


#: One reasoner run at a time for peers: each may take its memory limit and its time limit,
#: and a peer asking many questions must not make the node run many at once.
_REASONING = threading.BoundedSemaphore(1)


class AskError(TwinsyncError):
    """The question cannot be asked as given (an empty goal, an unknown --node)."""


@dataclass(frozen=True)
class Attempt:
    """One peer tried: `outcome` is answered, no conclusion, unreachable or refused."""

    peer: str
    outcome: str
    detail: str = ""
    elapsed_ms: float | None = None
    score: float | None = None  # how near by meaning the peer's profile was


@dataclass(frozen=True)
class Answer:
    goal: str
    conclusion: str | None
    answered_by: str | None  # node name; None when nobody knew
    source: str  # LOCAL, PEER, STALE or NONE
    routes: int = 0  # published sessions of the goal at the answering node
    supporters: int = 0  # of which reached the conclusion
    newest: str | None = None  # the newest published step of the goal there (UTC)
    reasoned: bool = False  # the answering node ran its reasoner for this question
    elapsed_ms: float = 0.0
    tried: tuple[Attempt, ...] = field(default_factory=tuple)
    #: "daemon": asked through this node's own daemon and its kept links; "direct": from this process.
    via: str = "direct"

    @property
    def fresh(self) -> bool:
        return self.source in (LOCAL, PEER) and self.conclusion is not None

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "fresh": self.fresh, "tried": [asdict(a) for a in self.tried]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Answer:
        """Inverse of `to_dict` (the daemon's answer to this node's own CLI)."""
        fields = {k: v for k, v in data.items() if k not in ("fresh", "tried")}
        return cls(**fields, tried=tuple(Attempt(**a) for a in data["tried"]))


def describe(answer: Answer) -> str:
    """The answer for people: the conclusion, who gave it and how, then every peer tried.
    The TUI's Ask dialog shows the same text."""
    if answer.conclusion is None:
        head = "No node knows a conclusion for this goal."
    elif answer.source == STALE:
        head = f"{answer.conclusion}\n  stale: no peer answered; this is {answer.answered_by}'s own replica"
    else:
        how = "ran its reasoner and answered" if answer.reasoned else "answered"
        head = f"{answer.conclusion}\n  {answer.answered_by} {how} in {answer.elapsed_ms:.0f} ms"
    if answer.conclusion is not None:
        newest = f"; newest step {answer.newest[:19].replace('T', ' ')}Z" if answer.newest else ""
        head += f" ({answer.supporters} of {answer.routes} routes agree{newest})"
    lines = [head]
    for attempt in answer.tried:
        took = f", {attempt.elapsed_ms:.0f} ms" if attempt.elapsed_ms is not None else ""
        detail = f": {attempt.detail}" if attempt.detail and attempt.outcome != "no conclusion" else ""
        lines.append(f"  tried {attempt.peer}: {attempt.outcome}{took}{detail}")
    return "\n".join(lines)


def local_answer(node: Node, goal: str) -> dict[str, Any]:
    """This node's consensus for `goal`, as a link reply body."""
    conn = connect(node.layout.trace_db)
    try:
        agreed = consensus(conn, goal)
        newest = conn.execute(f"SELECT max(ts) FROM steps WHERE goal = ? AND {PUBLISHED}", [goal]).fetchone()[0]
    finally:
        conn.close()
    return {"goal": goal, "conclusion": agreed.conclusion, "routes": agreed.routes,
            "supporters": agreed.supporters, "newest": newest, "node": node.name, "reasoned": False}


def serve(node: Node, peer: str, request: Request, pool: LinkPool | None = None) -> dict[str, Any]:
    """A request over the link, answered in the daemon (orchestrator/link.py calls it in a
    worker thread). A peer's ask this node has no conclusion for goes to its reasoner when
    one is set and the asker allows it. A route comes from this node's own CLI or TUI: the
    network's answer, asked over the daemon's kept links (`pool`)."""
    if request.op == "ping":
        return {"node": node.name, "time": format_ts(utc_now())}
    goal = request.body["goal"]
    if request.op == "route":
        body = request.body
        timeout = body.get("timeout")
        return ask(node, goal, peer=body.get("peer") if isinstance(body.get("peer"), str) else None,
                   timeout=timeout if type(timeout) in (int, float) and timeout > 0 else None,
                   reason=body.get("reason") is not False, pool=pool).to_dict()
    answer = local_answer(node, goal)
    if answer["conclusion"] is None and request.body.get("reason") is True and _has_reasoner(node):
        from orchestrator.reasoner import reason  # sandbox and modules: only when asked to reason

        if not _REASONING.acquire(blocking=False):
            raise AskError(f"{node.name} is reasoning on another question; ask the next peer, or again later")
        try:
            budget = request.body.get("budget_s")
            run = reason(node, goal, timeout_s=budget if type(budget) in (int, float) and budget > 0 else None)
        finally:
            _REASONING.release()
        logger.info("reasoned on %s for %s: %s", echo(goal), peer, run.outcome)
        if run.ok:
            answer = {**local_answer(node, goal), "reasoned": True}
    logger.debug("answered %s for %s", echo(goal), peer)
    return answer


def _has_reasoner(node: Node) -> bool:
    settings = node.config.reasoner
    return bool(settings.command or settings.module)


def check_question(node: Node, goal: str, peer: str | None) -> dict[str, TrustedPeer]:
    """The node's peers, once the question can be asked as given (AskError otherwise)."""
    if not isinstance(goal, str) or not goal.strip():
        raise AskError(f"Goal {echo(goal)} is empty; ask in words, e.g. `twinsync ask 'plan the week'`.")
    peers = node.peers()
    if peer is not None and peer not in peers:
        known = ", ".join(sorted(peers)) or "none yet; pair with `twinsync pair`"
        raise AskError(f"{echo(peer)} is not a paired peer of {node.name} (peers: {known}).")
    return peers


def ask_network(node: Node, goal: str, *, peer: str | None = None, timeout: float | None = None,
                reason: bool = True) -> Answer:
    """What `twinsync ask` and the TUI call: through this node's own daemon when it runs,
    whose links to the peers stay open between questions (one round trip to a peer instead
    of a connection and a handshake); directly when no daemon serves a link here."""
    from orchestrator.link import LinkError, PeerLink

    check_question(node, goal, peer)
    started = time.perf_counter()
    own = own_link(node)
    if own is not None:
        budget = timeout if timeout is not None else node.config.link.timeout_ms / 1000
        try:
            key = node.signing_key()
            with PeerLink(node.name, key, node.name, key.public_key(), own, min(budget, 1.0)) as link:
                body = link.call("route", {"goal": goal, "peer": peer, "timeout": budget, "reason": reason},
                                 budget + 1.0)
            answer = Answer.from_dict(body)
            return replace(answer, elapsed_ms=(time.perf_counter() - started) * 1000, via="daemon")
        except (LinkError, KeyError, TypeError, ValueError) as exc:
            logger.warning("this node's daemon did not route the question (%s); asking directly", exc)
    return ask(node, goal, peer=peer, timeout=timeout, reason=reason)


def own_link(node: Node) -> str | None:
    """ws:// address of this node's own daemon's link, while it runs."""
    from orchestrator.link import uris

    port = link_port(node.layout.home)
    if port is None:
        return None
    host = linkwire.parse_listen(node.config.link.listen)[0] if node.config.link.listen else "127.0.0.1"
    host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)
    return uris(port, [host])[0]


def ask(node: Node, goal: str, *, peer: str | None = None, timeout: float | None = None,
        reason: bool = True, pool: LinkPool | None = None) -> Answer:
    """The network's answer to `goal`, asked from this process. `peer` asks that node only
    (no local shortcut); `timeout` (seconds) bounds the whole question, `[link] timeout_ms`
    by default; `reason` lets a peer with no conclusion run its reasoner; `pool` keeps the
    links open for the next question (the daemon's), else each peer is dialled for this one."""
    from orchestrator.link import LinkError, LinkPool  # websockets: only when a question travels

    peers = check_question(node, goal, peer)
    started = time.perf_counter()
    deadline = time.monotonic() + (timeout if timeout is not None else node.config.link.timeout_ms / 1000)
    mine = local_answer(node, goal)
    if peer is None and mine["conclusion"] is not None and (not peers or _merged_lately(node)):
        return _answer(goal, mine, LOCAL, started, ())
    tried: list[Attempt] = []
    routes = Routes(node, goal, peers)
    order = [(peer, None)] if peer is not None else [(name, score) for name, score in routes.ranked]
    order = order[:MAX_TRIES if peer is None else 1]
    links = pool or LinkPool(node.name, node.signing_key())
    try:
        for i, (name, score) in enumerate(order):
            left = deadline - time.monotonic()
            if left <= 0:
                tried.append(Attempt(name, "unreachable", "no time left before the deadline", None, score))
                continue
            if not routes.ports.get(name):
                tried.append(Attempt(name, "unreachable", routes.why_no_address(name), None, score))
                continue
            asked = time.perf_counter()
            # A peer that hangs mid-answer takes half of what is left, the last one all of it.
            share = left if i == len(order) - 1 else left / 2
            try:
                body = links.call(name, peers[name].key(), routes.addresses(name), "ask",
                                  {"goal": goal, "reason": reason, "budget_s": round(share, 3)},
                                  time.monotonic() + share)
            except LinkError as exc:
                tried.append(Attempt(name, exc.kind, str(exc), (time.perf_counter() - asked) * 1000, score))
                continue
            took = (time.perf_counter() - asked) * 1000
            problem = _body_problem(body, goal)
            if problem is not None:
                tried.append(Attempt(name, "refused", f"{name} answered nonsense: {problem}", took, score))
                continue
            if body["conclusion"] is None:
                tried.append(Attempt(name, "no conclusion", f"{name} knows no conclusion for this goal", took, score))
                continue
            tried.append(Attempt(name, "answered", "", took, score))
            answer = _answer(goal, body, PEER, started, tried, answered_by=name)
            _remember_ask(node, name, took)
            return answer
    finally:
        if pool is None:
            links.close()
    source = STALE if mine["conclusion"] is not None else NONE
    return _answer(goal, mine, source, started, tried)


def _body_problem(body: dict[str, Any], goal: str) -> str | None:
    """Peers are trusted to sign, not to be bug-free: their answer is checked like input."""
    if body.get("goal") != goal:
        return "it answers another goal"
    if body.get("conclusion") is not None and not isinstance(body.get("conclusion"), str):
        return "its conclusion is not text"
    for name in ("routes", "supporters"):
        if type(body.get(name)) is not int or body[name] < 0:
            return f"{name} is not a count"
    if body.get("newest") is not None:
        try:
            parse_ts(str(body["newest"]))
        except ValueError:
            return "its newest step time is not a time"
    return None


def _answer(goal: str, body: dict[str, Any], source: str, started: float, tried, *,
            answered_by: str | None = None) -> Answer:
    who = answered_by or (body.get("node") if source != NONE else None)
    return Answer(goal, body.get("conclusion"), who, source, body.get("routes", 0), body.get("supporters", 0),
                  body.get("newest"), bool(body.get("reasoned")), (time.perf_counter() - started) * 1000,
                  tuple(tried))


def _merged_lately(node: Node) -> bool:
    """The daemon runs and merged its peers' steps within `[link] fresh_s`."""
    if running_daemon(node.layout.home) is None:
        return False
    beat = load_heartbeat(node.layout.home)
    if beat is None or beat.last_merge is None:
        return False
    return utc_now() - parse_ts(beat.last_merge) <= timedelta(seconds=node.config.link.fresh_s)


# -- where each peer is, and how near ---------------------------------------------------------

class Routes:
    """Peers best first by meaning, and where each one's link may be reached: the host
    that answered this node's daemon last (its heartbeat), the hosts of the peer's invite,
    and, asked of Syncthing only when those fail, the host Syncthing is connected to; each
    at the port the peer's signed fingerprint announces."""

    def __init__(self, node: Node, question: str, peers: dict[str, TrustedPeer] | None = None) -> None:
        from orchestrator.link import host_of
        from orchestrator.meaning import peer_profiles
        from orchestrator.metrics import read_fingerprints

        self._node = node
        self.peers = node.peers() if peers is None else peers
        views = [v for v in read_fingerprints(node) if v.node in self.peers]
        profiles = {name: None for name in self.peers} | peer_profiles(views, node.name)
        self.ranked: list[tuple[str, float]] = rank_peers(question, profiles)
        announced = {v.node: v.fingerprint.link for v in views if v.ok and v.fingerprint and v.fingerprint.link}
        # The fingerprint's port is the daemon's own word, and current; the invite's, a start.
        self.ports: dict[str, int | None] = {name: announced.get(name) or peer.link
                                             for name, peer in self.peers.items()}
        known = _known_hosts(node)
        self._hosts = {name: [known.get(name), *(host_of(a) for a in peer.addresses)]
                       for name, peer in self.peers.items()}
        self._connected: dict[str, str] | None = None

    def addresses(self, peer: str) -> Iterator[str]:
        """ws:// addresses of `peer`'s link, best first, without repeats; Syncthing is asked
        for the connected host only if the caller gets that far."""
        from orchestrator.link import uris

        given = uris(self.ports.get(peer), [h for h in self._hosts.get(peer, []) if h])
        yield from given
        for uri in uris(self.ports.get(peer), [self.syncthing_host(peer)]):
            if uri not in given:
                yield uri

    def syncthing_host(self, peer: str) -> str:
        """The host Syncthing is connected to `peer` at ("" if none); asked once."""
        from orchestrator.link import host_of

        if self._connected is None:
            try:
                connections = self._node.client.connections()
            except SyncthingError:
                connections = {}
            self._connected = {}
            for name, trusted in self.peers.items():
                state = connections.get(trusted.device_id) or {}
                host = host_of(str(state.get("address", ""))) if state.get("connected") else None
                if host:
                    self._connected[name] = host
        return self._connected.get(peer, "")

    def why_no_address(self, peer: str) -> str:
        return (f"neither {peer}'s fingerprint nor its invite says where its peer link listens (its "
                "daemon is not running, or it runs a twinsync without the peer link)")


def _known_hosts(node: Node) -> dict[str, str]:
    """Peer → the host its link answered the daemon's last ping from (heartbeat)."""
    beat = load_heartbeat(node.layout.home) if running_daemon(node.layout.home) is not None else None
    return {name: str(link["host"]) for name, link in (beat.links if beat else {}).items() if link.get("host")}


def link_status(node: Node, timeout: float = 1.0) -> dict[str, dict[str, Any]]:
    """Each peer's link as the daemon measures it every LINK_CHECK_S: the round trip of a
    signed ping and the host that answered (tried first by the next ask), or why not.
    Shown by `nodes` and the TUI. The Syncthing-connected host is tried first here: it is
    the freshest truth about where a peer is."""
    from orchestrator.link import LinkError, PeerLink, uris

    key = node.signing_key()
    routes = Routes(node, "")
    status = {}
    for name, peer in routes.peers.items():
        at = format_ts(utc_now())
        if not routes.ports.get(name):
            status[name] = {"rtt_ms": None, "problem": routes.why_no_address(name), "at": at, "host": None}
            continue
        first = uris(routes.ports[name], [routes.syncthing_host(name)])
        problem = f"no address of {name} is known (Syncthing is not connected to it and its invite had none)"
        for uri in [*first, *(u for u in routes.addresses(name) if u not in first)]:
            try:
                with PeerLink(node.name, key, name, peer.key(), uri, timeout) as link:
                    started = time.perf_counter()
                    link.call("ping", {}, timeout)
                    status[name] = {"rtt_ms": round((time.perf_counter() - started) * 1000, 2), "problem": None,
                                    "at": at, "host": urlsplit(uri).hostname}
                    break
            except LinkError as exc:
                problem = str(exc)
        else:
            status[name] = {"rtt_ms": None, "problem": problem, "at": at, "host": None}
    return status


def _remember_ask(node: Node, peer: str, elapsed_ms: float) -> None:
    """Round trips of asks peers answered: the access metric (DESIGN §5) is their p95.
    Plain sqlite3 and no fsync wait (synchronous=NORMAL under WAL): this runs on every ask,
    and a sample lost to a power cut costs nothing."""
    conn = sqlite3.connect(node.layout.state_db, timeout=5)
    try:
        conn.execute("PRAGMA synchronous = NORMAL")
        with conn:
            conn.execute("INSERT INTO asks (ts, peer, ms) VALUES (?, ?, ?)",
                         [format_ts(utc_now()), peer, round(elapsed_ms, 3)])
            conn.execute("DELETE FROM asks WHERE id <= (SELECT max(id) FROM asks) - ?", [KEEP_ASKS])
    finally:
        conn.close()
