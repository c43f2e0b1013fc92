"""Git's objects and refs, written and read in this process (DESIGN §7, README Speed).

Every frame a node puts or receives becomes one commit. Made with `git update-index`,
`write-tree`, `commit-tree` and `update-ref`, one commit cost four `git` processes of 3-6 ms
each, on the sending node and again on the receiving one: most of what twinsync added to
Syncthing's latency. The formats are small and fixed, so a commit is written here instead:

- an object is the file `objects/<2 hex>/<38 hex>` holding zlib(`<kind> <size>\\0<body>`),
  named by the SHA-1 of what it inflates to; it is written under a temporary name and renamed,
  so a reader never sees half of one; many objects at once go into one pack (`store`);
- a ref is one line, moved as Git moves it: `<ref>.lock` is created exclusively, the current
  value is compared with the expected one, and the lock is renamed over the ref; the reflog
  gets the line `git update-ref -m` would append.

Git still reads everything (log, show, gc, fsck). Objects that Git packed are read through
the `read_packed` callable the repository gives (one `git cat-file` process), since a pack
reader would be a second copy of Git. Trees are named by their content, so a tree read once
stays valid forever; a bounded cache keeps the ones in use, and a commit then reads nothing.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import struct
import threading
import time
import zlib
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from folders.errors import TwinsyncError

TREE_MODE = b"40000"
FILE_MODE = b"100644"
EXEC_MODE = b"100755"
LINK_MODE = b"120000"
ZERO_SHA = "0" * 40

#: What a tree entry holds: (mode, sha); a tree is name -> entry.
Entry = tuple[bytes, str]
Tree = dict[bytes, Entry]

#: From this many objects at once, they are written as one pack rather than loose files.
PACK_MIN = 64
#: How many bytes of file content a caller gives one `store` call at most (a pack is built
#: in memory; FrameRepo.commit stores a batch's files this much at a time).
CHUNK_BYTES = 32 << 20
_PACK_TYPES = {b"commit": 1, b"tree": 2, b"blob": 3}
#: Trees kept, counted in entries (a 100-frame folder is 100): about 4 MB at most.
_CACHE_ENTRIES = 20_000
#: How long a ref lock held by another writer (such as `git gc` packing refs) is waited for.
_LOCK_WAIT_S = 1.0
#: A ref lock this old was left by a writer killed while it held it (Git holds one for
#: milliseconds): it is removed, so a daemon killed mid-commit does not block every later one.
STALE_LOCK_S = 10.0


class GitStoreError(TwinsyncError):
    """The frames Git repository is missing, damaged, or refused an operation."""


def git_time(when: datetime) -> str:
    """`<unix seconds> +hhmm`, the form of every date in a commit or reflog line."""
    offset = when.utcoffset()
    if offset is None:
        raise ValueError(f"commit time {when!r} has no time zone; pass an aware datetime")
    minutes = int(offset.total_seconds()) // 60
    sign = "-" if minutes < 0 else "+"
    return f"{int(when.timestamp())} {sign}{abs(minutes) // 60:02d}{abs(minutes) % 60:02d}"


def tree_body(tree: Tree) -> bytes:
    """A tree object's body: entries in Git's order, where a folder sorts as `name/`."""
    def key(item: tuple[bytes, Entry]) -> bytes:
        return item[0] + b"/" if item[1][0] == TREE_MODE else item[0]
    return b"".join(mode + b" " + name + b"\0" + bytes.fromhex(sha)
                    for name, (mode, sha) in sorted(tree.items(), key=key))


def parse_tree(body: bytes) -> Tree:
    tree: Tree = {}
    i, end = 0, len(body)
    while i < end:
        space = body.index(b" ", i)
        nul = body.index(b"\0", space)
        tree[body[space + 1:nul]] = (body[i:space], body[nul + 1:nul + 21].hex())
        i = nul + 21
    return tree


def commit_body(tree: str, parents: list[str], author: str, committer: str, message: str) -> bytes:
    """`author` and `committer` are `Name <email> <git_time>`; the message is kept as given,
    as `git commit-tree -F` keeps it."""
    head = [f"tree {tree}", *(f"parent {p}" for p in parents), f"author {author}", f"committer {committer}"]
    return ("\n".join(head) + "\n\n" + message).encode("utf-8")


def _header(kind: bytes, body: bytes) -> bytes:
    return kind + b" " + str(len(body)).encode() + b"\0"


def object_id(kind: bytes, body: bytes) -> str:
    """The sha Git names this object by (`git hash-object`)."""
    return hashlib.sha1(_header(kind, body) + body).hexdigest()


def _pack_header(kind: int, size: int) -> bytes:
    """An object's header in a pack: its type and size, seven bits a byte after the first four."""
    out = bytearray([(kind << 4) | (size & 0x0F)])
    size >>= 4
    while size:
        out[-1] |= 0x80
        out.append(size & 0x7F)
        size >>= 7
    return bytes(out)


def _put_file(tmp: str, final: str | Path, data: bytes, *, fsync: bool) -> None:
    """`data` written to the new file `tmp` (read-only, as Git's objects are), then renamed to
    `final`, so a reader sees all of it or nothing; on failure `tmp` is gone too. Git's
    `prune` removes the `tmp_*` a kill -9 leaves."""
    try:
        with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o444), "wb") as fh:
            fh.write(data)
            if fsync:
                fh.flush()
                os.fsync(fh.fileno())
        os.replace(tmp, final)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


class _TreeCache:
    """Trees by sha, the least recently used dropped first once they hold too many entries.
    Locked: a daemon's threads each open the repository."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._trees: dict[str, Tree] = {}
        self._size = 0
        self._lock = threading.Lock()

    def get(self, sha: str) -> Tree | None:
        with self._lock:
            tree = self._trees.pop(sha, None)
            if tree is not None:
                self._trees[sha] = tree
            return tree

    def put(self, sha: str, tree: Tree) -> None:
        with self._lock:
            if sha in self._trees:
                return
            self._trees[sha] = tree
            self._size += len(tree) + 1
            while self._size > self._limit and len(self._trees) > 1:
                self._size -= len(self._trees.pop(next(iter(self._trees)))) + 1


_TREES = _TreeCache(_CACHE_ENTRIES)  # shared by every repository: a sha names the same tree anywhere


class ObjectStore:
    """The objects of one Git dir."""

    def __init__(self, git_dir: Path, read_packed: Callable[[str], tuple[bytes, bytes]],
                 missing: Callable[[list[str]], set[str]]) -> None:
        """`read_packed(sha)` returns (kind, body) of an object that is not a loose file;
        `missing(shas)` tells which of these objects the repository does not hold."""
        self.objects = git_dir / "objects"
        self._read_packed = read_packed
        self._missing = missing

    def store(self, objects: list[tuple[bytes, bytes]]) -> list[str]:
        """Write (kind, body) objects; returns their shas in order. Each loose object is a
        file, and creating one costs about half a millisecond on an ordinary disk, so from
        PACK_MIN on, the ones the repository lacks go into one new pack instead (as
        `git fast-import` and every fetch do): 10k new frames are one file, not 10k."""
        if len(objects) < PACK_MIN:
            return [self.write(kind, body) for kind, body in objects]
        shas = [object_id(kind, body) for kind, body in objects]
        absent = self._missing(list(dict.fromkeys(shas)))
        fresh = {sha: obj for sha, obj in zip(shas, objects) if sha in absent}
        if fresh:
            self._write_pack(fresh)
        return shas

    def _write_pack(self, objects: dict[str, tuple[bytes, bytes]]) -> None:
        """A version 2 pack of whole (undeltified) objects and its version 2 index. The pack
        is renamed into place before its index: Git finds packs by their index, so a reader
        sees all of it or none (what `git index-pack` does)."""
        pack_dir = self.objects / "pack"
        pack_dir.mkdir(exist_ok=True)
        entries, chunks, offset = [], [struct.pack(">4sII", b"PACK", 2, len(objects))], 12
        for sha, (kind, body) in objects.items():
            raw = _pack_header(_PACK_TYPES[kind], len(body)) + zlib.compress(body, 1)
            entries.append((bytes.fromhex(sha), zlib.crc32(raw), offset))
            chunks.append(raw)
            offset += len(raw)
        pack = b"".join(chunks)
        pack += hashlib.sha1(pack).digest()
        entries.sort()
        fanout, i = [], 0
        for first in range(256):
            while i < len(entries) and entries[i][0][0] == first:
                i += 1
            fanout.append(i)
        # Offsets fit in 31 bits (so no large-offset table) as long as a caller's objects
        # before the last one stay under 2 GiB: FrameRepo.commit stores at most CHUNK_BYTES.
        index = b"".join([b"\377tOc", struct.pack(">I", 2), struct.pack(">256I", *fanout),
                          *(sha for sha, _, _ in entries), struct.pack(f">{len(entries)}I", *(c for _, c, _ in entries)),
                          struct.pack(f">{len(entries)}I", *(off for _, _, off in entries)), pack[-20:]])
        index += hashlib.sha1(index).digest()
        name = pack_dir / f"pack-{pack[-20:].hex()}"
        try:
            for suffix, data in ((".pack", pack), (".idx", index)):
                # fsynced, as Git fsyncs packs: a pack is many commits' worth
                _put_file(f"{pack_dir}/tmp_{suffix[1:]}_{os.getpid()}_{time.monotonic_ns()}",
                          name.with_suffix(suffix), data, fsync=True)
        except OSError as exc:
            raise GitStoreError(f"Cannot write a Git pack into {pack_dir} ({exc.strerror}); free some "
                                "disk space or fix the folder's permissions.") from None

    def _path(self, sha: str) -> str:
        return f"{self.objects}/{sha[:2]}/{sha[2:]}"

    def write(self, kind: bytes, body: bytes) -> str:
        """One loose object."""
        data = _header(kind, body) + body
        sha = hashlib.sha1(data).hexdigest()
        path = self._path(sha)
        if os.path.exists(path):
            return sha
        tmp = f"{self.objects}/{sha[:2]}/tmp_obj_{os.getpid()}_{time.monotonic_ns()}"
        deflated = zlib.compress(data, 1)
        try:
            try:
                _put_file(tmp, path, deflated, fsync=False)
            except FileNotFoundError:  # the first object whose sha starts with these two digits
                os.makedirs(os.path.dirname(tmp), exist_ok=True)
                _put_file(tmp, path, deflated, fsync=False)
        except OSError as exc:
            raise GitStoreError(f"Cannot write a Git object into {self.objects} ({exc.strerror}); "
                                "free some disk space or fix the folder's permissions.") from None
        return sha

    def read(self, sha: str) -> tuple[bytes, bytes]:
        """(kind, body) of an object, loose or packed."""
        try:
            with open(self._path(sha), "rb") as fh:
                data = zlib.decompress(fh.read())
        except FileNotFoundError:
            return self._read_packed(sha)
        except (OSError, zlib.error) as exc:
            raise GitStoreError(f"The Git object {sha} in {self.objects} cannot be read ({exc}); run "
                                f"`git --git-dir {self.objects.parent} fsck` and restore frames.git "
                                "from a backup if it reports damage.") from None
        header, _, body = data.partition(b"\0")
        return header.partition(b" ")[0], body

    def tree(self, sha: str) -> Tree:
        tree = _TREES.get(sha)
        if tree is None:
            kind, body = self.read(sha)
            if kind != b"tree":
                raise GitStoreError(f"The Git object {sha} in {self.objects} should be a tree, not "
                                     f"{kind.decode(errors='replace')}; run `git fsck` on the repository.")
            tree = parse_tree(body)
            _TREES.put(sha, tree)
        return tree

    def commit_tree(self, commit: str) -> str:
        """The tree a commit records."""
        kind, body = self.read(commit)
        if kind != b"commit" or not body.startswith(b"tree "):
            raise GitStoreError(f"The Git object {commit} in {self.objects} is not a commit; run "
                                "`git fsck` on the repository.")
        return body[5:45].decode()

    def updated_tree(self, base: str | None, changes: dict[tuple[bytes, ...], Entry | None]) -> str:
        """The root tree `base` (None: empty) with each path set to its entry, or removed for
        None. Folders left empty disappear, as Git never records an empty one."""
        sha = self._updated(base, changes)
        return sha if sha is not None else self._store_tree({})

    def _updated(self, base: str | None, changes: dict[tuple[bytes, ...], Entry | None]) -> str | None:
        tree = dict(self.tree(base)) if base is not None else {}
        below: dict[bytes, dict[tuple[bytes, ...], Entry | None]] = {}
        for parts, entry in changes.items():
            if len(parts) > 1:
                below.setdefault(parts[0], {})[parts[1:]] = entry
            elif entry is None:
                tree.pop(parts[0], None)
            else:
                tree[parts[0]] = entry
        for name, inner in below.items():
            old = tree.get(name)
            sub = self._updated(old[1] if old is not None and old[0] == TREE_MODE else None, inner)
            if sub is not None:
                tree[name] = (TREE_MODE, sub)
            elif old is not None and old[0] == TREE_MODE:
                del tree[name]
        if not tree:
            return None
        return self._store_tree(tree)

    def _store_tree(self, tree: Tree) -> str:
        sha = self.write(b"tree", tree_body(tree))
        _TREES.put(sha, tree)
        return sha


def move_ref(git_dir: Path, ref: str, new: str, old: str | None, committer: str, message: str) -> None:
    """Point `ref` (such as refs/heads/main) at `new` if it now holds `old` (None: if it does
    not exist), and log the move in its reflog and, when HEAD names it, in HEAD's.

    `committer` is `Name <email>`; the reflog line's time is now, as Git's is."""
    path = git_dir / ref
    lock = path.with_name(path.name + ".lock")
    path.parent.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + _LOCK_WAIT_S
    while True:
        try:
            fd = os.open(lock, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
            break
        except FileExistsError:
            if _remove_if_stale(lock):
                continue
            if time.monotonic() >= deadline:
                raise GitStoreError(f"{lock} exists: another Git process is changing {ref}; if no git "
                                     f"command is running, it is removed once it is {STALE_LOCK_S:.0f} s "
                                     "old and the change will be tried again.") from None
            time.sleep(0.01)
        except OSError as exc:
            raise GitStoreError(f"Cannot lock {ref} in {git_dir} ({exc.strerror}); free some disk "
                                "space or fix the folder's permissions.") from None
    try:
        with os.fdopen(fd, "w") as fh:
            current = ref_value(git_dir, ref)
            if current != old:
                raise GitStoreError(f"{ref} in {git_dir} moved to {current or 'nothing'} while "
                                     f"{old or 'nothing'} was expected (another writer moved it "
                                     "first); the change will be tried again.")
            fh.write(new + "\n")
        os.replace(lock, path)
    except BaseException:
        lock.unlink(missing_ok=True)
        raise
    line = f"{old or ZERO_SHA} {new} {committer} {git_time(datetime.now().astimezone())}\t{message}\n"
    logs = [git_dir / "logs" / ref]
    if _symref(git_dir) == ref:
        logs.append(git_dir / "logs" / "HEAD")
    for log in logs:
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "a", encoding="utf-8") as fh:
            fh.write(line)


def _remove_if_stale(lock: Path) -> bool:
    try:
        if time.time() - lock.stat().st_mtime < STALE_LOCK_S:
            return False
        lock.unlink()
    except FileNotFoundError:
        pass  # its writer just finished
    return True


def head_ref(git_dir: Path) -> str:
    """The branch HEAD names; twinsync keeps HEAD on a branch, so anything else is refused."""
    ref = _symref(git_dir)
    if ref is None:
        raise GitStoreError(f"HEAD of {git_dir} does not name a branch; run `git --git-dir {git_dir} "
                             "symbolic-ref HEAD refs/heads/main` to put it back on main.")
    return ref


def _symref(git_dir: Path) -> str | None:
    try:
        head = (git_dir / "HEAD").read_text()
    except (OSError, UnicodeDecodeError):
        return None
    return head[5:].strip() if head.startswith("ref: refs/") else None


def ref_value(git_dir: Path, ref: str) -> str | None:
    """The sha `ref` holds: its loose file, else its line in packed-refs, else None."""
    try:
        value = (git_dir / ref).read_text().strip()
    except FileNotFoundError:
        value = _packed_ref(git_dir, ref)
    except (OSError, UnicodeDecodeError) as exc:
        raise GitStoreError(f"Cannot read {ref} in {git_dir} ({exc}); run `git fsck` on the repository.") from None
    if value is not None and (len(value) != 40 or value.strip("0123456789abcdef")):
        raise GitStoreError(f"{ref} in {git_dir} holds {value[:60]!r}, not a commit; run `git fsck` "
                             "on the repository.")
    return value


def _packed_ref(git_dir: Path, ref: str) -> str | None:
    try:
        lines = (git_dir / "packed-refs").read_text().splitlines()
    except FileNotFoundError:
        return None
    suffix = " " + ref
    for line in lines:
        if line.endswith(suffix) and not line.startswith(("#", "^")):
            return line[:40]
    return None
