"""frame-hash-validator: decides whether a file in the frames folder may be trusted.

Anything a peer (or a half-finished sync) puts into the shared folder is hostile until
proven otherwise, so each file gets a verdict with a stable code the orchestrator can act
on and a sentence a person can act on. Cheap checks run first; the file is opened once,
step by step from the root without following any link, and its size is known before a
byte is read.
"""

from __future__ import annotations

import errno
import json
import math
import os
import stat
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from folders.errors import FrameError, echo
from folders.frame import FRAME_SUFFIX, Frame, check_frame_id, json_kind, too_deep
from folders.gitobjects import object_id
from folders.keys import public_key_text

MAX_FRAME_SIZE = 16 * 1024 * 1024
_UTF8_BOM = b"\xef\xbb\xbf"
_READ_CHUNK = 1024 * 1024


class VerdictCode(StrEnum):
    """Stable names the orchestrator stores and branches on; never rename one."""

    OK = "ok"
    OUTSIDE_ROOT = "outside_root"
    BAD_NAME = "bad_name"
    NOT_FOUND = "not_found"
    SYMLINK_ESCAPE = "symlink_escape"
    NOT_A_FILE = "not_a_file"
    UNREADABLE = "unreadable"
    TOO_LARGE = "too_large"
    EMPTY = "empty"
    BOM = "bom"
    NOT_UTF8 = "not_utf8"
    BAD_JSON = "bad_json"
    DUPLICATE_KEY = "duplicate_key"
    NOT_OBJECT = "not_object"
    BAD_SCHEMA = "bad_schema"
    ID_MISMATCH = "id_mismatch"
    HASH_MISMATCH = "hash_mismatch"
    UNTRUSTED_AUTHOR = "untrusted_author"
    BAD_SIGNATURE = "bad_signature"


@dataclass(frozen=True)
class Verdict:
    """`blob`: of a valid file, the Git blob id of exactly the bytes judged, so that a commit
    can take those bytes and no others (the file may change between the two)."""

    ok: bool
    code: VerdictCode
    message: str
    frame: Frame | None
    path: Path
    blob: str | None = None


class _Rejected(Exception):
    """Carries a failed check out of nested helpers; never leaves this module."""

    def __init__(self, code: VerdictCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def validate_frame_file(
    root: Path,
    path: Path,
    trusted: Mapping[str, Ed25519PublicKey],
    max_size: int = MAX_FRAME_SIZE,
    expected_id: str | None = None,
) -> Verdict:
    """Judge one file (a relative `path` is taken from `root`).

    `expected_id` replaces the id the file name implies, so a Syncthing conflict copy
    (whose name is no frame name) can be judged as the frame it is a copy of.
    """
    root, path = Path(os.path.abspath(root)), Path(path)
    shown = _shown(root, path)
    try:
        frame, data = _check(root, path, shown, trusted, max_size, expected_id)
    except _Rejected as rejected:
        return Verdict(False, rejected.code, rejected.message, None, path)
    return _valid(path, shown, frame, data)


def validate_frame_bytes(
    path: Path,
    data: bytes,
    trusted: Mapping[str, Ed25519PublicKey],
    max_size: int = MAX_FRAME_SIZE,
) -> Verdict:
    """Judge bytes that are about to be written at `path` (relative to the frames folder)
    with the same checks as a file there, so a command refuses a frame the daemon would
    refuse before anything reaches the synced folder and its peers."""
    path = Path(path)
    shown = echo(str(path), quoted=False)
    try:
        if path.is_absolute() or ".." in path.parts:
            raise _Rejected(VerdictCode.OUTSIDE_ROOT, f"{shown} is not a plain path inside the frames folder.")
        if len(data) > max_size:
            raise _too_large(shown, max_size)
        frame = _check_data(data, _expected_id(path.parts, shown, None), shown, trusted)
    except _Rejected as rejected:
        return Verdict(False, rejected.code, rejected.message, None, path)
    return _valid(path, shown, frame, data)


def _valid(path: Path, shown: str, frame: Frame, data: bytes) -> Verdict:
    return Verdict(True, VerdictCode.OK, f"{shown} is a valid frame signed by {frame.author}.", frame, path,
                   object_id(b"blob", data))


def _check(root: Path, path: Path, shown: str, trusted: Mapping[str, Ed25519PublicKey],
           max_size: int, expected_id: str | None) -> tuple[Frame, bytes]:
    parts = _relative_parts(root, path, shown)
    frame_id = _expected_id(parts, shown, expected_id)
    data = _read_beneath(root, parts, shown, max_size)
    return _check_data(data, frame_id, shown, trusted), data


def _check_data(data: bytes, frame_id: str, shown: str, trusted: Mapping[str, Ed25519PublicKey]) -> Frame:
    frame = _parse(data, shown)
    _check_content(frame, frame_id, shown)
    _check_signature(frame, trusted, shown)
    return frame


def _shown(root: Path, path: Path) -> str:
    """Messages name files as people see them: relative to the frames folder when inside it."""
    if not path.is_absolute():  # the daemon's case, 10k times a batch: no pathlib arithmetic
        return echo(str(path), quoted=False)
    absolute = root / path
    return echo(str(absolute.relative_to(root)) if absolute.is_relative_to(root) else str(path), quoted=False)


def _relative_parts(root: Path, path: Path, shown: str) -> tuple[str, ...]:
    if ".." in path.parts:
        raise _Rejected(VerdictCode.OUTSIDE_ROOT, f"{shown} contains '..'; a frame is addressed only by a "
                        "plain path inside the frames folder, so use that path instead.")
    if not path.is_absolute() and path.parts:
        return path.parts
    absolute = root / path
    if absolute == root or not absolute.is_relative_to(root):
        raise _Rejected(VerdictCode.OUTSIDE_ROOT, f"{shown} is not inside the frames folder {root}; "
                        "only files inside that folder can be frames.")
    return absolute.relative_to(root).parts


def _expected_id(parts: tuple[str, ...], shown: str, expected_id: str | None) -> str:
    try:
        if expected_id is not None:
            return check_frame_id(expected_id)
        *dirs, name = parts
        if not name.endswith(FRAME_SUFFIX):
            raise FrameError(f"its name does not end in {FRAME_SUFFIX!r}")
        return check_frame_id("/".join([*dirs, name[: -len(FRAME_SUFFIX)]]))
    except FrameError as exc:
        raise _Rejected(VerdictCode.BAD_NAME, f"{shown} is not named like a frame ({_clause(exc)}); rename it "
                        "to <namespace>/<name>.frame.json or move it out of the frames folder.") from None


def _read_beneath(root: Path, parts: tuple[str, ...], shown: str, max_size: int) -> bytes:
    """Open each path component relative to the previous one with O_NOFOLLOW, so no link is
    followed and nothing swapped in between a check and the read can redirect it."""
    fd = _open_root(root, shown)
    try:
        for depth in range(len(parts)):
            child = _open_child(fd, root, parts, depth, shown)
            os.close(fd)
            fd = child
        return _read_regular(fd, shown, max_size)
    finally:
        os.close(fd)


def _open_root(root: Path, shown: str) -> int:
    try:
        return os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    except FileNotFoundError:
        raise _Rejected(VerdictCode.NOT_FOUND, f"{shown} cannot be checked because the frames folder {root} "
                        "does not exist; check the node home or run the setup again.") from None
    except OSError as exc:
        raise _Rejected(VerdictCode.UNREADABLE, f"{shown} cannot be checked because the frames folder {root} "
                        f"cannot be opened ({exc.strerror}); fix its permissions.") from None


def _open_child(dir_fd: int, root: Path, parts: tuple[str, ...], depth: int, shown: str) -> int:
    """O_NONBLOCK so a FIFO named like a frame is opened (and refused) instead of hanging us."""
    last = depth == len(parts) - 1
    flags = os.O_RDONLY | os.O_NOFOLLOW | (os.O_NONBLOCK if last else os.O_DIRECTORY)
    try:
        return os.open(parts[depth], flags, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR) and _is_link(dir_fd, parts[depth]):
            raise _symlink_rejection(root, parts[: depth + 1], last, shown) from None
        if exc.errno in (errno.ENOENT, errno.ENOTDIR):
            raise _Rejected(VerdictCode.NOT_FOUND, f"{shown} does not exist (it may have just been renamed or "
                            "deleted); nothing to do unless you expected it there.") from None
        raise _Rejected(VerdictCode.UNREADABLE, f"{shown} cannot be opened ({exc.strerror}); "
                        "fix its permissions so twinsync can read it.") from None


def _is_link(dir_fd: int, name: str) -> bool:
    try:
        return stat.S_ISLNK(os.lstat(name, dir_fd=dir_fd).st_mode)
    except OSError:
        return False


def _symlink_rejection(root: Path, reached: tuple[str, ...], last: bool, shown: str) -> _Rejected:
    """Links are refused wherever they point; the message says where, so a person can judge."""
    link = root.joinpath(*reached)
    where = "inside" if Path(os.path.realpath(link)).is_relative_to(os.path.realpath(root)) else "outside"
    which = "is a symbolic link" if last else f"goes through the symbolic link {link.relative_to(root)}"
    return _Rejected(VerdictCode.SYMLINK_ESCAPE, f"{shown} {which}, which points {where} the frames folder; "
                     "twinsync never follows links there, so replace the link with the real item or remove it.")


def _read_regular(fd: int, shown: str, max_size: int) -> bytes:
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        kind = "a folder" if stat.S_ISDIR(info.st_mode) else "not a regular file"
        raise _Rejected(VerdictCode.NOT_A_FILE, f"{shown} is {kind} although it is named like a frame; "
                        "rename or remove it.")
    if info.st_size > max_size:
        raise _too_large(shown, max_size)
    data = _read_at_most(fd, max_size + 1)
    if len(data) > max_size:
        raise _too_large(shown, max_size)
    if not data:
        raise _Rejected(VerdictCode.EMPTY, f"{shown} is empty (perhaps still being written); "
                        "wait for the sync to finish, then restore it from Git if it stays empty.")
    return data


def _read_at_most(fd: int, limit: int) -> bytes:
    """Bounded even when the file grows after fstat."""
    chunks: list[bytes] = []
    remaining = limit
    while remaining > 0:
        chunk = os.read(fd, min(remaining, _READ_CHUNK))
        if not chunk:
            break
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


def _too_large(shown: str, max_size: int) -> _Rejected:
    return _Rejected(VerdictCode.TOO_LARGE, f"{shown} is larger than the {max_size}-byte frame limit; "
                     "split its content into smaller frames, or raise max_size in the [frames] "
                     "section of twinsync.toml on every node.")


def _parse(data: bytes, shown: str) -> Frame:
    if data.startswith(_UTF8_BOM):
        raise _Rejected(VerdictCode.BOM, f"{shown} starts with a UTF-8 byte order mark; "
                        "save it as plain UTF-8 without a BOM.")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _Rejected(VerdictCode.NOT_UTF8, f"{shown} is not UTF-8 text (bad byte at offset {exc.start}); "
                        "restore it from Git or remove it.") from None
    document = _load_json(text, shown)
    if not isinstance(document, dict):
        raise _Rejected(VerdictCode.NOT_OBJECT, f"{shown} holds a JSON {json_kind(document)}, "
                        "not an object; restore it from Git or remove it.")
    try:
        return Frame.from_dict(document)
    except FrameError as exc:
        raise _bad_schema(shown, exc) from None


def _load_json(text: str, shown: str) -> Any:
    """Duplicate keys and non-finite numbers are refused while parsing: either would let two
    parsers read two different frames from the same bytes."""

    def unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _Rejected(VerdictCode.DUPLICATE_KEY, f"{shown} repeats the key {echo(key)} in one object; "
                                "restore it from Git or ask its author to re-create it.")
            seen.add(key)
        return dict(pairs)

    def not_finite(token: str) -> float:
        raise _Rejected(VerdictCode.BAD_SCHEMA, f"{shown} contains the number {token}, which JSON cannot carry "
                        "portably; ask its author to re-create it with finite numbers.")

    def finite_float(token: str) -> float:
        value = float(token)
        return value if math.isfinite(value) else not_finite(token)

    try:
        return json.loads(text, object_pairs_hook=unique_keys, parse_constant=not_finite, parse_float=finite_float)
    except RecursionError:
        raise _bad_schema(shown, too_deep("The frame")) from None
    except ValueError as exc:
        raise _Rejected(VerdictCode.BAD_JSON, f"{shown} is not valid JSON ({exc}); it may be half-synced, "
                        "so wait for Syncthing to finish, then restore it from Git if it stays broken.") from None


def _check_content(frame: Frame, frame_id: str, shown: str) -> None:
    if frame.id != frame_id:
        raise _Rejected(VerdictCode.ID_MISMATCH, f"{shown} holds frame {echo(frame.id)} but its place says "
                        f"{echo(frame_id)}; move it to its own path or remove it.")
    try:
        expected = frame.expected_hash()
    except FrameError as exc:
        raise _bad_schema(shown, exc) from None
    if frame.hash != expected:
        raise _Rejected(VerdictCode.HASH_MISMATCH, f"{shown} does not match its hash (changed after signing, or "
                        "hashed over other bytes than canonical JSON); restore it from Git or ask its author "
                        "to re-create it.")


def _check_signature(frame: Frame, trusted: Mapping[str, Ed25519PublicKey], shown: str) -> None:
    public = trusted.get(frame.author)
    if public is None:
        raise _Rejected(VerdictCode.UNTRUSTED_AUTHOR, f"{shown} is signed as {echo(frame.author)}, a node this node "
                        "does not trust; add that node as a trusted peer if you know it, or remove the file.")
    if not frame.signed_by(public):
        raise _Rejected(VerdictCode.BAD_SIGNATURE, f"{shown} claims author {echo(frame.author)} but its signature "
                        "does not match that node's key (forged or damaged); do not use it: restore it "
                        "from Git or remove it.")


def _bad_schema(shown: str, exc: FrameError) -> _Rejected:
    return _Rejected(VerdictCode.BAD_SCHEMA, f"{shown} is not a well-formed frame ({_clause(exc)}); "
                     "ask its author to re-create it or remove it.")


def _clause(exc: Exception) -> str:
    """Fold an error sentence into ours."""
    return str(exc).rstrip(".")


class VerdictCache:
    """Remembers each file's verdict until the file or the trust in its author changes: a
    reconcile sees every frame, and each signature check costs ~0.2 ms (DESIGN §7).

    The stamp holds inode and ctime as well as size and mtime, because Syncthing sets a
    pulled file's mtime to its source's, so two versions can share size and mtime; and it
    holds the inode and type of every folder on the way, so a folder swapped for a link
    is re-checked.
    """

    def __init__(self) -> None:
        self._entries: dict[tuple[Path, Path], tuple[tuple[Any, ...], Verdict]] = {}

    def validate(self, root: Path, path: Path, trusted: Mapping[str, Ed25519PublicKey],
                 max_size: int = MAX_FRAME_SIZE, expected_id: str | None = None) -> Verdict:
        key = (Path(os.path.abspath(root)), Path(path))
        stamp, cached = self._lookup(key, (max_size, expected_id, _trust_stamp(trusted)))
        if cached is not None:
            return cached
        verdict = validate_frame_file(root, path, trusted, max_size, expected_id)
        self._remember(key, stamp, verdict)
        return verdict

    def validate_many(self, root: Path, paths: Iterable[Path], trusted: Mapping[str, Ed25519PublicKey],
                      max_size: int = MAX_FRAME_SIZE, judge: Judge | None = None) -> dict[Path, Verdict]:
        """`validate` for each path, with the files the cache cannot answer for judged
        together by `judge` (by default one after another): the orchestrator passes one that
        uses every core. Verdicts and cache entries are exactly `validate`'s.

        A path the cache never saw is not stamped here: the judge stamps each file just
        before reading it, so with a cold cache (a new node, a burst from a peer) no serial
        pass over the files holds up the workers."""
        root = Path(os.path.abspath(root))
        settings = (max_size, None, _trust_stamp(trusted))
        verdicts: dict[Path, Verdict] = {}
        unknown: list[Path] = []
        for path in paths:
            key = (root, path)
            cached = self._lookup(key, settings)[1] if key in self._entries else None
            if cached is not None:
                verdicts[path] = cached
            else:
                unknown.append(path)
        judged = (judge or judge_one_by_one)(root, unknown, trusted, max_size)
        for path, (stamp, verdict) in zip(unknown, judged, strict=True):
            self._remember((root, path), None if stamp is None else stamp + settings, verdict)
            verdicts[path] = verdict
        return verdicts

    def _lookup(self, key: tuple[Path, Path], settings: tuple[Any, ...]) -> tuple[tuple[Any, ...] | None,
                                                                                   Verdict | None]:
        """The file's stamp (None when it cannot be stat'ed) and its verdict if still good."""
        stamp = _stamp(*key)
        if stamp is None:
            return None, None
        stamp += settings
        cached = self._entries.get(key)
        return stamp, cached[1] if cached is not None and cached[0] == stamp else None

    def _remember(self, key: tuple[Path, Path], stamp: tuple[Any, ...] | None, verdict: Verdict) -> None:
        if stamp is None:
            self._entries.pop(key, None)
        else:
            self._entries[key] = (stamp, verdict)


#: What a judge says of one file: its stamp (None when it cannot be stat'ed) and its
#: verdict. The stamp is taken before the file is read: one that changes while it is judged
#: has a newer stamp at the next look and is judged again, so a verdict is never reused for
#: content it was not given.
Judged = tuple[tuple[Any, ...] | None, Verdict]
#: Judges files given (root, paths, trusted, max_size): one Judged per path, in order.
Judge = Callable[[Path, list[Path], Mapping[str, Ed25519PublicKey], int], list[Judged]]


def judge_one_by_one(root: Path, paths: list[Path], trusted: Mapping[str, Ed25519PublicKey],
                     max_size: int = MAX_FRAME_SIZE) -> list[Judged]:
    return [judge_one(root, path, trusted, max_size) for path in paths]


def judge_one(root: Path, path: Path, trusted: Mapping[str, Ed25519PublicKey], max_size: int) -> Judged:
    stamp = _stamp(root, path)
    return stamp, validate_frame_file(root, path, trusted, max_size)


def _stamp(root: Path, path: Path) -> tuple[Any, ...] | None:
    """None when the file cannot be stat'ed: such verdicts are cheap and never cached."""
    if path.is_absolute():
        absolute = root / path
        if absolute == root or not absolute.is_relative_to(root):
            return None
        parts = absolute.relative_to(root).parts
    else:
        parts = path.parts
    if not parts or ".." in parts:
        return None
    stamp: list[Any] = []
    current = str(root)
    try:
        for part in parts:
            current = f"{current}/{part}"
            info = os.lstat(current)
            stamp.append((info.st_ino, info.st_mode))
    except OSError:
        return None
    stamp.append((info.st_size, info.st_mtime_ns, info.st_ctime_ns))
    return tuple(stamp)


def _trust_stamp(trusted: Mapping[str, Ed25519PublicKey]) -> tuple[tuple[str, str], ...]:
    return tuple(sorted((name, public_key_text(key)) for name, key in trusted.items()))
