"""`twinsync demo`: the whole system live on one machine, loopback only.

N real managed Syncthing processes and N node homes, paired in a full mesh; a real
`twinsync run` daemon per node; simulated reasoning agents that write frames and record
sessions toward shared goals (mostly agreeing); an injected concurrent edit (a conflict
copy), one node cut off and healed, one node restored from an old snapshot that then goes
on (a fork). It ends with every node's seed metrics and leaves no process behind.

What happens is kept in a `Timeline` for whoever watches: the CLI prints it, the TUI shows
it (through its service) as it happens, and sees there when the demo has ended.
"""

from __future__ import annotations

import itertools
import random
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path

from folders.metrics import Metrics, format_metric, threshold_text
from orchestrator import ask, demo_agent, frames, modules, recovery, traces
from orchestrator.demo_agent.agent import GOALS
from orchestrator.reasoner import reason
from orchestrator.config import load_config, save_config
from orchestrator.init import SyncthingTarget, init_node
from orchestrator.node import Node
from orchestrator.pairing import make_invite, pair
from orchestrator.topology import apply_topology
from orchestrator.metrics import frame_counts, node_metrics
from syncthing.folderspec import FRAMES_FOLDER_ID
from syncthing.process import ManagedSyncthing
from syncthing.topology import Topology

#: The demo's reasoner is a module: this directory, published by node1, approved everywhere.
AGENT_SOURCE = Path(demo_agent.__path__[0])
AGENT_MODULE = "demo-agent"
NAMESPACES = ("notes", "plans", "facts")
#: Frames every node starts from: the shared knowledge a twin has before the demo begins.
SEED_FRAMES = 30
#: Sessions every goal gets at the least (the seed wants 3 routes per goal; one more, since
#: one session in fifteen disagrees and a restore may shadow one).
MIN_ROUTES = 4


class DemoStopped(Exception):
    """The demo was closed (Ctrl-C) while a step still ran: the step gives up."""


@dataclass(frozen=True)
class TimelineEntry:
    at: float  # seconds since the demo began
    text: str
    incident: bool = False  # one of the staged incidents, not a remark on the way


@dataclass(frozen=True)
class DemoEnd:
    """How the demo ended: whether every node met the seed thresholds, a line per node (with
    whether it did), and whether its processes are stopped yet (a viewer's data is then as
    at the end)."""

    meets: bool
    lines: tuple[tuple[bool, str], ...]
    stopped: bool = False


@dataclass(frozen=True)
class TimelineView:
    entries: tuple[TimelineEntry, ...]
    phase: str  # what the demo does now, in a few words
    elapsed: float
    duration: float  # the seconds of reasoning asked for
    progress: str  # frames and sessions so far
    ended: DemoEnd | None
    root: Path


@dataclass
class Timeline:
    """What the demo did so far, safe from any thread. Followers hear of every change (from
    the demo's thread: they must not block); `end` is set before any process stops, so a
    viewer that checks `ended` before it shows a failure never shows one the end caused."""

    root: Path
    duration: float = 0.0
    clock: Callable[[], float] = time.monotonic
    _entries: list[TimelineEntry] = field(default_factory=list)
    _phase: str = "starting"
    _progress: str = ""
    _ended: DemoEnd | None = None
    _followers: list[Callable[[], None]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self._started = self.clock()

    def add(self, text: str, *, incident: bool = False, phase: str | None = None) -> None:
        with self._lock:
            self._entries.append(TimelineEntry(round(self.clock() - self._started, 1), text, incident))
            self._phase = phase if phase is not None else self._phase
        self._changed()

    def set(self, *, phase: str | None = None, progress: str | None = None) -> None:
        with self._lock:
            self._phase = phase if phase is not None else self._phase
            self._progress = progress if progress is not None else self._progress
        self._changed()

    def end(self, result: DemoEnd) -> None:
        with self._lock:
            self._ended = result
            self._phase = "ended"
        self._changed()

    def view(self) -> TimelineView:
        with self._lock:
            return TimelineView(tuple(self._entries), self._phase, self.clock() - self._started, self.duration,
                                self._progress, self._ended, self.root)

    def follow(self, on_change: Callable[[], None]) -> Callable[[], None]:
        """Call `on_change()` after every change; returns the function that stops it."""
        with self._lock:
            self._followers.append(on_change)

        def unfollow() -> None:
            with self._lock:
                if on_change in self._followers:
                    self._followers.remove(on_change)
        return unfollow

    def _changed(self) -> None:
        with self._lock:
            followers = list(self._followers)
        for on_change in followers:
            on_change()


def demo_end(metrics: dict[str, Metrics], *, stopped: bool = False) -> DemoEnd:
    """One line per node: it meets every seed threshold, or which it misses and by how much."""
    lines = []
    for name, m in metrics.items():
        missed = [f"{metric} {format_metric(metric, getattr(m, metric))} (wants {threshold_text(metric)})"
                  for metric, ok in m.meets().items() if not ok]
        lines.append((not missed, f"{name} misses {', '.join(missed)}" if missed
                      else f"{name} meets every seed threshold"))
    return DemoEnd(all(ok for ok, _ in lines), tuple(lines), stopped)


@dataclass
class DemoNode:
    name: str
    home: Path
    syncthing: ManagedSyncthing
    device_id: str = ""
    daemon: subprocess.Popen | None = None

    def open(self) -> Node:
        return Node.open(self.home)


class Demo:
    """Owns every process it starts; `close()` stops them all, whatever happened, and makes
    any step still running in another thread give up (DemoStopped)."""

    def __init__(self, root: Path, n: int, *, topology: str = "swarm", seed: int = 7) -> None:
        self.root = Path(root)
        self.n = n
        self.topology = topology
        self.random = random.Random(seed)
        self.timeline = Timeline(self.root)
        self.nodes: list[DemoNode] = []
        self.sessions = 0
        self.routes: Counter[str] = Counter()  # sessions finished per goal
        self._routes_lock = threading.Lock()
        self.frames_written = 0
        self._old_session: str | None = None
        self._pending: list[Future] = []
        self._topology = Topology()
        self._closed = threading.Event()
        self._close_lock = threading.Lock()

    @property
    def events(self) -> list[str]:
        """The incidents staged so far, in order."""
        return [e.text for e in self.timeline.view().entries if e.incident]

    def say(self, text: str) -> None:
        self.timeline.add(text)

    def _check(self) -> None:
        if self._closed.is_set():
            raise DemoStopped("the demo was stopped")

    # -- set-up ----------------------------------------------------------------------

    def setup(self) -> None:
        for i in range(1, self.n + 1):
            name = f"node{i}"
            st = ManagedSyncthing(self.root / "syncthing" / name)
            node = DemoNode(name, self.root / name, st)
            self.nodes.append(node)  # before it starts: close() stops what began to start
            st.generate(name)
            st.start()
            ep = st.endpoint
            node.device_id = init_node(node.home, name, SyncthingTarget(ep.url, ep.api_key),
                                         link="127.0.0.1:0").device_id
            with node.open() as opened:
                fast = replace(opened.config.traces, publish_interval_s=3, merge_interval_s=2,
                               snapshot_every_segments=4, fingerprint_stale_s=120)
                config = load_config(opened.layout)  # desktop alerts from node1 only, not one per node
                save_config(opened.layout, replace(config, traces=fast, alerts=replace(config.alerts, desktop=i == 1)))
        self.say(f"{self.n} Syncthing nodes running on 127.0.0.1; pairing them")
        invites = {}
        for node in self.nodes:
            with node.open() as opened:
                invites[node.name] = make_invite(opened).encode()
        for node in self.nodes:
            with node.open() as opened:
                for other in self.nodes:
                    if other is not node:
                        pair(opened, invites[other.name])
        self._wait(self._all_connected, 60, "every node to connect")
        self._topology = demo_topology(self.topology, [n.name for n in self.nodes])
        for node in self.nodes:
            with node.open() as opened:
                apply_topology(opened, self._topology)
        for node in self.nodes:
            self._start_daemon(node)
        for i in range(SEED_FRAMES):
            self.write_frame(self.nodes[i % self.n])
        self.ship_agent()
        self.say(f"paired, {self.topology} topology applied, daemons running; {SEED_FRAMES} frames of shared knowledge "
                 f"written; the reasoner is module {AGENT_MODULE}, approved on every node")

    def ship_agent(self) -> None:
        """node1 publishes the demo's reasoner as a module; each other node approves it once
        its daemon has queued it (the demo plays the person on every node)."""
        with self.nodes[0].open() as opened:
            modules.publish(opened, AGENT_SOURCE, version="1.0", entry="agent:answer", serves=sorted(GOALS),
                            name=AGENT_MODULE)
        for node in self.nodes[1:]:
            def approved(node: DemoNode = node) -> bool:
                with node.open() as opened:
                    if not any(s.name == AGENT_MODULE and s.awaiting for s in modules.list_modules(opened)):
                        return False
                    modules.approve(opened, AGENT_MODULE)
                    return True
            self._wait(approved, 60, f"{AGENT_MODULE} to reach {node.name}")

    def _all_connected(self) -> bool:
        for node in self.nodes:
            with node.syncthing.client() as client:
                connections = client.connections()
            if not all(connections.get(n.device_id, {}).get("connected") for n in self.nodes if n is not node):
                return False
        return True

    def _start_daemon(self, node: DemoNode) -> None:
        """Under the close lock: a restore in the demo's thread never starts a daemon that a
        `close()` from another thread has already passed by."""
        with self._close_lock:
            self._check()
            with open(self.root / f"{node.name}-daemon.log", "ab") as log:
                node.daemon = subprocess.Popen([sys.executable, "-m", "orchestrator.cli", "run", "--home",
                                                str(node.home)], stdout=log, stderr=subprocess.STDOUT,
                                               stdin=subprocess.DEVNULL)

    def _stop_daemon(self, node: DemoNode) -> None:
        if node.daemon is not None and node.daemon.poll() is None:
            node.daemon.terminate()
            try:
                node.daemon.wait(20)
            except subprocess.TimeoutExpired:
                node.daemon.kill()
                node.daemon.wait()
        node.daemon = None

    def _wait(self, predicate: Callable[[], bool], timeout: float, what: str) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._check()
            try:
                if predicate():
                    return True
            except Exception:  # noqa: BLE001 - nodes may still be starting
                pass
            self._closed.wait(0.3)
        self.say(f"gave up waiting for {what} after {timeout:.0f} s")
        return False

    # -- the agents --------------------------------------------------------------------

    def record_session(self, node: DemoNode, goal: str | None = None) -> str:
        """One session reasoned by the approved demo-agent module; the daemon publishes it."""
        goal = goal or self.random.choice(sorted(GOALS))
        self.sessions += 1
        return self._reason(node, goal, self.sessions)

    def _reason(self, node: DemoNode, goal: str, number: int) -> str:
        with node.open() as opened:
            result = reason(opened, goal, program=modules.program_of(opened, AGENT_MODULE),
                            context={"n": number}, publish=False)
        if result.status != "finished":
            self.say(f"{node.name}'s reasoner gave no answer: {result.reason}")
        else:
            with self._routes_lock:
                self.routes[goal] += 1
        return result.session

    def top_up(self) -> None:
        """Every goal reasoned at least MIN_ROUTES times, however slowly a busy machine ran the
        agents in the time given: the routes metric wants 3 per goal, and a demo is about
        what the network does, not about this machine's speed."""
        nodes = itertools.cycle(self.nodes)
        for goal in sorted(GOALS):
            for _ in range(3 * MIN_ROUTES):
                self._check()
                if self.routes[goal] >= MIN_ROUTES:
                    break
                self.sessions += 1
                self._reason(next(nodes), goal, self.sessions)

    def write_frame(self, node: DemoNode) -> None:
        self.frames_written += 1
        held = [ns for ns in NAMESPACES if node.name in self._topology.namespaces.get(ns, {node.name})]
        ns = held[self.frames_written % len(held)]
        with node.open() as opened:
            frames.put_frame(opened, f"{ns}/item-{self.frames_written:03d}",
                             {"text": f"written by {node.name}", "n": self.frames_written})

    def tick(self, reasoning: ThreadPoolExecutor) -> None:
        """A frame, and a session reasoned in the background: a module run is a sandboxed
        child process (~0.1-0.5 s), so the agents reason in parallel, as real nodes would."""
        node = self.random.choice(self.nodes)
        self.write_frame(node)
        self.sessions += 1
        self._pending.append(reasoning.submit(self._reason, node, self.random.choice(sorted(GOALS)), self.sessions))

    def _drain(self) -> None:
        """Wait for the sessions in flight (an incident may stop a daemon or restore a
        trace.db under them) and say what went wrong in any."""
        for future in self._pending:
            try:
                future.result()
            except Exception as exc:  # noqa: BLE001 - one agent's failure is reported, the demo goes on
                self.say(f"an agent failed to reason: {exc}")
        self._pending = []

    # -- the incidents -----------------------------------------------------------------

    def concurrent_edit(self) -> None:
        """Two nodes edit one frame while one of them is paused: Syncthing keeps both."""
        a, b = self.nodes[0], self.nodes[1]
        with a.open() as opened:
            frames.put_frame(opened, "notes/shared", {"text": "first"})
        time.sleep(2)
        with b.syncthing.client() as client:
            client.patch_folder(FRAMES_FOLDER_ID, {"paused": True})
        with a.open() as opened:
            frames.put_frame(opened, "notes/shared", {"text": f"{a.name}'s version"})
        with b.open() as opened:
            frames.put_frame(opened, "notes/shared", {"text": f"{b.name}'s version"})
        with b.syncthing.client() as client:
            client.patch_folder(FRAMES_FOLDER_ID, {"paused": False})
        self._event(f"concurrent edits of notes/shared on {a.name} and {b.name}: a conflict to rule on")

    def cut_off(self, node: DemoNode, paused: bool) -> None:
        with node.syncthing.client() as client:
            for device in client.devices():
                if device["deviceID"] != client.my_device_id():
                    client.patch_device(device["deviceID"], {"paused": paused})
        self._event(f"{node.name} {'cut off from' if paused else 'back with'} the others")

    def prepare_fork(self) -> None:
        """A published session that goes on after node1's first snapshot."""
        node = self.nodes[0]
        session = self.record_session(node, "plan the week")
        with node.open() as opened:
            recovery.publish_now(opened)
            traces.reopen(opened, session)
            traces.add(opened, session, "observation", "Tuesday got booked")
            traces.finish(opened, session, "gym on Tuesday")
            recovery.publish_now(opened)
        self._old_session = session

    def restore_and_fork(self) -> None:
        """node1 comes back from its oldest snapshot and goes on: the session forks."""
        node = self.nodes[0]
        self._stop_daemon(node)
        with node.open() as opened:
            oldest = recovery.snapshots(opened, node.name)[-1]
            recovery.restore(opened, oldest)
            traces.reopen(opened, self._old_session)
            traces.add(opened, self._old_session, "observation", "restored; the gym is closed")
            traces.finish(opened, self._old_session, "gym on Tuesday")
        self._start_daemon(node)
        self._event(f"{node.name} restored from {oldest.manifest_path.stem} and went on: a fork")

    def _event(self, text: str) -> None:
        self.timeline.add(text, incident=True)

    # -- the run -----------------------------------------------------------------------

    def run(self, duration: float, stop: threading.Event, progress: Callable[[str], None] | None = None) -> None:
        self.timeline.duration = duration
        self.timeline.add(f"{duration:.0f} s of simulated reasoning begin", phase="running")
        self.prepare_fork()
        started = time.monotonic()
        plan = [(0.2, self.concurrent_edit), (0.35, lambda: self.cut_off(self.nodes[-1], True)),
                (0.5, self.restore_and_fork), (0.65, lambda: self.cut_off(self.nodes[-1], False))]
        last_report = 0.0
        with ThreadPoolExecutor(max_workers=self.n, thread_name_prefix="demo-agent") as reasoning:
            while not stop.is_set():
                self._check()
                elapsed = time.monotonic() - started
                if elapsed >= duration:
                    break
                while plan and elapsed >= plan[0][0] * duration:
                    self._drain()
                    plan.pop(0)[1]()
                self.tick(reasoning)
                self.timeline.set(progress=f"{self.frames_written} frames, {self.sessions} sessions")
                if progress and elapsed - last_report >= 5:
                    last_report = elapsed
                    progress(f"t={elapsed:4.0f}s  frames {self.frames_written}  sessions {self.sessions}")
                stop.wait(0.5)
            self._drain()
        if plan:
            self.timeline.add(f"the last {len(plan)} incident(s), however short the run", phase="finishing")
        for _, incident in plan:  # a short run still shows every incident
            self._check()
            incident()
        self.top_up()
        self.timeline.set(progress=f"{self.frames_written} frames, {self.sessions} sessions")

    def finish(self, duration: float, stop: threading.Event,
               progress: Callable[[str], None] | None = None) -> dict[str, Metrics]:
        """Everything after `setup`: run, settle and measure, say how it ended, stop every
        process. The end is on the timeline before any process stops (see Timeline)."""
        self.run(duration, stop, progress)
        metrics = self.settle()
        self.timeline.end(demo_end(metrics))
        self.close()
        self.timeline.end(demo_end(metrics, stopped=True))
        return metrics

    def settle(self, timeout: float = 60) -> dict[str, Metrics]:
        """Let replication finish, then publish, merge and measure on every node."""
        self.timeline.add("letting the nodes settle, then measuring every node", phase="settling")

        def frames_agree() -> bool:
            roots = set()
            for node in self.nodes:
                with node.open() as opened:
                    recovery.merge_now(opened)
                    roots.add(frame_counts(opened).root)
            return len(roots) == 1
        self._wait(frames_agree, timeout, "every node to hold the same frames")
        for _ in range(2):  # publish, then merge what the others published
            for node in self.nodes:
                self._check()
                with node.open() as opened:
                    recovery.publish_now(opened)
            self._closed.wait(2)
            for node in self.nodes:
                self._check()
                with node.open() as opened:
                    recovery.merge_now(opened)
        self.ask_around()
        metrics = {}
        for node in self.nodes:
            with node.open() as opened:
                metrics[node.name] = node_metrics(opened)
        return metrics

    def ask_around(self, goals_per_peer: int = 3) -> None:
        """Every node asks every other node about goals the agents reasoned on (all nodes hold
        them once settled) over the peer link, as `twinsync ask --node` does, so the access metric in the final table is the network's answer time
        (DESIGN §5), measured on real round trips between the daemons."""
        for node in self.nodes:
            with node.open() as opened:
                held = [g.goal for g in traces.goals(opened) if g.goal in GOALS]  # reasoned on by the agents
                goals = sorted(held)[:goals_per_peer]
                for peer in (p for p in self.nodes if p is not node):
                    for goal in goals:
                        self._check()
                        answer = ask.ask_network(opened, goal, peer=peer.name, timeout=5, reason=False)
                        if not answer.fresh:
                            why = answer.tried[-1].detail if answer.tried else "nobody was asked"
                            self.say(f"{node.name} asked {peer.name} about {goal!r}: no answer ({why})")

    def close(self) -> None:
        """Stop every daemon, then every Syncthing, each group at once rather than one by
        one (each takes seconds to shut down). Safe to call again, from any thread."""
        self._closed.set()
        with self._close_lock:
            daemons = [n for n in self.nodes if n.daemon is not None]
            syncthings = [n for n in self.nodes if n.syncthing.running_pid() is not None]
            if not daemons and not syncthings:
                return
            self.timeline.add(f"stopping {len(daemons)} daemon(s) and {len(syncthings)} Syncthing(s)…",
                              phase="stopping")
            with ThreadPoolExecutor(max_workers=max(1, len(self.nodes)), thread_name_prefix="demo-stop") as pool:
                list(pool.map(self._stop_daemon, daemons))
                list(pool.map(lambda node: node.syncthing.stop(), syncthings))
            self.timeline.add("every process of the demo stopped", phase="stopped")


def demo_topology(kind: str, names: list[str]) -> Topology:
    """The seed's four models over the demo's nodes: the first node is the star's master; the
    `facts` namespace is sharded to the first two nodes; in p2p every node wants `notes`
    and `plans`, and only the first two want `facts`."""
    if kind == "star":
        return Topology("star", master=names[0])
    if kind == "sharded":
        return Topology("sharded", namespaces={"facts": frozenset(names[:2])})
    if kind == "p2p":
        return Topology("p2p", namespaces={"notes": frozenset(names), "plans": frozenset(names),
                                           "facts": frozenset(names[:2])})
    return Topology("swarm")

