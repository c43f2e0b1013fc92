"""What an `ask` answered by a peer costs, beside the floor under it in the same run.

Two real nodes (real `init`, `pair`, Syncthing, a real daemon on B): A asks B about a goal
B holds, through `orchestrator.ask.ask` with `peer=B` (what `twinsync ask --node B` runs
after its start-up): a new connection, the handshake both ways, a signed request, B's
consensus query, a signed reply. Baselines in the same run, on the same loopback: a bare
WebSocket server that echoes, asked over a new connection each time (the floor under
ours), and one round trip on a kept connection (the wire itself); and a signed ping to
B's daemon over a kept PeerLink (our protocol without connecting)."""

from __future__ import annotations

import asyncio
import json
import threading
import time

from websockets.asyncio.server import serve
from websockets.sync.client import connect

from orchestrator import ask, traces
from orchestrator.link import LinkPool, PeerLink
from orchestrator.node import Node
from tests.benchmarks.common import percentile, r
from tests.benchmarks.frames import Bench, wait_until
from tests.conftest import pair_mesh

#: The seed metric: an answer in the network within 200 ms (DESIGN §5).
TARGET_MS = 200.0
GOALS = 20


def _stats(values_s: list[float]) -> dict:
    ms = [v * 1000 for v in values_s]
    return {"p50": r(percentile(ms, 0.5), 3), "p95": r(percentile(ms, 0.95), 3)}


class _Echo:
    """A bare websockets server on 127.0.0.1 that sends back what it gets."""

    def __init__(self) -> None:
        self.port: int | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)

    async def _main(self) -> None:
        async def echo(ws) -> None:
            async for message in ws:
                await ws.send(message)

        async with serve(echo, "127.0.0.1", 0, compression=None) as server:
            self.port = server.sockets[0].getsockname()[1]
            await asyncio.to_thread(self._stop.wait)

    def __enter__(self) -> _Echo:
        self._thread.start()
        wait_until(lambda: self.port is not None, 10, "the echo server")
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)


def _two_nodes(bench: Bench, label: str, daemons: tuple[str, ...]) -> tuple:
    """Nodes {label}a and {label}b paired through the CLI; b holds GOALS concluded goals;
    the daemons named run; returns both once a sees b's link port."""
    a, b = bench.node(f"{label}a"), bench.node(f"{label}b")
    pair_mesh([a, b])
    for i in range(GOALS):
        session = b.cli("trace", "start", f"goal {i}").output.strip()
        b.cli("trace", "add", session, "observation", f"what B knows about goal {i}")
        b.cli("trace", "finish", session, f"conclusion {i}")
    for node in (a, b):
        if node.name[-1] in daemons:
            bench.daemon(node.home, node.name)

    def announced() -> bool:
        try:
            return bool(json.loads((a.home / f"trace/recovery/{b.name}/fingerprint.json").read_text()).get("link"))
        except (OSError, ValueError):
            return False

    wait_until(announced, 120, f"{b.name}'s fingerprint announcing its link on {a.name}")
    return a, b


def measure_ask(bench: Bench, quick: bool) -> dict:
    runs = 30 if quick else 300
    with bench.step("ask: two nodes paired through the CLI, both daemons serving their links"):
        a, b = _two_nodes(bench, "q", ("a", "b"))
    ours, direct, fresh, kept, pings = [], [], [], [], []
    payload = json.dumps({"op": "ask", "body": {"goal": "goal 1"}, "pad": "x" * 200})
    with Node.open(a.home) as node, _Echo() as echo:
        key, public = node.signing_key(), node.peers()[b.name].key()
        uri = next(ask.Routes(node, "").addresses(b.name))
        with bench.progress(f"ask: {runs} asks of B, each beside its baselines", runs) as advance, \
                PeerLink(a.name, key, b.name, public, uri, 5) as link, \
                connect(f"ws://127.0.0.1:{echo.port}", proxy=None, compression=None) as bare:
            for i in range(runs):
                goal = f"goal {i % GOALS}"
                started = time.perf_counter()
                answer = ask.ask_network(node, goal, peer=b.name)
                ours.append(time.perf_counter() - started)
                assert answer.conclusion == f"conclusion {i % GOALS}" and answer.via == "daemon", answer

                started = time.perf_counter()
                assert ask.ask(node, goal, peer=b.name).conclusion == f"conclusion {i % GOALS}"
                direct.append(time.perf_counter() - started)

                started = time.perf_counter()
                with connect(f"ws://127.0.0.1:{echo.port}", proxy=None, compression=None) as ws:
                    ws.send(payload)
                    ws.recv(5)
                fresh.append(time.perf_counter() - started)

                started = time.perf_counter()
                bare.send(payload)
                bare.recv(5)
                kept.append(time.perf_counter() - started)

                started = time.perf_counter()
                link.call("ping", {}, 5)
                pings.append(time.perf_counter() - started)
                advance()
    value, baseline = _stats(ours), _stats(fresh)
    return {"figure": "ask", "n": runs, "unit": "ms", "value": value, "baseline": baseline,
            "target": f"p95 <= {TARGET_MS:.0f} ms (seed: an answer in the network)",
            "meets_target": value["p95"] <= TARGET_MS,
            "detail": {"value_is": "ask.ask_network(peer=B) on A, in process (what `twinsync ask --node B` does "
                                   "after its start-up): a new connection to A's own daemon, which asks B over "
                                   "its kept link (signed both ways, B's consensus query), and back",
                       "baseline_is": "a bare websockets echo server on the same loopback, new connection "
                                      "and one message of the same size each time",
                       "direct_new_connection_to_B": _stats(direct),
                       "signed_ping_kept_connection": _stats(pings),
                       "bare_round_trip_kept_connection": _stats(kept)}}


class _DelayProxy:
    """A TCP relay on 127.0.0.1 that delays every chunk by `one_way_s` in each direction, in
    order, and a new connection by one round trip before any data passes (as the SYN and
    SYN-ACK would be): `tc netem` in user space, for machines whose kernel has no netem."""

    def __init__(self, target_port: int, one_way_s: float) -> None:
        self.target, self.delay = target_port, one_way_s
        self.port: int | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)

    async def _main(self) -> None:
        server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        self.port = server.sockets[0].getsockname()[1]
        async with server:
            await asyncio.to_thread(self._stop.wait)

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await asyncio.sleep(2 * self.delay)
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target)
            await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))
        except (asyncio.CancelledError, ConnectionError):
            writer.close()  # the run is over, or an end went away

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        loop, queue = asyncio.get_running_loop(), asyncio.Queue()

        async def send() -> None:
            while True:
                due, data = await queue.get()
                await asyncio.sleep(max(0.0, due - loop.time()))
                if not data:
                    writer.close()
                    return
                writer.write(data)
                await writer.drain()

        sender = asyncio.create_task(send())
        while True:
            data = await reader.read(65536)
            queue.put_nowait((loop.time() + self.delay, data))
            if not data:
                break
        await sender

    def __enter__(self) -> _DelayProxy:
        self._thread.start()
        wait_until(lambda: self.port is not None, 10, "the delay proxy")
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)


def measure_ask_delayed(bench: Bench, quick: bool) -> dict:
    """The same ask with 50 ms added between A and B (25 ms each way, through _DelayProxy):
    the daemon's kept link (one round trip per question) against dialling B for each."""
    runs = 10 if quick else 60
    with bench.step("ask_50ms: two nodes, B's daemon behind a 50 ms round-trip relay"):
        a, b = _two_nodes(bench, "d", ("b",))
    kept, dialled, floor = [], [], []
    with Node.open(a.home) as node, _Echo() as echo:
        key, public = node.signing_key(), node.peers()[b.name].key()
        target = int(next(ask.Routes(node, "").addresses(b.name)).rsplit(":", 1)[1])
        with _DelayProxy(target, 0.025) as to_b, _DelayProxy(echo.port, 0.025) as to_echo, \
                bench.progress(f"ask_50ms: {runs} asks of B over a kept link and over new ones", runs) as advance:
            pool = LinkPool(a.name, key)
            proxied = f"ws://127.0.0.1:{to_b.port}"
            try:
                # The first question after the daemon starts dials B (as new_connection_each_time)
                pool.call(b.name, public, [proxied], "ping", {}, time.monotonic() + 5)
                with connect(f"ws://127.0.0.1:{to_echo.port}", proxy=None, compression=None) as bare:
                    for i in range(runs):
                        body = {"goal": f"goal {i % GOALS}", "reason": False}
                        started = time.perf_counter()
                        assert pool.call(b.name, public, [proxied], "ask", body, time.monotonic() + 5)["conclusion"]
                        kept.append(time.perf_counter() - started)

                        started = time.perf_counter()
                        with PeerLink(a.name, key, b.name, public, proxied, 5) as link:
                            assert link.call("ask", body, 5)["conclusion"]
                        dialled.append(time.perf_counter() - started)

                        started = time.perf_counter()
                        bare.send(json.dumps(body))
                        bare.recv(5)
                        floor.append(time.perf_counter() - started)
                        advance()
            finally:
                pool.close()
    value, baseline = _stats(kept), _stats(floor)
    return {"figure": "ask_50ms", "n": runs, "unit": "ms", "value": value, "baseline": baseline,
            "target": f"p95 <= {TARGET_MS:.0f} ms with 50 ms between the nodes", "meets_target": value["p95"] <= TARGET_MS,
            "detail": {"value_is": "one ask of B over the daemon's kept link (LinkPool), 25 ms added each way by a "
                                   "user-space relay (this kernel has no netem qdisc)",
                       "baseline_is": "one round trip to a bare websockets echo server through the same kind of "
                                      "relay, on a kept connection: the wire's floor",
                       "new_connection_each_time": _stats(dialled)}}


def measure_finish_to_answer(bench: Bench, quick: bool) -> dict:
    """A session finished on A (its daemon running, as at home) → `ask` on B gets its
    conclusion (B's own replica has not merged it yet, so the question travels to A, which
    answers once its daemon published the session). Baseline in the same run: the same ask
    of a goal A published already, the path without the wait for the publish."""
    runs = 5 if quick else 20
    with bench.step("finish_to_answer: two nodes paired through the CLI, both daemons running"):
        a, b = bench.node("fa"), bench.node("fb")
        pair_mesh([a, b])
        session = a.cli("trace", "start", "known goal").output.strip()
        a.cli("trace", "finish", session, "known conclusion")
        bench.daemon(a.home, "finish-a")

        def announced() -> bool:
            try:
                return bool(json.loads((b.home / "trace/recovery/fa/fingerprint.json").read_text()).get("link"))
            except (OSError, ValueError):
                return False

        wait_until(announced, 120, "A's fingerprint announcing its link on B")
    ours, floor = [], []
    with Node.open(a.home) as node_a, Node.open(b.home) as node_b, \
            bench.progress(f"finish_to_answer: {runs} sessions finished on A, asked on B", runs) as advance:
        for i in range(runs):
            goal = f"fresh goal {i}"
            session = traces.start(node_a, goal)
            traces.finish(node_a, session, f"fresh conclusion {i}")
            started = time.perf_counter()
            wait_until(lambda: ask.ask(node_b, goal, peer="fa", reason=False).conclusion is not None, 60,
                       f"{goal} answerable on B")
            ours.append(time.perf_counter() - started)
            started = time.perf_counter()
            assert ask.ask(node_b, "known goal", peer="fa", reason=False).conclusion == "known conclusion"
            floor.append(time.perf_counter() - started)
            advance()
    value, baseline = _stats(ours), _stats(floor)
    return {"figure": "finish_to_answer", "n": runs, "unit": "ms", "value": value, "baseline": baseline,
            "target": "p95 <= 1000 ms (was up to the 30 s publish interval)", "meets_target": value["p95"] <= 1000,
            "detail": {"value_is": "traces.finish on A (daemon running) until ask(peer=A) from B returns the "
                                   "conclusion, polled every 10 ms",
                       "baseline_is": "one ask(peer=A) from B of a goal A had published already"}}
