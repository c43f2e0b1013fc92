"""What two daemons say to each other over the peer link (DESIGN §8), as pure functions:
messages in, messages or a `WireError` out. orchestrator/link.py moves them over WebSockets.

Who is who. The link carries nothing before both ends have proved their node keys, and
the proof is bound to this one connection so it cannot be replayed on another:

    server → client  hello   {proto, node: S, nonce: ns}
    client → server  auth    {proto, node: C, nonce: nc, sig: C signs "client|C|S|ns|nc"}
    server → client  welcome {sig: S signs "server|S|C|nc|ns"}      (or `refused` and close)

The client checks that S is the peer it meant to reach; the server that C is trusted. No
key is ever sent: each side already holds the other's public key from pairing.

After that every request carries a time and a fresh nonce and is signed over the
connection's two nonces (`session`), so a request replayed on the same connection (same
nonce) or a later one (other session) is refused, and so is one older or newer than
`MAX_SKEW_S`. Every reply is signed the same way and names the request it answers, so a
client never takes another request's answer or a forged one.

A malformed message gets an `error` reply naming what is wrong and the connection stays
usable; nothing a peer sends raises anything but `WireError`.
"""

from __future__ import annotations

import json
import math
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from folders import keys
from folders.errors import TwinsyncError, echo
from folders.frame import canonical_json
from folders.layout import NODE_NAME_RE

PROTOCOL = "twinsync-link/1"
#: The largest message either side reads; larger ones get an error, not a parse.
MAX_MESSAGE = 64 * 1024
#: A request whose time differs from ours by more than this is stale (or from the future).
MAX_SKEW_S = 30.0
#: Requests a peer may make: ping (round-trip time) and ask (a goal → this node's answer).
OPS = frozenset({"ping", "ask"})
#: Requests only this node itself may make (a CLI or TUI holding the node's own key, to its
#: own daemon): route (a goal → the network's answer, asked over the daemon's kept links) and
#: watch (the daemon's events, pushed on this connection as `event` messages from then on).
SELF_OPS = frozenset({"route", "watch"})
_NONCE = 16  # bytes, sent as hex
_MAX_GOAL = 4000  # characters: what folders/meaning.py reads of a question anyway


class WireError(TwinsyncError):
    """A message that is not a well-formed, correctly signed link message; the text says
    what is wrong and is sent back to the peer as the `error` reply."""


def parse_listen(listen: str) -> tuple[str, int]:
    """(host, port) of `[link] listen`: `host:port` or `[v6]:port`, port 0 for any free one."""
    parts = urlsplit("//" + listen)
    try:
        port = parts.port
    except ValueError:
        port = None
    if not parts.hostname or port is None or parts.path or parts.query:
        raise WireError(f"{echo(listen)} is not host:port, like \"0.0.0.0:22100\" (port 0 picks a free one)")
    return parts.hostname, port


def new_nonce() -> str:
    return secrets.token_hex(_NONCE)


def encode(message: Mapping[str, Any]) -> str:
    return json.dumps(message, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def decode(raw: str | bytes, *, expect: str | None = None) -> dict[str, Any]:
    """One message as a dict with a string `op`; `expect` names the only op allowed now."""
    if isinstance(raw, bytes):
        raise WireError("binary messages are not part of the link protocol; send JSON text")
    if len(raw) > MAX_MESSAGE:
        raise WireError(f"message of {len(raw)} characters is over the limit of {MAX_MESSAGE}")
    try:
        message = json.loads(raw)
    except (ValueError, RecursionError):
        raise WireError("message is not JSON") from None
    if not isinstance(message, dict) or not isinstance(message.get("op"), str):
        raise WireError("message is not a JSON object with a string 'op'")
    if expect is not None and message["op"] != expect:
        raise WireError(f"expected {expect!r} here, got {echo(message['op'])}")
    return message


# -- the handshake ------------------------------------------------------------------------

def hello(me: str, nonce: str) -> dict[str, Any]:
    return {"op": "hello", "proto": PROTOCOL, "node": me, "nonce": nonce}


def auth(key: Ed25519PrivateKey, me: str, server: str, server_nonce: str, nonce: str) -> dict[str, Any]:
    return {"op": "auth", "proto": PROTOCOL, "node": me, "nonce": nonce,
            "sig": keys.sign(key, _proof("client", me, server, server_nonce, nonce))}


def welcome(key: Ed25519PrivateKey, me: str, client: str, client_nonce: str, nonce: str) -> dict[str, Any]:
    return {"op": "welcome", "sig": keys.sign(key, _proof("server", me, client, client_nonce, nonce))}


def refused(reason: str) -> dict[str, Any]:
    return {"op": "refused", "error": reason}


def check_hello(message: Mapping[str, Any], expected: str | None) -> tuple[str, str]:
    """(server name, server nonce) from a hello; `expected` is the peer the client dialled."""
    node, nonce = _peer_fields(message)
    if expected is not None and node != expected:
        raise WireError(f"the node at this address says it is {echo(node)}, not {expected!r}")
    return node, nonce


def check_auth(message: Mapping[str, Any], trusted: Mapping[str, Ed25519PublicKey], me: str,
               nonce: str) -> tuple[str, str]:
    """(client name, client nonce) once the client proved it holds a trusted node's key; a
    client that proves it holds this node's own key (its CLI) is `me`, and may route."""
    node, client_nonce = _peer_fields(message)
    public = trusted.get(node)
    if public is None:
        raise WireError(f"{echo(node)} is not a node this one trusts; pair with it first")
    if not keys.verify(public, _proof("client", node, me, nonce, client_nonce), message.get("sig")):
        raise WireError(f"the proof from {node!r} does not verify with its key; it is not {node!r}")
    return node, client_nonce


def check_welcome(message: Mapping[str, Any], public: Ed25519PublicKey, server: str, me: str,
                  nonce: str, server_nonce: str) -> None:
    if message.get("op") == "refused":
        raise WireError(f"{server} refused this node: {echo(message.get('error'), quoted=False)}")
    if message.get("op") != "welcome" or not keys.verify(
            public, _proof("server", server, me, nonce, server_nonce), message.get("sig")):
        raise WireError(f"the node at this address could not prove it is {server!r}")


def session_of(server_nonce: str, client_nonce: str) -> str:
    """What every later message is signed over besides itself: this connection alone."""
    return f"{server_nonce}:{client_nonce}"


def _proof(role: str, signer: str, other: str, their_nonce: str, own_nonce: str) -> bytes:
    return f"{PROTOCOL}|{role}|{signer}|{other}|{their_nonce}|{own_nonce}".encode()


def _peer_fields(message: Mapping[str, Any]) -> tuple[str, str]:
    if message.get("proto") != PROTOCOL:
        raise WireError(f"the peer speaks {echo(message.get('proto'))}, this node {PROTOCOL!r}; "
                        "update twinsync on the older node")
    node, nonce = message.get("node"), message.get("nonce")
    if not isinstance(node, str) or not NODE_NAME_RE.match(node):
        raise WireError(f"{echo(node)} is not a node name")
    if not isinstance(nonce, str) or len(nonce) != 2 * _NONCE or not _is_hex(nonce):
        raise WireError("the nonce is not 32 hex digits")
    return node, nonce


def _is_hex(text: str) -> bool:
    return all(c in "0123456789abcdef" for c in text)


# -- requests and replies -------------------------------------------------------------------

@dataclass(frozen=True)
class Request:
    op: str
    id: int
    body: dict[str, Any]


def request(key: Ed25519PrivateKey, session: str, op: str, rid: int, body: Mapping[str, Any], *,
            now: Callable[[], float] = time.time) -> dict[str, Any]:
    unsigned = {"op": op, "id": rid, "t": round(now(), 3), "nonce": new_nonce(), "body": dict(body)}
    return {**unsigned, "sig": keys.sign(key, _signed(session, unsigned))}


class Replays:
    """Nonces seen on one connection within the skew window: a request seen once is never
    served twice. Bounded, oldest forgotten first (a forgotten one is stale by then)."""

    def __init__(self, limit: int = 4096) -> None:
        self._seen: OrderedDict[str, float] = OrderedDict()
        self._limit = limit

    def first_time(self, nonce: str, t: float) -> bool:
        if nonce in self._seen:
            return False
        self._seen[nonce] = t
        while len(self._seen) > self._limit:
            self._seen.popitem(last=False)
        return True


def check_request(message: Mapping[str, Any], public: Ed25519PublicKey, session: str, replays: Replays, *,
                  now: Callable[[], float] = time.time, from_self: bool = False) -> Request:
    """A request this node may serve, or WireError saying why not (its id is in
    `request_id(message)` for the error reply). SELF_OPS only `from_self`."""
    op, rid, t, nonce, body = (message.get(k) for k in ("op", "id", "t", "nonce", "body"))
    if not isinstance(op, str) or op not in OPS | SELF_OPS:
        raise WireError(f"unknown request {echo(op)}; this node serves {', '.join(sorted(OPS))}")
    if type(rid) is not int or not 0 <= rid < 2**53:
        raise WireError("the request id is not a whole number")
    if type(t) not in (int, float) or not math.isfinite(t):
        raise WireError("the request time is not a number")
    if abs(now() - t) > MAX_SKEW_S:
        raise WireError(f"the request is {abs(now() - t):.0f} s away from this node's clock (limit "
                        f"{MAX_SKEW_S:.0f} s); it is stale, or a clock is wrong")
    if not isinstance(nonce, str) or len(nonce) != 2 * _NONCE or not _is_hex(nonce):
        raise WireError("the request nonce is not 32 hex digits")
    if not isinstance(body, dict):
        raise WireError("the request body is not an object")
    unsigned = {"op": op, "id": rid, "t": t, "nonce": nonce, "body": body}
    if not keys.verify(public, _signed(session, unsigned), message.get("sig")):
        raise WireError("the request's signature does not verify for this connection")
    if not replays.first_time(nonce, t):
        raise WireError("this request was already served (a replay)")
    if op in SELF_OPS and not from_self:
        raise WireError(f"{op!r} is served to this node's own commands only")
    if op in ("ask", "route"):
        goal = body.get("goal")
        if not isinstance(goal, str) or not goal.strip() or len(goal) > _MAX_GOAL:
            raise WireError(f"{op} needs a goal: text of 1 to {_MAX_GOAL} characters")
    return Request(op, rid, body)


def request_id(message: Any) -> int | None:
    rid = message.get("id") if isinstance(message, dict) else None
    return rid if type(rid) is int else None


def reply(key: Ed25519PrivateKey, session: str, rid: int | None, body: Mapping[str, Any] | None = None,
          error: str | None = None, *, op: str = "reply") -> dict[str, Any]:
    """An answer (`body`) or an `error` sentence for request `rid` (None: no readable id);
    op "event" for what a watch request gets pushed afterwards."""
    unsigned = {"op": op, "re": rid, "ok": error is None, "body": dict(body or {}), "error": error}
    return {**unsigned, "sig": keys.sign(key, _signed(session, unsigned))}


def check_reply(message: Mapping[str, Any], public: Ed25519PublicKey, session: str, rid: int, *,
                op: str = "reply") -> dict[str, Any]:
    """The body of the signed reply (or `op` "event") to request `rid`; WireError for
    anything else, including the peer's own error reply (its sentence in the message)."""
    if message.get("op") != op:
        raise WireError(f"expected {op!r}, got {echo(message.get('op'))}")
    unsigned = {k: message.get(k) for k in ("op", "re", "ok", "body", "error")}
    if not keys.verify(public, _signed(session, unsigned), message.get("sig")):
        raise WireError("the reply's signature does not verify for this connection")
    if unsigned["re"] != rid:
        raise WireError(f"the reply answers request {echo(unsigned['re'])}, not {rid}")
    if unsigned["ok"] is not True:
        raise WireError(f"the peer refused the request: {echo(unsigned['error'], quoted=False)}")
    if not isinstance(unsigned["body"], dict):
        raise WireError("the reply body is not an object")
    return unsigned["body"]


def _signed(session: str, unsigned: Mapping[str, Any]) -> bytes:
    try:
        return canonical_json({"session": session, **unsigned})
    except TwinsyncError:
        raise WireError("the message holds values JSON cannot carry exactly") from None


# -- flood control ----------------------------------------------------------------------------

class RateLimit:
    """A token bucket per connection: `rate` requests a second on average, bursts of
    `burst`. Past the limit a request gets an error reply, not service."""

    def __init__(self, rate: float, burst: int, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate, self.burst, self._clock = rate, burst, clock
        self._tokens, self._at = float(burst), clock()

    def allow(self) -> bool:
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
        self._at = now
        if self._tokens >= 1:
            self._tokens -= 1
            return True
        return False
