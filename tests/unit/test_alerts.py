"""The alert rule (folders/alerts): which conditions hold, and that each alert is raised
once per stretch of time its condition holds — never repeated while it holds, raised again
after it cleared."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from hypothesis import given, settings, strategies as st

from folders.alerts import (DAEMON, FINGERPRINT, KINDS, PEER, PIECE, QUEUE, SYNCTHING, Observation, PeerLink,
                            QueueEntry, Thresholds, changes, conditions)
from orchestrator.alerts import AlertMonitor, desktop_session, thresholds
from orchestrator.config import AlertSettings

T0 = datetime(2026, 12, 1, 7, 0, tzinfo=timezone.utc)
CONFLICT = QueueEntry("conflict:3", "conflict", "notes/today", "desktop")
FORK = QueueEntry("fork:ab12", "fork", "plan the week", "laptop")


def obs(at_s: float = 0, **kw) -> Observation:
    return Observation("laptop", T0 + timedelta(seconds=at_s), **kw)


def test_each_kind_of_condition_names_its_node_in_a_sentence():
    found = conditions(obs(
        700, queue=(CONFLICT, FORK),
        peers=(PeerLink("desktop", False, T0), PeerLink("server", True, T0)),
        stale_fingerprints=(("server", "2026-12-01T05:00:00.000000Z"),),
        refused=(("desktop", "seg-00000001-00000002.json", "its signature does not verify"),),
        daemon=("degraded", "mqtt is degraded: lost the broker."),
        syncthing_problem="Nothing answers at http://127.0.0.1:8384."), Thresholds(600, frozenset(KINDS)))
    by_kind = {a.kind: a for a in found.values()}
    assert set(by_kind) == set(KINDS)
    assert [a.subject for a in found.values() if a.kind == QUEUE] == ["desktop", "laptop"]
    assert by_kind[PEER].subject == "desktop" and "disconnected for 12 min" in by_kind[PEER].sentence
    assert by_kind[FINGERPRINT].subject == "server" and "2026-12-01 05:00:00Z" in by_kind[FINGERPRINT].sentence
    assert by_kind[PIECE].sentence.endswith("seg-00000001-00000002.json: its signature does not verify")
    assert by_kind[DAEMON].sentence == "The daemon of laptop is degraded: mqtt is degraded: lost the broker."
    assert by_kind[SYNCTHING].subject == "laptop"
    assert "notes/today (from desktop)" in found["queue:conflict:3"].sentence


def test_a_peer_is_an_alert_only_past_the_threshold_and_only_when_known_disconnected():
    peer = PeerLink("desktop", False, T0)
    assert not conditions(obs(599, peers=(peer,)), Thresholds(600))
    assert conditions(obs(600, peers=(peer,)), Thresholds(600))
    assert not conditions(obs(9999, peers=(PeerLink("desktop", None, T0),)), Thresholds(600))  # Syncthing down
    assert not conditions(obs(9999, peers=(PeerLink("desktop", True, T0),)), Thresholds(600))


def test_a_peer_never_seen_is_told_as_such_and_foreign_text_cannot_reach_a_terminal():
    never = conditions(obs(3600, peers=(PeerLink("desktop", False, T0, seen=False),)))["peer:desktop"]
    assert never.sentence.startswith("Peer desktop has not connected since it was paired 60 min ago")
    evil = QueueEntry("conflict:9", "invalid", "notes/\x1b]0;pwned\x07x.frame.json", "laptop")
    sentence = conditions(obs(queue=(evil,)))["queue:conflict:9"].sentence
    assert "\x1b" not in sentence and "\\x1b]0;pwned\\x07x.frame.json" in sentence


def test_switched_off_kinds_and_a_running_daemon_raise_nothing():
    settings_ = AlertSettings(queue=False, daemon=False)
    limits = thresholds(settings_)
    assert QUEUE not in limits.kinds and DAEMON not in limits.kinds and SYNCTHING not in limits.kinds
    assert FINGERPRINT not in thresholds(AlertSettings()).kinds  # noisy: off by default
    assert not conditions(obs(queue=(CONFLICT,), daemon=("stalled", "x")), limits)
    assert not conditions(obs(daemon=("running", "The daemon runs.")))


def test_the_monitor_keeps_what_holds_across_a_restart(tmp_path):
    state = tmp_path / "alerts.json"
    first = AlertMonitor(Thresholds(), state)
    raised, _ = first.update(obs(queue=(CONFLICT,)))
    assert [a.key for a in raised] == ["queue:conflict:3"]
    again = AlertMonitor(Thresholds(), state)  # the daemon restarted
    assert again.update(obs(queue=(CONFLICT,))) == ([], [])
    raised, cleared = again.update(obs())
    assert not raised and [a.key for a in cleared] == ["queue:conflict:3"]
    state.write_text("{broken")
    assert AlertMonitor(Thresholds(), state).active == {}


def test_desktop_session_needs_one_of_the_session_variables():
    assert not desktop_session({})
    assert not desktop_session({"DISPLAY": ""})
    assert desktop_session({"WAYLAND_DISPLAY": "wayland-0"})
    assert desktop_session({"DBUS_SESSION_BUS_ADDRESS": "unix:path=/run/user/1000/bus"})


# -- properties over sequences of observations ----------------------------------------

QUEUE_ITEMS = [QueueEntry(f"conflict:{i}", "conflict", f"notes/n{i}", "desktop") for i in range(3)]
PEERS = ["desktop", "server"]


@st.composite
def observations(draw) -> list[Observation]:
    """A run of observations a few seconds to minutes apart: queue items come and go,
    peers drop and come back, pieces are refused, the daemon's state changes."""
    out, t = [], 0.0
    gone_since: dict[str, float | None] = {p: None for p in PEERS}
    for _ in range(draw(st.integers(1, 25))):
        t += draw(st.sampled_from([1, 30, 200, 700]))
        peers = []
        for p in PEERS:
            if draw(st.booleans()):
                gone_since[p] = None
            elif gone_since[p] is None:
                gone_since[p] = t
            connected = gone_since[p] is None
            peers.append(PeerLink(p, connected, T0 + timedelta(seconds=gone_since[p] or t)))
        out.append(obs(t, queue=tuple(draw(st.lists(st.sampled_from(QUEUE_ITEMS), unique=True))),
                       peers=tuple(peers),
                       refused=tuple(draw(st.lists(st.sampled_from([("desktop", "a.json", "bad"),
                                                                    ("server", "b.json", "bad")]), unique=True))),
                       daemon=(draw(st.sampled_from(["running", "degraded", "stalled"])), "why")))
    return out


@settings(max_examples=150, deadline=None)
@given(observations())
def test_an_alert_is_raised_exactly_when_its_condition_starts_holding(run):
    """Raised once at the start of each stretch its condition holds (so again after it
    cleared), never in the middle of one; cleared exactly when the stretch ends."""
    monitor = AlertMonitor(Thresholds(600))
    held: set[str] = set()
    for o in run:
        now = set(conditions(o, Thresholds(600)))
        raised, cleared = monitor.update(o)
        assert sorted(a.key for a in raised) == sorted(now - held)
        assert sorted(a.key for a in cleared) == sorted(held - now)
        held = now


@settings(max_examples=100, deadline=None)
@given(observations())
def test_the_same_observation_twice_raises_nothing_the_second_time(run):
    monitor = AlertMonitor(Thresholds(600))
    for o in run:
        monitor.update(o)
        assert monitor.update(o) == ([], [])


def test_clear_then_reraise():
    seen = []
    before: set[str] = set()
    for queue in [(CONFLICT,), (CONFLICT,), (), (CONFLICT,)]:
        now = conditions(obs(queue=queue))
        raised, _ = changes(before, now)
        seen.append([a.key for a in raised])
        before = set(now)
    assert seen == [["queue:conflict:3"], [], [], ["queue:conflict:3"]]
