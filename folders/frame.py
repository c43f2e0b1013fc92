"""Frames: signed units of meaning that Syncthing copies between nodes, checkable anywhere.

A frame's hash covers every field but `hash` and `sig`, in one canonical JSON form, so
two nodes agree on it byte for byte; the signature covers the hash, so checking a frame
costs one sha256 and one Ed25519 verification.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from folders import keys
from folders.errors import FrameError, echo
from folders.files import write_atomic

FORMAT_VERSION = 1
FRAME_SUFFIX = ".frame.json"
MIN_ID_SEGMENTS = 2
MAX_ID_SEGMENTS = 8
HASH_PREFIX = "sha256:"
#: Deepest nesting of objects and arrays in a frame body. Python's parser and encoder recurse
#: once per level and give up near 1,000; a named limit well below that makes every node
#: (CLI, daemon, validator, hash) refuse the same documents with the same sentence.
MAX_DEPTH = 100
CREATED_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
FIELDS = frozenset({"twinsync", "id", "author", "created", "parents", "body", "hash", "sig"})

_SEGMENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_HASH = re.compile(r"sha256:[0-9a-f]{64}")
_CREATED = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z")
#: Syncthing treats any name containing this as a conflict copy and never makes a
#: conflict copy of it (it deletes the losing version instead), so no frame may carry it.
_CONFLICT_MARKER = ".sync-conflict-"


def canonical_json(obj: Any) -> bytes:
    """The one serialisation every node hashes; raises FrameError for what JSON cannot carry."""
    try:
        text = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
        return text.encode("utf-8")
    except RecursionError:
        raise too_deep("The frame") from None
    except (TypeError, ValueError) as exc:
        raise FrameError(f"The frame cannot be written as canonical JSON ({exc}); "
                         "use only objects, arrays, strings, integers, finite numbers, booleans and null.") from None


def nesting_depth(value: Any) -> int:
    """How many objects and arrays deep `value` goes, counted without recursion, so a
    hostile document cannot crash the counting itself. Only containers are visited: the
    validator counts every frame it reads, and leaves cannot add depth."""
    if not isinstance(value, (dict, list, tuple)):
        return 0
    deepest, stack = 1, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        deepest = max(deepest, depth)
        if depth > MAX_DEPTH:
            break
        for child in item.values() if isinstance(item, dict) else item:
            if isinstance(child, (dict, list, tuple)):
                stack.append((child, depth + 1))
    return deepest


def check_depth(value: Any, what: str) -> None:
    if nesting_depth(value) > MAX_DEPTH:
        raise too_deep(what)


def too_deep(what: str) -> FrameError:
    """The one message for JSON nested past MAX_DEPTH, whether the parser, the hash or the
    count noticed first."""
    return FrameError(f"{what} is nested more than {MAX_DEPTH} levels deep (objects or arrays inside "
                      "each other); flatten it, for example into several frames.")


def check_frame_id(frame_id: str) -> str:
    """Ids become paths on every node, so they must never climb out of the frames folder."""
    if not isinstance(frame_id, str):
        raise FrameError(f"Frame id {echo(frame_id)} is a {json_kind(frame_id)}, not a string like 'notes/today'.")
    if frame_id.startswith("/"):
        raise FrameError(f"Frame id {echo(frame_id)} is absolute; drop the leading '/', like 'notes/today'.")
    segments = frame_id.split("/")
    if not MIN_ID_SEGMENTS <= len(segments) <= MAX_ID_SEGMENTS:
        raise FrameError(f"Frame id {echo(frame_id)} must have {MIN_ID_SEGMENTS} to {MAX_ID_SEGMENTS} "
                         "parts separated by '/', like 'notes/today'.")
    for segment in segments:
        _check_segment(frame_id, segment)
    return frame_id


def _check_segment(frame_id: str, segment: str) -> None:
    if segment == "..":
        raise FrameError(f"Frame id {echo(frame_id)} contains '..'; ids may not leave the frames folder.")
    if not _SEGMENT.fullmatch(segment):
        raise FrameError(f"Frame id {echo(frame_id)} has a bad part {echo(segment)}; each part must start with a "
                         "letter or digit and use only letters, digits, '.', '_' and '-' (at most 128).")
    if _CONFLICT_MARKER in segment:
        raise FrameError(f"Frame id {echo(frame_id)} contains {_CONFLICT_MARKER!r}, which Syncthing reserves "
                         "for conflict copies; choose another name.")


def json_kind(value: Any) -> str:
    """JSON's own word for a parsed value, for messages people read."""
    kinds = {dict: "object", list: "array", str: "string", int: "number", float: "number", bool: "boolean"}
    return kinds.get(type(value), "null" if value is None else type(value).__name__)


def frame_path(root: Path, frame_id: str) -> Path:
    """`<root>/<namespace>/<name>.frame.json` for id `namespace/name`."""
    *dirs, name = check_frame_id(frame_id).split("/")
    return Path(root).joinpath(*dirs, name + FRAME_SUFFIX)


def format_created(moment: datetime) -> str:
    """Seconds in UTC: the form every node writes, so `created` sorts as text."""
    if moment.tzinfo is None:
        raise ValueError("created must be a timezone-aware datetime")
    return moment.astimezone(timezone.utc).strftime(CREATED_FORMAT)


def _detached(body: Any) -> Any:
    """A deep copy in exactly the shape a reader will parse, so later edits to the caller's
    object cannot make a frame disagree with its own hash."""
    return json.loads(canonical_json(body))


def document_hash(unsigned: Mapping[str, Any]) -> str:
    """The hash a signed document (a frame, a module manifest) carries: sha256 of the
    canonical JSON of every field but `hash` and `sig`."""
    return HASH_PREFIX + hashlib.sha256(canonical_json(unsigned)).hexdigest()


@dataclass(frozen=True)
class Frame:
    """One frame as stored on disk; build new ones with `Frame.create`, read ones with `from_dict`."""

    id: str
    author: str
    created: str
    parents: tuple[str, ...]
    body: dict[str, Any] = field(hash=False)
    hash: str
    sig: str

    @classmethod
    def create(
        cls,
        id: str,
        author: str,
        body: Mapping[str, Any],
        key: Ed25519PrivateKey,
        created: datetime | None = None,
        parents: Iterable[str] = (),
    ) -> Frame:
        """Hash and sign a new frame; `created` is a parameter so tests pass a fixed clock."""
        check_depth(body, "The frame body")
        moment = datetime.now(timezone.utc) if created is None else created
        unsigned = {"twinsync": FORMAT_VERSION, "id": id, "author": author,
                    "created": format_created(moment), "parents": list(parents), "body": _detached(body)}
        _check_fields(unsigned)
        digest = document_hash(unsigned)
        return cls(id=id, author=author, created=unsigned["created"], parents=tuple(unsigned["parents"]),
                   body=unsigned["body"], hash=digest, sig=keys.sign(key, digest.encode("ascii")))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Frame:
        """Check the shape of a parsed document; the hash and signature are checked separately."""
        if not isinstance(data, Mapping):
            raise FrameError("A frame must be a JSON object.")
        missing, extra = FIELDS - data.keys(), data.keys() - FIELDS
        if missing or extra:
            raise FrameError(f"A frame has exactly the fields {', '.join(sorted(FIELDS))}; "
                             f"missing: {', '.join(sorted(missing)) or 'none'}, "
                             f"unexpected: {', '.join(sorted(map(str, extra))) or 'none'}.")
        _check_fields(data)
        for name in ("hash", "sig"):
            if not isinstance(data[name], str):
                raise FrameError(f"The frame field {name!r} must be a string.")
        return cls(id=data["id"], author=data["author"], created=data["created"],
                   parents=tuple(data["parents"]), body=dict(data["body"]), hash=data["hash"], sig=data["sig"])

    def unsigned_dict(self) -> dict[str, Any]:
        return {"twinsync": FORMAT_VERSION, "id": self.id, "author": self.author, "created": self.created,
                "parents": list(self.parents), "body": self.body}

    def to_dict(self) -> dict[str, Any]:
        return {**self.unsigned_dict(), "hash": self.hash, "sig": self.sig}

    def to_bytes(self) -> bytes:
        """The on-disk form: canonical JSON and a newline, so every node writes identical bytes."""
        return canonical_json(self.to_dict()) + b"\n"

    def expected_hash(self) -> str:
        return document_hash(self.unsigned_dict())

    def signed_by(self, public: Ed25519PublicKey) -> bool:
        """The signature covers the hash text; whether the hash matches is `expected_hash`'s job."""
        return keys.verify(public, self.hash.encode("ascii"), self.sig)

    def verify(self, public: Ed25519PublicKey) -> bool:
        return self.hash == self.expected_hash() and self.signed_by(public)


def _check_fields(data: Mapping[str, Any]) -> None:
    """Type and format checks shared by `create` (our bugs) and `from_dict` (peers' files)."""
    version = data["twinsync"]
    if type(version) is not int or version != FORMAT_VERSION:
        raise FrameError(f"The frame format version is {json.dumps(version)}; "
                         f"this twinsync reads version {FORMAT_VERSION}.")
    check_frame_id(data["id"])
    author = data["author"]
    if not isinstance(author, str) or not _SEGMENT.fullmatch(author):
        raise FrameError(f"The frame author {echo(author)} is not a node name (letters, digits, '.', '_', '-').")
    _check_created(data["created"])
    _check_parents(data["parents"])
    if not isinstance(data["body"], dict):
        raise FrameError(f"The frame body must be a JSON object, not {json_kind(data['body'])}.")
    check_depth(data["body"], "The frame body")


def _check_created(created: Any) -> None:
    if not isinstance(created, str) or not _CREATED.fullmatch(created):
        raise FrameError(f"The frame field 'created' is {echo(created)}; it must look like 2026-11-25T08:00:00Z.")
    try:
        datetime.strptime(created, CREATED_FORMAT)
    except ValueError:
        raise FrameError(f"The frame field 'created' is {echo(created)}, which is not a real date and time.") from None


def _check_parents(parents: Any) -> None:
    if not isinstance(parents, (list, tuple)):
        raise FrameError("The frame field 'parents' must be a list of 'sha256:<64 hex>' hashes.")
    for parent in parents:
        if not isinstance(parent, str) or not _HASH.fullmatch(parent):
            raise FrameError(f"The frame parent {echo(parent)} is not a 'sha256:<64 lowercase hex>' hash.")


def save_frame(root: Path, frame: Frame) -> Path:
    """Write the frame where its id says, atomically, so Syncthing never ships half of it."""
    path = frame_path(root, frame.id)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, frame.to_bytes())
    return path
