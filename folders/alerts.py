"""Alerts: what a person should hear about, computed from what a node observes.

An `Observation` is a plain snapshot of one node at one moment (its open queue, its peers'
connections, stale fingerprints, refused pieces, the daemon's health). `conditions` turns
it into the alerts that hold at that moment, each with a `key` naming its condition;
`changes` compares those with the keys that held before, so an alert is raised once when
its condition starts and again only after it has cleared. Keeping the rule in pure
functions lets the daemon (desktop, MQTT) and `twinsync watch` say exactly the same thing.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timezone
from typing import Any

#: Every kind of alert, with the [alerts] switch that turns it on or off.
QUEUE, PEER, FINGERPRINT, PIECE, DAEMON, SYNCTHING = (
    "queue", "peer-disconnected", "fingerprint-stale", "piece-refused", "daemon", "syncthing")
KINDS = (QUEUE, PEER, FINGERPRINT, PIECE, DAEMON, SYNCTHING)
SWITCHES = {QUEUE: "queue", PEER: "peers", FINGERPRINT: "fingerprints", PIECE: "pieces",
            DAEMON: "daemon", SYNCTHING: "daemon"}


@dataclass(frozen=True)
class QueueEntry:
    """An open item a person must rule on: a frame conflict, an invalid or quarantined
    file, a rollback or a trace fork. `node` is who made the version in question."""

    key: str
    kind: str
    subject: str
    node: str


@dataclass(frozen=True)
class PeerLink:
    """A trusted peer as Syncthing sees it; `since` is when it was last seen, or when it
    was paired (`seen` False), so a peer that never came is also noticed."""

    name: str
    connected: bool | None
    since: datetime | None
    seen: bool = True


@dataclass(frozen=True)
class Observation:
    node: str
    time: datetime
    queue: tuple[QueueEntry, ...] = ()
    peers: tuple[PeerLink, ...] = ()
    stale_fingerprints: tuple[tuple[str, str | None], ...] = ()  # node, created
    refused: tuple[tuple[str, str, str], ...] = ()  # node, file name, reason
    daemon: tuple[str, str] | None = None  # state, sentence
    syncthing_problem: str | None = None


@dataclass(frozen=True)
class Alert:
    kind: str
    subject: str  # a node name
    sentence: str
    key: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Thresholds:
    peer_disconnected_after_s: float = 600
    kinds: frozenset[str] = frozenset(KINDS) - {FINGERPRINT}


def conditions(obs: Observation, limits: Thresholds = Thresholds()) -> dict[str, Alert]:
    """Every alert that holds at `obs.time`, by condition key."""
    found: list[Alert] = []
    for item in obs.queue:
        found.append(Alert(QUEUE, item.node, _queue_sentence(item), f"queue:{item.key}"))
    for peer in obs.peers:
        if peer.connected is False and peer.since is not None:
            away = (obs.time - peer.since).total_seconds()
            if away >= limits.peer_disconnected_after_s:
                sentence = (f"Peer {peer.name} has been disconnected for {_duration(away)} (last seen "
                            f"{_clock(peer.since)})." if peer.seen else
                            f"Peer {peer.name} has not connected since it was paired {_duration(away)} ago "
                            f"({_clock(peer.since)}); is its Syncthing running and paired with this node?")
                found.append(Alert(PEER, peer.name, sentence, f"peer:{peer.name}"))
    for name, created in obs.stale_fingerprints:
        when = f"last written {created[:19].replace('T', ' ')}Z" if created else "unreadable"
        found.append(Alert(FINGERPRINT, name, f"The fingerprint of {name} is stale ({when}); is its daemon "
                           "running?", f"fingerprint:{name}"))
    for name, file, reason in obs.refused:
        found.append(Alert(PIECE, name, f"A piece of {name}'s trace was refused: {file}: {reason}",
                           f"piece:{name}:{file}"))
    if obs.daemon is not None and obs.daemon[0] != "running":
        state, sentence = obs.daemon
        found.append(Alert(DAEMON, obs.node, f"The daemon of {obs.node} is {state}: {sentence}", f"daemon:{state}"))
    if obs.syncthing_problem:
        found.append(Alert(SYNCTHING, obs.node, f"Syncthing of {obs.node} has a problem: {obs.syncthing_problem}",
                           "syncthing"))
    return {a.key: replace(a, sentence=_plain(a.sentence)) for a in found if a.kind in limits.kinds}


def changes(before: Iterable[str], now: Mapping[str, Alert]) -> tuple[list[Alert], list[str]]:
    """The alerts to raise (conditions that hold now and did not before) and the keys that
    cleared; a condition that holds on is never raised twice."""
    before = set(before)
    raised = [now[k] for k in sorted(now) if k not in before]
    cleared = sorted(before - set(now))
    return raised, cleared


def _queue_sentence(item: QueueEntry) -> str:
    if item.kind == "fork":
        return f"A fork of the session toward {item.subject!r} waits for your decision (`twinsync forks`)."
    what = {"conflict": "A conflict", "deleted": "A delete-versus-edit conflict", "invalid": "An invalid file",
            "rollback": "A rollback", "quarantined": "A quarantined file"}.get(item.kind, f"A {item.kind} item")
    return f"{what} on {item.subject} (from {item.node}) waits for your decision (`twinsync conflicts`)."


def _plain(text: str) -> str:
    """File names and reasons come from other machines: a control character (a terminal
    escape in a file name) is shown escaped, never sent to a terminal or a desktop."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _clock(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ")
