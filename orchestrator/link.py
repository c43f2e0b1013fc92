"""The peer link (DESIGN §8): a WebSocket endpoint each daemon serves next to Syncthing, so
a question reaches another node and comes back in milliseconds instead of a scan and an
index exchange. folders/linkwire.py says what travels; this module moves it.

`LinkServer` runs in the daemon as a supervised piece, on an asyncio loop of its own. A
connection is served only after the handshake proves it is a trusted peer; each request is
checked (time, nonce, signature, rate) and then answered by `serve`, which runs in a worker
thread because it reads SQLite. Whatever a peer sends, the worst it gets is an error reply
or a closed connection: the daemon never dies from a peer.

`PeerLink` is the client side, synchronous, for the CLI, the TUI and the daemon's own round
trip checks. Where a peer is reached: the host Syncthing is connected to (or the hosts of
its invite), at the link port the peer's signed fingerprint announces.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any
from urllib.parse import urlsplit

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI
from websockets.sync.client import connect

from folders import linkwire
from folders.errors import TwinsyncError
from folders.linkwire import Replays, Request, RateLimit, WireError

logger = logging.getLogger(__name__)

#: What a connection may send before websockets itself closes it; our own limit
#: (linkwire.MAX_MESSAGE) answers with an error below this and keeps the connection.
HARD_MAX = 1024 * 1024
#: Seconds a new connection has to prove who it is.
HANDSHAKE_S = 5.0
#: Connections served at once (authenticated or not), and per peer.
MAX_CONNECTIONS = 64
MAX_PER_PEER = 8
#: A peer may ask this many requests a second on average, in bursts of BURST.
RATE, BURST = 50.0, 100
#: Seconds an address that does not answer may take before the next one is tried (when
#: more time than twice this is left).
CONNECT_SHARE_S = 0.5
#: Refused messages in a row after which a connection is closed: a peer that only sends
#: garbage is not worth a socket.
MAX_STRIKES = 20


UNREACHABLE, REFUSED = "unreachable", "refused"


class LinkError(TwinsyncError):
    """A peer could not be reached (`kind` UNREACHABLE: nothing listens, no answer in time,
    closed), or the exchange failed on its merits (REFUSED: it could not prove who it is,
    refused this node, or answered with an error)."""

    def __init__(self, message: str, kind: str = UNREACHABLE) -> None:
        super().__init__(message)
        self.kind = kind


Serve = Callable[[str, Request], Mapping[str, Any]]


class LinkServer:
    """This node's endpoint. `bind` takes the port (so the daemon can announce it before
    anything else happens); `run` serves it as a Supervisor piece."""

    def __init__(self, me: str, key: Ed25519PrivateKey, trusted: Callable[[], Mapping[str, Ed25519PublicKey]],
                 serve_request: Serve, listen: str) -> None:
        self.me, self._key, self._trusted, self._serve = me, key, trusted, serve_request
        self.host, self._wanted = linkwire.parse_listen(listen)
        self.port: int | None = None
        self._sock: socket.socket | None = None
        self._open: dict[str, int] = {}  # peer (or "?" before it proved itself) → connections
        self._loop: asyncio.AbstractEventLoop | None = None
        #: This node's own watching commands (the TUI): connection → (session, watch request id).
        self._watchers: dict[ServerConnection, tuple[str, int]] = {}

    def publish(self, event: Mapping[str, Any]) -> None:
        """Push `event` to every watching command of this node (the TUI refreshes at once).
        Safe from any thread; a no-op while the link does not run or nobody watches."""
        loop = self._loop
        if loop is not None and self._watchers:
            asyncio.run_coroutine_threadsafe(self._broadcast(dict(event)), loop)

    async def _broadcast(self, event: dict[str, Any]) -> None:
        for ws, (session, rid) in list(self._watchers.items()):
            try:
                await ws.send(linkwire.encode(linkwire.reply(self._key, session, rid, event, op="event")))
            except ConnectionClosed:
                self._watchers.pop(ws, None)

    def bind(self) -> int:
        """Listen on [link] listen; when another node on this machine (a demo, a test) holds
        the port, on any free one, since peers read the port from the signed fingerprint."""
        try:
            self._sock = self._listen(self._wanted)
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE or self._wanted == 0:
                raise LinkError(f"The peer link cannot listen on {self.host}:{self._wanted} ({exc.strerror}); "
                                "set another [link] listen in twinsync.toml.", REFUSED) from None
            logger.warning("port %d is in use; the peer link listens on a free port instead", self._wanted)
            self._sock = self._listen(0)
        self.port = self._sock.getsockname()[1]
        return self.port

    def _listen(self, port: int) -> socket.socket:
        infos = socket.getaddrinfo(self.host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        family, kind, proto, _, address = infos[0]
        sock = socket.socket(family, kind, proto)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(address)
            sock.listen(128)
        except OSError:
            sock.close()
            raise
        sock.setblocking(False)
        return sock

    def run(self, stop: threading.Event) -> None:
        if self._sock is None:
            self.bind()
        asyncio.run(self._main(stop))

    async def _main(self, stop: threading.Event) -> None:
        server = await serve(self._connection, sock=self._sock, max_size=HARD_MAX, compression=None, max_queue=4,
                             ping_interval=20, ping_timeout=20, close_timeout=2, server_header=None)
        logger.info("peer link listening on %s:%d", self.host, self.port)
        self._loop = asyncio.get_running_loop()
        try:
            await asyncio.to_thread(stop.wait)
        finally:
            self._loop = None
            server.close()
            await server.wait_closed()
            self._sock = None

    async def _connection(self, ws: ServerConnection) -> None:
        if sum(self._open.values()) >= MAX_CONNECTIONS:
            await ws.close(1013, "too many connections")
            return
        who = "?"  # the bookkeeping name of this connection: "?" until it proves itself
        self._open[who] = self._open.get(who, 0) + 1
        try:
            peer, session = await self._handshake(ws)
            if peer is None:
                return
            self._open["?"] -= 1
            who = peer
            self._open[who] = self._open.get(who, 0) + 1
            if self._open[who] > MAX_PER_PEER:
                await ws.close(1013, f"more than {MAX_PER_PEER} connections from {peer}")
                return
            await self._requests(ws, peer, session)
        except ConnectionClosed:
            pass
        finally:
            self._open[who] -= 1
            self._watchers.pop(ws, None)

    async def _handshake(self, ws: ServerConnection) -> tuple[str | None, str]:
        nonce = linkwire.new_nonce()
        await ws.send(linkwire.encode(linkwire.hello(self.me, nonce)))
        try:
            message = linkwire.decode(await asyncio.wait_for(ws.recv(), HANDSHAKE_S), expect="auth")
            trusted = await asyncio.to_thread(self._trusted)
            peer, client_nonce = linkwire.check_auth(message, trusted, self.me, nonce)
        except (TimeoutError, asyncio.TimeoutError):
            await ws.close(1008, "no proof of identity in time")
            return None, ""
        except (WireError, TwinsyncError) as exc:
            logger.warning("peer link: refused a connection from %s: %s", _address(ws), exc)
            await ws.send(linkwire.encode(linkwire.refused(str(exc))))
            await ws.close(1008, "refused")
            return None, ""
        await ws.send(linkwire.encode(linkwire.welcome(self._key, self.me, peer, client_nonce, nonce)))
        logger.debug("peer link: %s connected from %s", peer, _address(ws))
        return peer, linkwire.session_of(nonce, client_nonce)

    async def _requests(self, ws: ServerConnection, peer: str, session: str) -> None:
        public = (await asyncio.to_thread(self._trusted))[peer]
        replays, limit, strikes = Replays(), RateLimit(RATE, BURST), 0
        async for raw in ws:
            message: Any = None
            try:
                message = linkwire.decode(raw)
                if not limit.allow():
                    raise WireError(f"more than {RATE:.0f} requests a second; slow down")
                req = linkwire.check_request(message, public, session, replays, from_self=peer == self.me)
            except WireError as exc:
                strikes += 1
                logger.info("peer link: %s sent a bad request: %s", peer, exc)
                await ws.send(linkwire.encode(linkwire.reply(self._key, session, linkwire.request_id(message),
                                                             error=str(exc))))
                if strikes >= MAX_STRIKES:
                    await ws.close(1008, "too many bad requests")
                    return
                continue
            strikes = 0
            if req.op == "watch":
                self._watchers[ws] = (session, req.id)
                await ws.send(linkwire.encode(linkwire.reply(self._key, session, req.id, {"watching": True})))
                continue
            await ws.send(linkwire.encode(await self._answer(peer, session, req)))

    async def _answer(self, peer: str, session: str, req: Request) -> dict[str, Any]:
        try:
            body = await asyncio.to_thread(self._serve, peer, req)
            return linkwire.reply(self._key, session, req.id, body)
        except TwinsyncError as exc:
            return linkwire.reply(self._key, session, req.id, error=str(exc))
        except Exception:  # noqa: BLE001 - a bug answering one request must not end the link
            logger.exception("peer link: answering %s from %s failed", req.op, peer)
            return linkwire.reply(self._key, session, req.id,
                                  error=f"{self.me} failed to answer; its log says why")


def _address(ws: ServerConnection) -> str:
    try:
        host, port = ws.remote_address[:2]
        return f"{host}:{port}"
    except (TypeError, ValueError):
        return "an unknown address"


class PeerLink:
    """One authenticated connection to a peer's link; `call` sends a request and returns the
    verified body of its reply. Not thread-safe: one caller at a time."""

    def __init__(self, me: str, key: Ed25519PrivateKey, peer: str, public: Ed25519PublicKey,
                 uri: str, timeout: float) -> None:
        self.peer, self.uri = peer, uri
        self._me, self._key, self._public = me, key, public
        self._rid = 0
        deadline = time.monotonic() + timeout
        try:
            self._ws = connect(uri, open_timeout=timeout, max_size=HARD_MAX, compression=None, proxy=None,
                               close_timeout=1, user_agent_header=None).__enter__()
        except (OSError, TimeoutError, InvalidHandshake, InvalidURI) as exc:
            raise LinkError(f"{peer} does not answer at {uri} ({_why(exc)})") from None
        try:
            server, server_nonce = linkwire.check_hello(self._recv(deadline, "hello"), peer)
            nonce = linkwire.new_nonce()
            self._ws.send(linkwire.encode(linkwire.auth(key, me, server, server_nonce, nonce)))
            linkwire.check_welcome(self._recv(deadline, None), public, peer, me, nonce, server_nonce)
        except WireError as exc:
            self.close()
            raise LinkError(f"{peer} at {uri}: {exc}", REFUSED) from None
        except LinkError:
            self.close()
            raise
        self._session = linkwire.session_of(server_nonce, nonce)

    def call(self, op: str, body: Mapping[str, Any], timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        self._rid += 1
        try:
            self._ws.send(linkwire.encode(linkwire.request(self._key, self._session, op, self._rid, body)))
            return linkwire.check_reply(self._recv(deadline, None), self._public, self._session, self._rid)
        except WireError as exc:
            raise LinkError(f"{self.peer}: {exc}", REFUSED) from None
        except ConnectionClosed:
            raise LinkError(f"{self.peer} closed the link") from None

    def watch(self, on_event: Callable[[dict[str, Any]], None], done: Callable[[], bool], *,
              on_watching: Callable[[], None] = lambda: None) -> None:
        """Ask this node's own daemon for its events and hand each to `on_event` until
        `done()` (asked twice a second) or the link closes (LinkError UNREACHABLE: the daemon
        stopped); `on_watching` hears when the daemon has taken the request."""
        self._rid += 1
        rid = self._rid
        try:
            self._ws.send(linkwire.encode(linkwire.request(self._key, self._session, "watch", rid, {})))
            linkwire.check_reply(self._recv(time.monotonic() + 5, None), self._public, self._session, rid)
            on_watching()
            while not done():
                try:
                    raw = self._ws.recv(timeout=0.5)
                except TimeoutError:
                    continue
                on_event(linkwire.check_reply(linkwire.decode(raw), self._public, self._session, rid, op="event"))
        except WireError as exc:
            raise LinkError(f"{self.peer}: {exc}", REFUSED) from None
        except ConnectionClosed:
            raise LinkError(f"{self.peer} closed the link") from None

    def _recv(self, deadline: float, expect: str | None) -> dict[str, Any]:
        try:
            raw = self._ws.recv(timeout=max(0.0, deadline - time.monotonic()))
        except TimeoutError:
            raise LinkError(f"{self.peer} did not answer in time") from None
        except ConnectionClosed as exc:
            raise LinkError(f"{self.peer} closed the link ({exc.rcvd.reason if exc.rcvd else 'no reason'})") from None
        return linkwire.decode(raw, expect=expect)

    def close(self) -> None:
        self._ws.close()

    def __enter__(self) -> PeerLink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _why(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    return str(exc) or type(exc).__name__


def uris(port: int | None, hosts: Iterable[str]) -> list[str]:
    """ws:// addresses of a peer's link, one per known host, in order, without repeats."""
    if not port:
        return []
    seen: list[str] = []
    for host in hosts:
        shown = f"[{host}]" if ":" in host else host
        uri = f"ws://{shown}:{port}"
        if host and uri not in seen:
            seen.append(uri)
    return seen


def host_of(address: str) -> str | None:
    """The host of a Syncthing address (`tcp://h:22000`, `quic://[::1]:22000`, `h:22000`, or
    `dynamic`, which has none)."""
    if not address or address == "dynamic":
        return None
    parts = urlsplit(address if "://" in address else "tcp://" + address)
    try:
        return parts.hostname
    except ValueError:
        return None


class LinkPool:
    """Authenticated links to peers kept open between questions (the daemon keeps one), so
    an ask costs one round trip to the peer, not a new connection and a handshake each
    time: at 50 ms between homes that is 50 ms instead of four times as much. One link per
    peer, one request at a time on it; a link that fails is dropped and dialled again."""

    def __init__(self, me: str, key: Ed25519PrivateKey) -> None:
        self._me, self._key = me, key
        self._links: dict[str, PeerLink] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    def call(self, peer: str, public: Ed25519PublicKey, uris: Iterable[str], op: str,
             body: Mapping[str, Any], deadline: float) -> dict[str, Any]:
        with self._guard:
            lock = self._locks.setdefault(peer, threading.Lock())
        if not lock.acquire(timeout=max(0.0, deadline - time.monotonic())):
            raise LinkError(f"{peer}: the link was busy until the deadline")
        try:
            link = self._links.get(peer)
            if link is not None:
                try:
                    return link.call(op, body, max(0.001, deadline - time.monotonic()))
                except LinkError as exc:
                    if exc.kind == REFUSED:  # an error reply: the link itself is fine
                        raise
                    self._drop(peer)  # closed, or timed out with a reply still on its way
            failure: LinkError | None = None
            for uri in uris:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                try:
                    link = PeerLink(self._me, self._key, peer, public, uri, min(left, max(CONNECT_SHARE_S, left / 2)))
                except LinkError as exc:
                    failure = exc
                    if exc.kind == REFUSED:
                        break  # it answered and refused: another address of the same node will too
                    continue
                self._links[peer] = link
                try:
                    return link.call(op, body, max(0.001, deadline - time.monotonic()))
                except LinkError as exc:
                    if exc.kind != REFUSED:
                        self._drop(peer)
                    raise
            raise failure or LinkError(f"{peer}: no time left before the deadline" if deadline <= time.monotonic()
                                       else f"{peer}: no address of it is known")
        finally:
            lock.release()

    def _drop(self, peer: str) -> None:
        link = self._links.pop(peer, None)
        if link is not None:
            link.close()

    def close(self) -> None:
        for peer in list(self._links):
            self._drop(peer)
