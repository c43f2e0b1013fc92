"""Git history of the synced frames folder (DESIGN §1 `frames.git/`, §3 flows 1-2, §7).

The Git dir lives outside the work tree it versions, so Syncthing never sees a `.git`.
One `FrameRepo` per process: every command runs through one `git.Git` object with the Git
dir, work tree and index given explicitly, and `close()` ends whatever GitPython keeps
running. Nothing here uses GitPython's object database (that is what starts the persistent
`git cat-file` processes); each call is one short-lived `git` process.

A commit is written in this process (`folders.gitobjects`): the batch's files become blobs,
HEAD's tree is rebuilt along their paths, and HEAD moves under Git's own ref lock. Then one
`git update-index --add --remove --stdin` (literal paths, linear time) brings the index up to
the commits (`sync_index`, after the caller has recorded its own work), so `git status` in
the frames repository tells the truth; commits never read the index, so one left behind by a
crash changes no commit. Paths a caller has not validated are first matched against the
patterns info/exclude holds, so what it names is never recorded.

A user's global or system Git config never applies: another user.name, gpg signing, a clean
filter or `text` attribute rewriting bytes, or a global ignore file hiding `*.json` would
otherwise change what history records (see the test of exactly that).
"""

from __future__ import annotations

import os
import stat
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from fnmatch import fnmatchcase
from pathlib import Path, PurePosixPath
from typing import Any

import git

from folders.errors import echo
from folders.gitobjects import (CHUNK_BYTES, EXEC_MODE, FILE_MODE, LINK_MODE, Entry, GitStoreError, ObjectStore,
                                commit_body, git_time, head_ref, move_ref, object_id, ref_value)

#: Never versioned: Syncthing's bookkeeping, its temp files, our temp files (`folders.files`
#: TEMP_PREFIX) and conflict copies, which become conflict-queue items and fork branches.
GIT_EXCLUDES = [".stfolder", ".stfolder/", ".stversions/", ".stignore", ".syncthing.*.tmp",
                "~syncthing~*.tmp", ".twinsync-tmp-*", "*.sync-conflict-*"]

COMMITTER_NAME = "twinsync"
COMMITTER_EMAIL = "twinsync@localhost"
MAIN_BRANCH = "main"
_COMMITTER = f"{COMMITTER_NAME} <{COMMITTER_EMAIL}>"

_BAD_NAME_CHARS = set("<>\n\r\0")


@dataclass(frozen=True)
class Revision:
    """One commit in a frame's history."""

    commit: str
    author: str
    date: datetime
    message: str


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


def _rel_path(path: str | os.PathLike[str]) -> str:
    """A path relative to the work tree in Git's form; refuses anything that could leave it."""
    text = os.fspath(path)
    pure = PurePosixPath(text)
    if not text or pure.is_absolute() or ".." in pure.parts or str(pure) == "." or "\0" in text:
        raise ValueError(f"{echo(text)} is not a path inside the frames work tree")
    return str(pure)


def excluded(rel: str) -> bool:
    """Whether GIT_EXCLUDES (what info/exclude holds) names `rel` or a folder on its way, as
    Git matches them: a pattern without a slash matches any one name, and one ending in a
    slash matches folders only."""
    *folders, name = rel.split("/")
    return any(fnmatchcase(part, pattern.rstrip("/"))
               for pattern in GIT_EXCLUDES
               for part in (folders if pattern.endswith("/") else [*folders, name]))


def _configured_worktree(git_dir: Path) -> str:
    """core.worktree from the Git dir's own config, read once per version of that file (every
    frame put opens the repository). Read here, not by GitPython's Repo (which costs a few
    ms to open and lets a GIT_WORK_TREE in our environment override the config), and passed
    to every command explicitly."""
    config = git_dir / "config"
    try:
        st = os.stat(config)
        if not (git_dir / "HEAD").is_file() or not (git_dir / "objects").is_dir():
            raise FileNotFoundError
    except (FileNotFoundError, NotADirectoryError):
        raise GitStoreError(f"{git_dir} is not a Git repository; run `twinsync init` to create the "
                            "node home, or restore frames.git from a backup.") from None
    key = (str(config), st.st_ino, st.st_size, st.st_mtime_ns)
    if key not in _WORKTREES:
        reader = git.GitConfigParser(str(config), read_only=True)
        if len(_WORKTREES) >= 8:  # a process opens a node's frames.git and modules.git
            _WORKTREES.clear()
        _WORKTREES[key] = str(reader.get_value("core", "worktree", "")) if reader.has_section("core") else ""
    return _WORKTREES[key]


_WORKTREES: dict[tuple, str] = {}


def _check_name(author: str) -> str:
    if not author or _BAD_NAME_CHARS & set(author):
        raise ValueError(f"author {echo(author)} cannot be written into a Git commit")
    return author


#: Git's split index for our own update-index: a change is written to a small file beside
#: a shared one that is rewritten only after many changes, not the whole index each time
#: (100k frames: 80 -> 30 ms a batch). Once on, the index stays split for every Git command.
#: A replaced shared file is removed once unused for an hour rather than Git's two weeks
#: (each is as big as the index); every read keeps the one in use fresh. A Git older than
#: 2.31 ignores these variables and keeps a whole index, which is correct too.
_SPLIT_INDEX = {"GIT_CONFIG_COUNT": "2", "GIT_CONFIG_KEY_0": "core.splitIndex", "GIT_CONFIG_VALUE_0": "true",
                "GIT_CONFIG_KEY_1": "splitIndex.sharedIndexExpire", "GIT_CONFIG_VALUE_1": "1.hour.ago"}


def _stdin(data: bytes) -> Any:
    """GitPython hands `istream` straight to Popen, so it needs a real file, not BytesIO."""
    fh = tempfile.TemporaryFile()
    fh.write(data)
    fh.seek(0)
    return fh


class FrameRepo:
    """History of one frames work tree, kept in a Git dir outside it."""

    def __init__(self, git_dir: str | os.PathLike[str], *,
                 clock: Callable[[], datetime] = _utcnow) -> None:
        self.git_dir = Path(git_dir).absolute()
        self._clock = clock
        worktree = _configured_worktree(self.git_dir)
        if not worktree:
            raise GitStoreError(f"{self.git_dir} has no core.worktree, so it is not a twinsync "
                                "frames repository; recreate it with `twinsync init` or set "
                                "core.worktree to the frames.shared folder.")
        self.work_tree = (self.git_dir / str(worktree)).absolute()
        self._env = {
            "GIT_DIR": str(self.git_dir), "GIT_WORK_TREE": str(self.work_tree),
            "GIT_INDEX_FILE": str(self.git_dir / "index"),
            "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": os.devnull,
            "GIT_LITERAL_PATHSPECS": "1", "GIT_TERMINAL_PROMPT": "0",
        }
        self._cmd: git.Git | None = git.Git(str(self.work_tree))
        self._last: tuple[str, str] | None = None  # (commit, tree) this repo made or read last
        self._unindexed: set[str] = set()  # committed paths the index does not show yet
        self._cmd.update_environment(**self._env)
        self._objects = ObjectStore(self.git_dir, self._read_packed, self._missing)

    # -- lifetime ---------------------------------------------------------------------------

    @classmethod
    def create(cls, git_dir: str | os.PathLike[str], work_tree: str | os.PathLike[str], *,
               clock: Callable[[], datetime] = _utcnow) -> FrameRepo:
        """A new Git dir at `git_dir` versioning `work_tree`, with one empty root commit.

        `work_tree` need not exist yet (`twinsync init` builds the home under a staging name).
        """
        git_dir, work_tree = Path(git_dir).absolute(), Path(work_tree).absolute()
        if git_dir.is_relative_to(work_tree) or work_tree.is_relative_to(git_dir):
            raise GitStoreError(f"The Git dir {git_dir} and the work tree {work_tree} must not "
                                "contain each other (Syncthing must never see a .git); pick "
                                "separate directories.")
        if git_dir.exists() and (not git_dir.is_dir() or any(git_dir.iterdir())):
            raise GitStoreError(f"{git_dir} already exists and is not empty; open it with "
                                "FrameRepo or remove it before creating a new frames repository.")
        env = {"GIT_DIR": str(git_dir), "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": os.devnull,
               "GIT_TERMINAL_PROMPT": "0"}
        try:
            repo = git.Repo.init(git_dir, bare=True, expand_vars=False, quiet=True, env=env)
        except git.GitCommandError as exc:
            raise GitStoreError(f"Cannot create a Git repository at {git_dir} ("
                                f"{_first_line(exc.stderr)}); check that you can write there.") from None
        try:
            repo.git.symbolic_ref("HEAD", f"refs/heads/{MAIN_BRANCH}", env=env)
            with repo.config_writer() as cw:
                cw.set_value("core", "bare", "false")
                cw.set_value("core", "worktree", str(work_tree))
                cw.set_value("core", "logAllRefUpdates", "true")
                cw.set_value("core", "autocrlf", "false")
                # Not even the default ~/.config/git/{ignore,attributes} may apply.
                cw.set_value("core", "excludesFile", os.devnull)
                cw.set_value("core", "attributesFile", os.devnull)
                cw.set_value("user", "name", COMMITTER_NAME)
                cw.set_value("user", "email", COMMITTER_EMAIL)
                cw.set_value("commit", "gpgSign", "false")
                cw.set_value("gc", "autoDetach", "false")  # gc() finishes before it returns
            (git_dir / "info").mkdir(exist_ok=True)
            (git_dir / "info" / "exclude").write_text("\n".join(GIT_EXCLUDES) + "\n")
        except git.GitCommandError as exc:
            raise GitStoreError(f"Cannot set up the Git repository at {git_dir} "
                                f"({_first_line(exc.stderr)}); remove it and try again.") from None
        finally:
            repo.close()
        created = cls(git_dir, clock=clock)
        root = created._write_commit(created._objects.updated_tree(None, {}), [],
                                     f"twinsync: history of {work_tree}\n", _COMMITTER, None)
        move_ref(git_dir, f"refs/heads/{MAIN_BRANCH}", root, None, _COMMITTER, "twinsync: created")
        return created

    def close(self) -> None:
        """Bring the index up to date and end the `git` processes GitPython may keep; safe to
        call twice."""
        if self._cmd is not None:
            try:
                self.sync_index()
            except GitStoreError:
                pass  # only `git status` reads the index; the next commit of those paths mends it
            self._cmd.clear_cache()
            self._cmd = None

    def __enter__(self) -> FrameRepo:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"FrameRepo({str(self.git_dir)!r}, work_tree={str(self.work_tree)!r})"

    # -- running git ------------------------------------------------------------------------

    def _run(self, command: str, *args: str, stdin: bytes | None = None,
             env: dict[str, str] | None = None, ok: tuple[int, ...] = (0,),
             what: str = "") -> tuple[int, bytes]:
        """Run one `git <command>`; returns (exit code, raw stdout) or raises GitStoreError."""
        self._check_open()
        istream = _stdin(stdin) if stdin is not None else None
        try:
            status, out, err = getattr(self._cmd, command.replace("-", "_"))(
                *args, istream=istream, env=env,
                with_extended_output=True, with_exceptions=False,
                stdout_as_string=False, strip_newline_in_stdout=False)
        finally:
            if istream is not None:
                istream.close()
        if status not in ok:
            raise GitStoreError(f"Git could not {what or command} in {self.git_dir} "
                                f"({_first_line(err) or f'exit {status}'}); run `git --git-dir "
                                f"{self.git_dir} fsck` and fix what it reports, or restore frames.git.")
        return status, out

    def _check_open(self) -> None:
        if self._cmd is None:
            raise GitStoreError(f"The frames repository {self.git_dir} was closed; open it again.")
        if not self.work_tree.is_dir():
            raise GitStoreError(f"The frames work tree {self.work_tree} of {self.git_dir} is missing; "
                                "restore the folder or fix core.worktree in the Git config.")

    def _text(self, command: str, *args: str, **kw: Any) -> str:
        return self._run(command, *args, **kw)[1].decode("utf-8", "replace").strip()

    def _rev(self, rev: str) -> str:
        """Revisions may come from a person, so one that could pass for an option is refused."""
        if not rev or rev.startswith("-") or any(c.isspace() or c == "\0" for c in rev):
            raise GitStoreError(f"{echo(rev)} is not a revision of {self.git_dir}; pass a commit sha "
                                "or a branch name, e.g. one from `log`.")
        return rev

    def _resolve(self, rev: str, kind: str = "commit") -> str | None:
        status, out = self._run("rev-parse", "-q", "--verify", f"{self._rev(rev)}^{{{kind}}}",
                                ok=(0, 1, 128))
        return out.decode().strip() if status == 0 else None

    def gc(self) -> None:
        """Pack loose objects when Git thinks it is time: commits made with plumbing never
        trigger `gc --auto` themselves, so a daemon calls this now and then."""
        self._run("gc", "--auto", "--quiet", what="pack the frames history")

    # -- history ----------------------------------------------------------------------------

    def head(self) -> str | None:
        """The sha of the current commit, or None before the first one."""
        return self._resolve("HEAD")

    def _read_packed(self, sha: str) -> tuple[bytes, bytes]:
        """(kind, body) of an object Git packed: one `git cat-file --batch`."""
        _, out = self._run("cat-file", "--batch", stdin=sha.encode() + b"\n", what=f"read object {sha}")
        header, _, body = out.partition(b"\n")
        fields = header.split()
        if len(fields) != 3 or fields[0].decode() != sha:
            raise GitStoreError(f"The Git object {sha} is missing from {self.git_dir}; run `git --git-dir "
                                f"{self.git_dir} fsck` and restore frames.git from a backup.")
        return fields[1], body[:int(fields[2])]

    def _missing(self, shas: list[str]) -> set[str]:
        """Which of these objects the repository lacks: one `git cat-file --batch-check`."""
        _, out = self._run("cat-file", "--batch-check", stdin="\n".join(shas).encode() + b"\n",
                           what="look up objects")
        return {line.split()[0].decode() for line in out.splitlines() if line.endswith(b" missing")}

    def _head_and_tree(self, ref: str) -> tuple[str | None, str | None]:
        """The commit `ref` holds and its tree, read in-process: HEAD's ref file (or its
        packed line) and the commit object, unless this repo made or read that commit last."""
        head = ref_value(self.git_dir, ref)
        if head is None:
            return None, None
        if self._last is None or self._last[0] != head:
            self._last = (head, self._objects.commit_tree(head))
        return self._last

    def commit(self, paths: Iterable[str | os.PathLike[str]], message: str, author: str,
               when: datetime | None = None, *, vouched: Mapping[str, str | None] | None = None) -> str | None:
        """Record these work-tree paths (added, changed or deleted) as one commit by `author`.

        Paths that did not change, are excluded (info/exclude), are folders or exist neither
        on disk nor in Git are skipped. Returns the new commit's sha, or None when there is
        nothing to commit. `vouched`: for every path, what the caller validated (the
        pipeline): the Git blob id of the file's bytes, or None for a file it found gone.
        A path whose file is no longer that is left out, so bytes written after the check
        are never recorded unchecked (their change is the next batch's); nor are the paths
        matched against the excluded patterns, which a validated frame never is.
        """
        wanted = list(dict.fromkeys(_rel_path(p) for p in paths))
        _check_name(author)
        if vouched is None:
            wanted = [p for p in wanted if not excluded(p)]
        self._check_open()
        changes: dict[tuple[bytes, ...], Entry | None] = {}
        staged: list[str] = []
        read: list[tuple[tuple[bytes, ...], bytes, bytes]] = []  # read, not stored yet
        held = 0  # bytes of content in `read`
        for rel in wanted:
            found = self._file(rel)
            if found == "folder":
                continue
            if vouched is not None and (found if found is None else object_id(b"blob", found[1])) != vouched[rel]:
                continue
            parts = tuple(os.fsencode(rel).split(b"/"))
            staged.append(rel)
            if found is None:
                changes[parts] = None
                continue
            read.append((parts, *found))
            held += len(found[1])
            if held >= CHUNK_BYTES:
                self._store(read, changes)
                held = 0
        self._store(read, changes)
        if not changes:
            return None
        ref = head_ref(self.git_dir)
        parent, parent_tree = self._head_and_tree(ref)
        tree = self._objects.updated_tree(parent_tree, changes)
        if tree == parent_tree:
            return None
        new = self._write_commit(tree, [parent] if parent else [], message, _ident(author), when)
        move_ref(self.git_dir, ref, new, parent, _COMMITTER,
                 f"twinsync: {message.splitlines()[0] if message else 'commit'}")
        self._last = (new, tree)
        self._unindexed.update(staged)
        return new

    def sync_index(self) -> None:
        """Bring the index up to the commits made since the last call: one `git update-index`.
        Commits never read the index; it is kept so `git status` in the frames repository
        tells the truth, so a caller does this once its own work is recorded (the pipeline:
        after the frame index), and `close()` does it for the rest. In split-index mode
        (`_SPLIT_INDEX`): Git otherwise rewrites the whole index, 8.8 MB for 100k frames,
        for every batch."""
        if not self._unindexed:
            return
        paths, self._unindexed = sorted(self._unindexed), set()
        self._run("update-index", "--add", "--remove", "-z", "--stdin",
                  stdin=b"\0".join(os.fsencode(p) for p in paths), env=_SPLIT_INDEX,
                  what="bring the index up to the commits")

    def _store(self, read: list[tuple[tuple[bytes, ...], bytes, bytes]],
               changes: dict[tuple[bytes, ...], Entry | None]) -> None:
        """Store the blobs of files read so far (as a pack when there are many) and record
        their entries; memory holds at most CHUNK_BYTES of file content."""
        shas = self._objects.store([(b"blob", data) for _, _, data in read])
        for (parts, mode, _), sha in zip(read, shas):
            changes[parts] = (mode, sha)
        read.clear()

    def _file(self, rel: str) -> tuple[bytes, bytes] | None | str:
        """(mode, content) of the work tree's file at `rel` (a link's content is its
        target); None when the path is gone; "folder" for a folder, which Git does not
        record as such."""
        path = self.work_tree / rel
        try:
            st = os.lstat(path)
            if stat.S_ISLNK(st.st_mode):
                return LINK_MODE, os.fsencode(os.readlink(path))
            if stat.S_ISDIR(st.st_mode):
                return "folder"
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise GitStoreError(f"Cannot read {path} to commit it ({exc.strerror}); check the file's "
                                "permissions.") from None
        return EXEC_MODE if st.st_mode & stat.S_IXUSR else FILE_MODE, data

    def _write_commit(self, tree: str, parents: list[str], message: str, author: str,
                      when: datetime | None) -> str:
        """`author` is `Name <email>`; the committer is always twinsync, at the clock's now."""
        now = self._clock()
        return self._objects.write(b"commit", commit_body(
            tree, parents, f"{author} {git_time(when or now)}", f"{_COMMITTER} {git_time(now)}", message))

    def tracked(self) -> dict[str, str]:
        """Every file in HEAD's tree: path -> blob sha (one `git ls-tree -r`)."""
        if self.head() is None:
            return {}
        _, out = self._run("ls-tree", "-r", "-z", "--full-tree", "HEAD", what="list tracked frames")
        # One decode for the whole listing (a reconcile lists 100k paths); entries are
        # "<6-digit mode> <type> <sha>\t<path>", and `-r` lists only blobs and submodules.
        result = {}
        for entry in os.fsdecode(out).split("\0"):
            meta, _, path = entry.partition("\t")
            if meta[7:12] == "blob ":
                result[path] = meta[12:]
        return result

    def log(self, path: str | os.PathLike[str], limit: int | None = None) -> list[Revision]:
        """Commits that changed `path`, newest first (no rename following: frames never move)."""
        rel = _rel_path(path)
        count = ("-n", str(limit)) if limit is not None else ()
        _, out = self._run("log", "-z", "--format=%H%x1f%an%x1f%aI%x1f%B", *count, "--", rel,
                           what=f"read the history of {rel}")
        revisions = []
        for record in out.split(b"\0"):
            if not record:
                continue
            sha, name, date, message = record.decode("utf-8", "replace").split("\x1f", 3)
            revisions.append(Revision(sha, name, datetime.fromisoformat(date), message.rstrip("\n")))
        return revisions

    def show(self, rev: str, path: str | os.PathLike[str]) -> bytes:
        """The exact bytes of `path` at `rev`."""
        rel = _rel_path(path)
        status, out = self._run("cat-file", "blob", f"{self._rev(rev)}:{rel}", ok=(0, 128))
        if status != 0:
            raise GitStoreError(f"{rel} does not exist at revision {echo(rev, quoted=False)} in {self.git_dir}; "
                                "pick a revision from its history (`log`).")
        return out

    def deletions(self) -> dict[str, tuple[str, datetime]]:
        """Paths that HEAD's history deleted and HEAD does not hold: path -> (the commit that
        last deleted it, that commit's date). One `git log` over the whole history."""
        if self.head() is None:
            return {}
        _, out = self._run("log", "-z", "--no-renames", "--diff-filter=D", "--name-only", "--format=%x01%H %aI",
                           what="list deleted frames")
        held, result, commit = self.tracked(), {}, None
        for token in out.split(b"\0"):
            if token.startswith(b"\x01"):
                sha, date = token[1:].decode().split(" ")
                commit = (sha, datetime.fromisoformat(date))
                continue
            path = os.fsdecode(token.lstrip(b"\n"))
            if path and commit and path not in held and path not in result:
                result[path] = commit
        return result

    def holds(self, path: str | os.PathLike[str]) -> bool:
        """Whether HEAD's tree has `path`: a deleted frame keeps its history, not its path."""
        if self.head() is None:
            return False
        status, _ = self._run("cat-file", "-e", f"HEAD:{_rel_path(path)}", ok=(0, 1, 128))
        return status == 0

    def versions(self, path: str | os.PathLike[str]) -> Iterator[tuple[str, bytes]]:
        """(commit, content) for each commit that added or changed `path`, newest first.

        Commits that deleted it have no content and are left out.
        """
        rel = _rel_path(path)
        # Not `--diff-filter=d`: without a diff output format, git 2.39 then lists no commit.
        _, out = self._run("log", "-z", "--format=%H", "--no-renames", "--diff-filter=AMT", "--", rel,
                           what=f"read the history of {rel}")
        for sha in out.decode().split("\0"):
            if sha.strip():
                yield sha.strip(), self.show(sha.strip(), rel)

    def diff(self, rev_a: str, rev_b: str, path: str | os.PathLike[str]) -> str:
        """Unified diff of `path` from `rev_a` to `rev_b`; empty when the two are the same."""
        rel = _rel_path(path)
        _, out = self._run("diff", "--no-color", "--no-ext-diff", "--no-textconv", "--no-renames",
                           "--src-prefix=a/", "--dst-prefix=b/", self._rev(rev_a), self._rev(rev_b),
                           "--", rel, what=f"diff {rel} between {rev_a} and {rev_b}")
        return out.decode("utf-8", "replace")

    # -- fork branches ----------------------------------------------------------------------

    def create_branch_with(self, branch: str, base: str, path: str | os.PathLike[str],
                           content: bytes | None, message: str, author: str) -> str:
        """Commit `base`'s tree with `path` set to `content` (removed if None) on a new branch.

        The work tree and the real index are not touched. An existing branch is never moved;
        asking again for the same tree on the same base returns the existing commit.
        """
        rel = _rel_path(path)
        _check_name(author)
        ref = f"refs/heads/{branch}"
        if branch.startswith("-") or self._run("check-ref-format", ref, ok=(0, 1))[0] != 0:
            raise GitStoreError(f"{echo(branch)} is not a valid Git branch name in {self.git_dir}; "
                                "use letters, digits, '-', '_' and '/' separated parts.")
        base_sha = self._resolve(base)
        if base_sha is None:
            raise GitStoreError(f"Revision {echo(base, quoted=False)} is not a commit in {self.git_dir}; "
                                "pass a commit from the frame's history as the base.")
        entry = None if content is None else (FILE_MODE, self._objects.write(b"blob", content))
        tree = self._objects.updated_tree(self._objects.commit_tree(base_sha),
                                          {tuple(os.fsencode(rel).split(b"/")): entry})
        existing = self._resolve(ref)
        if existing is not None:
            tree_and_parents = self._text("show", "-s", "--format=%T %P", existing).split()
            if tree_and_parents == [tree, base_sha]:
                return existing
            raise GitStoreError(f"Branch {branch} already exists in {self.git_dir} with other "
                                "content; pick another name or delete that branch first.")
        new = self._write_commit(tree, [base_sha], message, _ident(author), None)
        move_ref(self.git_dir, ref, new, None, _COMMITTER, f"twinsync: fork {branch}")
        return new

    def branches(self, prefix: str = "fork/") -> dict[str, str]:
        """Branches whose name starts with `prefix`: name -> commit sha."""
        out = self._text("for-each-ref", "--format=%(objectname) %(refname)", "refs/heads/")
        found = {}
        for line in out.splitlines():
            sha, _, ref = line.partition(" ")
            name = ref.removeprefix("refs/heads/")
            if name.startswith(prefix):
                found[name] = sha
        return found


def _ident(author: str) -> str:
    """How a node is named in the commits it authors."""
    return f"{author} <{author}@twinsync>"


def _first_line(stderr: str | bytes | None) -> str:
    if isinstance(stderr, bytes):
        stderr = stderr.decode("utf-8", "replace")
    lines = [ln.strip() for ln in (stderr or "").splitlines() if ln.strip()]
    return lines[0].removeprefix("stderr: ").strip("'") if lines else ""
