"""A seeded random schedule over 3 real nodes: frame puts and reasoning sessions while
daemons and Syncthings are killed with SIGKILL, nodes are cut off (and edit on both sides),
and a peer's segments arrive in shuffled order. After healing and one ruling on every queue
item, nothing acknowledged may be missing anywhere and every node must agree.

TWINSYNC_FAULT_SEEDS (default 2) seeds of TWINSYNC_FAULT_SECONDS (default 45) each of set-up
and operations, from TWINSYNC_FAULT_SEED (default 1); then healing, ruling and converging get
their own TWINSYNC_FAULT_SETTLE_SECONDS (default 60), however long the last operation ran. Each seed prints one JSON summary line; a failing seed
prints its op log and how to run it again."""

from __future__ import annotations

import json
import os
import random
import time
from collections import Counter
from dataclasses import dataclass, field

import pytest

from folders.layout import NodeLayout
from syncthing.errors import SyncthingError
from tests.conftest import wait_for
from tests.faults.cluster import (Cluster, frame_files, git_frame_hashes, git_fsck, integrity,
                                  leaked_children, published_steps, trace_steps)

pytestmark = pytest.mark.faults

SEEDS = int(os.environ.get("TWINSYNC_FAULT_SEEDS", "2"))
SECONDS = float(os.environ.get("TWINSYNC_FAULT_SECONDS", "45"))
FIRST_SEED = int(os.environ.get("TWINSYNC_FAULT_SEED", "1"))
SETTLE_SECONDS = float(os.environ.get("TWINSYNC_FAULT_SETTLE_SECONDS", "60"))
#: Share of a seed's time spent injecting (the rest of it is set-up).
OPS_SHARE = 0.6
#: Longest wait for one round of rulings to replicate, within the settle deadline.
REPLICATE_S = 30.0
GOALS = ("plan the week", "pick a book", "what to cook")
NAMESPACES = ("notes", "plans")


@dataclass
class Run:
    cluster: Cluster
    seed: int
    rng: random.Random = field(init=False)
    log: list[str] = field(default_factory=list)
    acked: dict[str, list[str]] = field(default_factory=dict)  # frame id -> acked hash prefixes
    published: dict[str, set[str]] = field(default_factory=dict)  # author -> step hashes
    ops: Counter = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)
    counter: int = 0
    deadline: float = 0.0

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        self.published = {name: set() for name in self.cluster.nodes}

    # -- operations -----------------------------------------------------------------------

    def names(self) -> list[str]:
        return sorted(self.cluster.nodes)

    def put(self, name: str, frame_id: str) -> None:
        self.counter += 1
        body = json.dumps({"text": f"{name} wrote {frame_id} (op {self.counter})", "n": self.counter})
        result = self.cluster.nodes[name].cli("frame", "put", frame_id, "--body", body, ok=False)
        self.log.append(f"put {name} {frame_id} -> {result.exit_code} {result.output.strip()[:80]}")
        if result.exit_code == 0:
            self.acked.setdefault(frame_id, []).append(result.output.split()[1])
        else:
            self.errors.append(f"frame put on {name} failed: {result.output.strip()[:200]}")

    def put_new(self) -> None:
        self.put(self.rng.choice(self.names()), f"{self.rng.choice(NAMESPACES)}/f{self.counter:04d}")

    def put_edit(self) -> None:
        if not self.acked:
            return self.put_new()
        self.put(self.rng.choice(self.names()), self.rng.choice(sorted(self.acked)))

    def session(self, name: str | None = None) -> None:
        name = name or self.rng.choice(self.names())
        node = self.cluster.nodes[name]
        goal = self.rng.choice(GOALS)
        session = node.cli("trace", "start", goal).output.strip()
        for i in range(self.rng.randint(0, 3)):
            node.cli("trace", "add", session, "observation", f"{name} step {i} op {self.counter}")
        node.cli("trace", "finish", session, self.rng.choice(("yes", "yes", "no")))
        self.counter += 1
        self.log.append(f"session {name} {goal!r} {session[:8]}")

    def publish(self, name: str | None = None) -> None:
        name = name or self.rng.choice(self.names())
        result = self.cluster.nodes[name].cli("trace", "publish", ok=False)
        self.log.append(f"publish {name} -> {result.exit_code} {result.output.strip()[:80]}")
        if result.exit_code != 0:
            self.errors.append(f"trace publish on {name} failed: {result.output.strip()[:200]}")
        self.published[name] |= published_steps(self.cluster.nodes[name].home, name)

    def kill_daemon(self) -> None:
        alive = [n for n in self.names() if self.cluster.daemon_alive(n)]
        if alive:
            name = self.rng.choice(alive)
            self.cluster.kill_daemon(name)
            self.log.append(f"kill -9 daemon {name}")

    def start_daemon(self) -> None:
        dead = [n for n in self.names() if not self.cluster.daemon_alive(n)]
        if dead:
            name = self.rng.choice(dead)
            self.log.append(f"start daemon {name}")
            self.cluster.start_daemon(name)

    def kill_syncthing(self) -> None:
        up = [n for n in self.names() if n not in self.cluster.syncthing_down]
        if up:
            name = self.rng.choice(up)
            self.cluster.kill_syncthing(name)
            self.log.append(f"kill -9 syncthing {name}")

    def start_syncthing(self) -> None:
        if self.cluster.syncthing_down:
            name = self.rng.choice(sorted(self.cluster.syncthing_down))
            self.log.append(f"start syncthing {name}")
            self.cluster.start_syncthing(name)

    def isolated(self) -> str | None:
        for name in self.names():
            if all(frozenset((name, o)) in self.cluster.paused for o in self.names() if o != name):
                return name
        return None

    def isolate(self) -> None:
        """Cut one node off from both others (pausing one pair alone still leaves a route)."""
        if self.cluster.paused or self.cluster.syncthing_down:
            return
        name = self.rng.choice(self.names())
        for other in self.names():
            if other != name:
                self.cluster.partition(name, other)
        self.log.append(f"isolate {name}")

    def heal(self) -> None:
        if not self.cluster.paused or self.cluster.syncthing_down:
            return
        for pair in list(self.cluster.paused):
            self.cluster.heal(*sorted(pair))
        self.log.append("heal")

    def split_edit(self) -> None:
        """The same frame edited on both sides of a partition."""
        alone = self.isolated()
        if alone is None or not self.acked:
            return
        other = self.rng.choice([n for n in self.names() if n != alone])
        frame_id = self.rng.choice(sorted(self.acked))
        self.put(alone, frame_id)
        self.put(other, frame_id)
        self.cluster.faults["split_edit"] += 1
        self.session(alone)
        self.session(other)

    def out_of_order(self) -> None:
        """Cut a node off, let a peer publish several segments, then hand that node the
        peer's files in shuffled order: a later segment is seen before an earlier one."""
        if self.isolated() is None:
            self.isolate()
        target = self.isolated() or self.rng.choice(self.names())
        owner = self.rng.choice([n for n in self.names() if n != target])
        for _ in range(self.rng.randint(2, 4)):
            self.session(owner)
            self.publish(owner)
        order = self.cluster.deliver_out_of_order(target, owner, self.rng)
        self.log.append(f"out-of-order {owner} -> {target}: {order}")

    def step(self) -> None:
        ops = [(self.put_new, 4), (self.put_edit, 3), (self.session, 4), (self.publish, 2),
               (self.kill_daemon, 1), (self.start_daemon, 1), (self.kill_syncthing, 1),
               (self.start_syncthing, 1), (self.isolate, 1), (self.heal, 1), (self.split_edit, 2),
               (self.out_of_order, 2)]
        op = self.rng.choices([o for o, _ in ops], [w for _, w in ops])[0]
        self.ops[op.__name__] += 1
        op()

    # -- heal, rule, check ---------------------------------------------------------------

    def missing_steps(self) -> dict[str, int]:
        everything = set().union(*self.published.values())
        return {name: len(everything - trace_steps(node.home)) for name, node in self.cluster.nodes.items()}

    def diverged(self) -> list[str]:
        files = {name: frame_files(node.home) for name, node in self.cluster.nodes.items()}
        first = files[self.names()[0]]
        return [name for name, f in files.items() if f != first]

    def conflict_copies(self) -> set[str]:
        """Conflict copies in any node's frames.shared/, by path inside it. Not Syncthing's
        temporary files: a transfer of a copy cut by a pause or a kill leaves a
        `.syncthing.*.sync-conflict-*.tmp` that is no copy and that nobody can rule on."""
        found = set()
        for node in self.cluster.nodes.values():
            root = NodeLayout(node.home).frames_shared
            found |= {str(p.relative_to(root)) for p in root.rglob("*.sync-conflict-*")
                      if not p.name.startswith(".")}
        return found

    def rule_on_queues(self) -> int:
        """One ruling on every open conflict, node by node, each node's rulings replicated
        (their copies gone everywhere) before the next node looks, so items another node
        already decided close by themselves before their turn. Rounds go on until no copy
        is left: one that reached a node after its turn is ruled in the next round."""
        ruled: set[tuple[str, int]] = set()

        def turn(name: str) -> set[str]:
            node = self.cluster.nodes[name]
            copies = set()
            for item in json.loads(node.cli("conflicts", "--json").output):
                if item["status"] != "open" or (name, item["id"]) in ruled:
                    continue
                ruled.add((name, item["id"]))
                if item["kind"] not in ("conflict", "deleted"):
                    self.errors.append(f"open {item['kind']} item on {name}: {item.get('path')} {item.get('reason')}")
                    continue
                verdict = self.rng.choice(("approve", "reject"))
                result = node.cli(verdict, str(item["id"]), ok=False)
                self.log.append(f"{verdict} {name} #{item['id']} {item.get('frame')} -> {result.exit_code}")
                copies.add(item.get("copy_path") or "")
            return copies - {""}

        def round_over_nodes() -> bool:
            for name in self.names():
                copies = turn(name)
                if copies:
                    try:
                        wait_for(lambda: not copies & self.conflict_copies(), timeout=self.left(REPLICATE_S),
                                 what=f"{name}'s decisions to replicate", interval=0.3)
                    except AssertionError as exc:
                        raise AssertionError(f"{exc}; copies left: {sorted(copies & self.conflict_copies())[:5]}") from None
            return not self.conflict_copies()

        try:
            wait_for(round_over_nodes, timeout=self.left(2 * REPLICATE_S), what="every conflict copy ruled on",
                     interval=1.0)
        except AssertionError as exc:
            raise AssertionError(f"{exc}; copies left: {sorted(self.conflict_copies())[:5]}") from None
        return len(ruled)

    def left(self, at_most: float) -> float:
        """What is left of the settle deadline (a few seconds at least, so a late heal can settle)."""
        return min(at_most, max(3.0, self.deadline - time.monotonic()))

    def settle(self, seconds: float) -> None:
        """Heal, then publish, converge, rule once on every item and converge again within
        `seconds` of their own, so operations that overran their budget cannot starve them.
        A heal that fails is an error of the run, reported with the op log like any other."""
        try:
            self.cluster.heal_all()
        except (AssertionError, SyncthingError) as exc:
            self.errors.append(f"heal failed: {type(exc).__name__}: {str(exc)[:300]}")
        self.deadline = time.monotonic() + seconds
        for name in self.names():
            self.publish(name)

        def agreed() -> bool:
            return not self.diverged() and not any(self.missing_steps().values())

        try:
            wait_for(agreed, timeout=self.left((self.deadline - time.monotonic()) * 0.5),
                     what="frames and steps to converge", interval=0.5)
        except AssertionError:
            self.log.append("did not converge before ruling")
        try:
            self.rule_on_queues()
        except AssertionError as exc:
            self.errors.append(str(exc))
        try:
            wait_for(agreed, timeout=self.left(self.deadline - time.monotonic()),
                     what="frames and steps to converge after ruling", interval=0.5)
        except AssertionError:
            self.log.append("did not converge after ruling")


@pytest.mark.timeout(SECONDS + SETTLE_SECONDS + 210)
@pytest.mark.parametrize("seed", range(FIRST_SEED, FIRST_SEED + SEEDS))
def test_seeded_faults_lose_nothing(seed: int, cluster) -> None:
    started = time.monotonic()
    c = cluster(3)
    run = Run(c, seed)
    for name in run.names():
        c.start_daemon(name)
    ops_until = time.monotonic() + (started + SECONDS - time.monotonic()) * OPS_SHARE
    while time.monotonic() < ops_until:
        try:
            run.step()
        except Exception as exc:  # noqa: BLE001 - a failing op is a finding; the run goes on
            run.errors.append(f"op failed: {type(exc).__name__}: {str(exc)[:300]}")
            run.log.append(f"  !! {type(exc).__name__}: {str(exc)[:200]}")
    run.settle(SETTLE_SECONDS)

    acked = {p for prefixes in run.acked.values() for p in prefixes}
    in_git = set().union(*(git_frame_hashes(n.home) for n in c.nodes.values()))
    lost_versions = sorted(p for p in acked if not any(h.startswith(p) for h in in_git))
    missing = run.missing_steps()
    everything = set().union(*run.published.values())
    lost_everywhere = len(everything - set().union(*(trace_steps(n.home) for n in c.nodes.values())))
    diverged = run.diverged()
    integrity_problems = []
    for name, node in c.nodes.items():
        layout = NodeLayout(node.home)
        for db in (layout.trace_db, layout.state_db):
            verdict = integrity(db)
            if verdict != "ok":
                integrity_problems.append(f"{name} {db.name}: {verdict}")
        fsck = git_fsck(node.home)
        if fsck:
            integrity_problems.append(f"{name} git fsck: {fsck[:300]}")
    died = [d.log_path.name for d in c.all_daemons if d.proc.poll() not in (None, -9)]
    codes = c.stop_all()
    bad_exits = {k: v for k, v in codes.items() if v not in (0, -9)}
    for node in c.nodes.values():
        node.syncthing.stop()
    leaked = leaked_children()
    thread_deaths = c.daemon_logs().count("Exception in thread")
    summary = {"seed": seed, "ops": sum(run.ops.values()), "ops_by_kind": dict(run.ops),
               "faults": dict(c.faults), "frame_versions_acked": len(acked),
               "steps_published": len(everything), "lost_versions": len(lost_versions),
               "lost_steps": sum(missing.values()), "lost_steps_everywhere": lost_everywhere,
               "missing_steps_by_node": missing, "diverged_nodes": diverged,
               "integrity": integrity_problems or "ok", "leaked_processes": len(leaked),
               "daemon_bad_exits": bad_exits, "daemon_thread_deaths": thread_deaths,
               "op_errors": len(run.errors), "seconds": round(time.monotonic() - started, 1)}
    print("FAULT-SUMMARY " + json.dumps(summary, sort_keys=True))
    problems = bool(lost_versions or any(missing.values()) or diverged or integrity_problems
                    or leaked or bad_exits or died or run.errors)
    if problems:
        print(f"seed {seed} failed; run it again with TWINSYNC_FAULT_SEED={seed} TWINSYNC_FAULT_SEEDS=1 "
              f"TWINSYNC_FAULT_SECONDS={SECONDS:.0f}")
        print("op log:\n  " + "\n  ".join(run.log))
        if run.errors:
            print("errors:\n  " + "\n  ".join(run.errors))
    assert not problems, (f"seed {seed}: lost versions {lost_versions}, missing steps {missing}, "
                          f"diverged {diverged}, integrity {integrity_problems}, leaked {leaked}, "
                          f"daemon exits {bad_exits}, died {died}, errors {run.errors[:5]}")

