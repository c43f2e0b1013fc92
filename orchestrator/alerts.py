"""Alerts wired to the world: what a node observes (`observe`), which alerts that raises
once (`AlertMonitor`, the rule being folders/alerts), and where they go:

- the desktop, through `notify-send`, when a desktop session exists ([alerts] desktop);
- MQTT, with Home Assistant discovery, when [mqtt] host is set ([alerts] mqtt);
- `twinsync watch`, which runs its own monitor and prints them (`watch`).

The daemon runs `AlertLoop` as a supervised piece; it keeps the alerts that hold in
`alerts.json` in the node home, so a restart does not repeat what was already said.
"""

from __future__ import annotations

import html
import importlib.metadata
import json
import logging
import os
import shutil
import sqlite3
import subprocess
import threading
from collections.abc import Callable, Mapping
from datetime import datetime
from pathlib import Path

from folders.alerts import (DAEMON, KINDS, SWITCHES, SYNCTHING, Alert, Observation, PeerLink, QueueEntry,
                            Thresholds, changes, conditions)
from folders.decisions import ForkView
from folders.errors import TwinsyncError
from folders.files import write_atomic
from folders.trace import utc_now
from orchestrator import frames, recovery, traces
from orchestrator.config import AlertSettings
from orchestrator.events import MqttPublisher
from orchestrator.heartbeat import RUNNING, read_health
from orchestrator.homeassistant import discovery, peer_topic
from orchestrator.node import Node, syncthing_client
from orchestrator.pairing import peer_statuses
from orchestrator.metrics import read_fingerprints
from syncthing.errors import SyncthingError

logger = logging.getLogger(__name__)

ALERTS_NAME = "alerts.json"
#: What a look can run into that is worth a sentence and another try, not a traceback: a
#: file being replaced, state.db busy, Syncthing going away mid-look.
LOOK_ERRORS = (TwinsyncError, SyncthingError, OSError, sqlite3.Error)
#: Any of these in the environment means a desktop session that can show notifications.
DESKTOP_VARIABLES = ("DBUS_SESSION_BUS_ADDRESS", "DISPLAY", "WAYLAND_DISPLAY")


def thresholds(settings: AlertSettings) -> Thresholds:
    return Thresholds(settings.peer_disconnected_after_s,
                      frozenset(k for k in KINDS if getattr(settings, SWITCHES[k])))


def observe(node: Node, *, now: datetime | None = None,
            forks: Callable[[], list[ForkView]] | None = None) -> Observation:
    """Everything the alert rule looks at, read from state.db, trace.db, the recovery
    folders, the heartbeat and Syncthing; Syncthing being down is observed, not raised.
    `forks`: how to read the trace's forks (a looping caller's `ForkWatch`)."""
    now = now or utc_now()
    queue = [QueueEntry(f"conflict:{i.id}", i.kind, i.frame or i.path, i.theirs_author or node.name)
             for i in frames.list_conflicts(node)]
    found = forks() if forks is not None else traces.forks(node)
    queue += [QueueEntry(f"fork:{f.id}", "fork", f.goal, node.name) for f in found if f.decision is None]
    trusted = node.peers()
    statuses, problem = peer_statuses(node)
    peers = [PeerLink(p.name, p.connected, _when(p.last_seen) or _when(trusted[p.name].added), bool(_when(p.last_seen)))
             for p in statuses]
    stale = [(v.node, v.fingerprint.created if v.fingerprint else None)
             for v in read_fingerprints(node, now=now) if v.stale]
    refused = [(name, Path(path).name, reason) for name, pieces in sorted(recovery.pending(node, now=now).items())
               for path, _, reason in pieces.refused]
    health = read_health(node.layout.home, now)
    return Observation(node.name, now, tuple(queue), tuple(peers), tuple(stale), tuple(refused),
                       (health.state, health.message), str(problem) if problem else None)


def _when(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    return moment if moment.tzinfo else None


class AlertMonitor:
    """The alerts that hold, and which to raise or clear after each observation. With a
    `state_file`, they survive a restart."""

    def __init__(self, limits: Thresholds, state_file: Path | None = None) -> None:
        self.limits = limits
        self.state_file = state_file
        self.active: dict[str, Alert] = self._load()

    def update(self, obs: Observation) -> tuple[list[Alert], list[Alert]]:
        now = conditions(obs, self.limits)
        raised, cleared = changes(self.active, now)
        gone = [self.active[k] for k in cleared]
        self.active = now
        if (raised or gone) and self.state_file is not None:
            payload = {k: a.to_dict() for k, a in sorted(now.items())}
            write_atomic(self.state_file, json.dumps(payload, indent=1, sort_keys=True).encode())
        return raised, gone

    def _load(self) -> dict[str, Alert]:
        if self.state_file is None:
            return {}
        try:
            data = json.loads(self.state_file.read_text(encoding="utf-8"))
            return {k: Alert(**v) for k, v in data.items()}
        except FileNotFoundError:
            return {}
        except (OSError, ValueError, TypeError, AttributeError) as exc:
            logger.warning("cannot read %s (%s); alerts that still hold are raised again", self.state_file, exc)
            return {}


def desktop_session(env: Mapping[str, str] = os.environ) -> bool:
    return any(env.get(name) for name in DESKTOP_VARIABLES)


class DesktopNotifier:
    """Desktop notifications through `notify-send` (libnotify), which every desktop ships;
    a failure is logged once per reason and never stops the daemon."""

    def __init__(self, program: str | None = None) -> None:
        self.program = program or shutil.which("notify-send")
        self._said: set[str] = set()

    def notify(self, alert: Alert) -> None:
        urgency = "critical" if alert.kind in (DAEMON, SYNCTHING) else "normal"
        try:
            done = subprocess.run([self.program, "--app-name=twinsync", f"--urgency={urgency}",
                                   f"twinsync: {alert.kind} ({alert.subject})", html.escape(alert.sentence)],
                                  capture_output=True, text=True, timeout=10, stdin=subprocess.DEVNULL)
            problem = done.stderr.strip()[:200] if done.returncode else None
        except (OSError, subprocess.TimeoutExpired) as exc:
            problem = str(exc)
        if problem and problem not in self._said:
            self._said.add(problem)
            logger.warning("desktop notification failed: %s", problem)


def desktop_notifier(settings: AlertSettings, env: Mapping[str, str] = os.environ) -> DesktopNotifier | None:
    """The notifier when [alerts] desktop is on, a session exists and notify-send is here."""
    if not settings.desktop or not desktop_session(env):
        return None
    notifier = DesktopNotifier()
    if notifier.program is None:
        logger.info("no desktop notifications: `notify-send` is not installed (apt-get install libnotify-bin)")
        return None
    return notifier


class AlertLoop:
    """The daemon's alert piece: observe every [alerts] interval_s, send what was raised,
    and keep Home Assistant's entities (discovery, daemon health, queue size) current."""

    def __init__(self, node: Node, forks: traces.ForkWatch, *, notifier: DesktopNotifier | None = None,
                 on_state: Callable[[str | None], None] = lambda problem: None,
                 clock: Callable[[], datetime] = utc_now) -> None:
        """`forks`: the daemon's fork view, shared with its fingerprint job (closed by it)."""
        self.node = node
        self._forks = forks
        self._on_state = on_state
        self.settings = node.config.alerts
        self.notifier = notifier
        self.mqtt: MqttPublisher | None = None
        self.monitor = AlertMonitor(thresholds(self.settings), node.layout.home / ALERTS_NAME)
        self._clock = clock
        self._resend = threading.Event()
        self._announced: set[str] | None = None  # peers whose discovery was sent
        self._states: dict[str, dict] = {}

    def resend(self) -> None:
        """MQTT (re)connected or Home Assistant restarted: send discovery and states again."""
        self._resend.set()

    def run(self, stop: threading.Event) -> None:
        client = syncthing_client(self.node.layout, self.node.config)
        node = Node(self.node.layout, self.node.config, client)  # its own HTTP session: one per thread
        try:
            while not stop.is_set():
                try:
                    self.tick(node, self._forks)
                except LOOK_ERRORS as exc:
                    self._on_state(f"cannot look at the node ({exc}); trying again")
                else:
                    self._on_state(None)
                stop.wait(self.settings.interval_s)  # a resend waits for the next tick
        finally:
            client.close()

    def tick(self, node: Node, forks: Callable[[], list[ForkView]] | None = None) -> list[Alert]:
        obs = observe(node, now=self._clock(), forks=forks)
        raised, cleared = self.monitor.update(obs)
        for alert in raised:
            logger.warning("alert: %s", alert.sentence)
            if self.notifier is not None:
                self.notifier.notify(alert)
        for alert in cleared:
            logger.info("alert cleared: %s", alert.sentence)
        if self.mqtt is not None and self.settings.mqtt:
            self._publish(obs, raised)
        return raised

    def _publish(self, obs: Observation, raised: list[Alert]) -> None:
        mqtt, resend = self.mqtt, self._resend.is_set()
        if resend:  # cleared before sending: a request that comes meanwhile is served next tick
            self._resend.clear()
        peers = {p.name for p in obs.peers}
        if resend or self._announced != peers:
            version = importlib.metadata.version("twinsync")
            for topic, config in discovery(self.node.config.mqtt.prefix, obs.node, sorted(peers), version).items():
                mqtt.publish_discovery(topic, config)
            for gone in (self._announced or set()) - peers:  # unpaired: its entity and state go
                mqtt.publish_discovery(peer_topic(obs.node, gone), None)
                mqtt.clear(f"peers/{gone}")
            self._announced = peers
        state, message = obs.daemon or (RUNNING, "")
        counts = {kind: sum(1 for q in obs.queue if q.kind == kind) for kind in {q.kind for q in obs.queue}}
        states = {"health": {"state": state, "message": message, "problem": state != RUNNING},
                  "queue": {"open": len(obs.queue), **counts}}
        for topic, payload in states.items():
            if resend or self._states.get(topic) != payload:
                mqtt.publish(topic, payload, retain=True)
                self._states[topic] = payload
        for alert in raised:
            mqtt.publish("alerts", {"event_type": alert.kind, **alert.to_dict()})


def watch(node: Node, on_alert: Callable[[str, Alert], None], stop: threading.Event, *,
          interval_s: float, on_problem: Callable[[str], None] = lambda problem: None,
          clock: Callable[[], datetime] = utc_now) -> None:
    """`twinsync watch`: what holds now first, then each alert as it is raised or cleared
    ("raised"/"cleared"), until `stop`. Works with or without a running daemon. A look
    that fails (a file being replaced, state.db busy) is told to `on_problem` once per
    reason and tried again at the next look."""
    monitor = AlertMonitor(thresholds(node.config.alerts))
    forks = traces.ForkWatch(node)  # an idle trace is scanned once, not at every look
    said = None
    try:
        while not stop.is_set():
            try:
                obs = observe(node, now=clock(), forks=forks)
            except LOOK_ERRORS as exc:
                if str(exc) != said:
                    said = str(exc)
                    on_problem(said)
            else:
                said = None
                raised, cleared = monitor.update(obs)
                for alert in raised:
                    on_alert("raised", alert)
                for alert in cleared:
                    on_alert("cleared", alert)
            stop.wait(interval_s)
    finally:
        forks.close()
