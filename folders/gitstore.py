"""Git history of the synced frames folder (DESIGN §1 `frames.git/`, §3 flows 1-2, §7).

The Git dir lives outside the work tree it versions, so Syncthing never sees a `.git`.
One `FrameRepo` per process: every command runs through one `git.Git` object with the Git
dir, work tree and index given explicitly, and `close()` ends whatever GitPython keeps
running. Nothing here uses GitPython's object database (that is what starts the persistent
`git cat-file` processes); each call is one short-lived `git` process.

Staging never uses `git add <paths...>`: with N pathspecs it is O(N x files) (10k paths over
a 10k-file tree took 0.8 s, 30k paths 11.6 s). A batch is staged with one `git status` (which
honours info/exclude, so excluded files never reach the index) and one
`git update-index --add --remove --stdin` (literal paths, linear time).

A user's global or system Git config never applies: another user.name, gpg signing, a clean
filter or `text` attribute rewriting bytes, or a global ignore file hiding `*.json` would
otherwise change what history records (see the test of exactly that).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath
from typing import Any

import git

from folders.errors import TwinsyncError, echo

#: Never versioned: Syncthing's bookkeeping, its temp files, our temp files (`folders.files`
#: TEMP_PREFIX) and conflict copies, which become conflict-queue items and fork branches.
GIT_EXCLUDES = [".stfolder", ".stfolder/", ".stversions/", ".stignore", ".syncthing.*.tmp",
                "~syncthing~*.tmp", ".twinsync-tmp-*", "*.sync-conflict-*"]

COMMITTER_NAME = "twinsync"
COMMITTER_EMAIL = "twinsync@localhost"
MAIN_BRANCH = "main"

#: Up to this many paths `git status` is limited to them; beyond, one whole-tree status is
#: cheaper than matching every index entry against every pathspec.
_PATHSPEC_LIMIT = 32
_BAD_NAME_CHARS = set("<>\n\r\0")


class GitStoreError(TwinsyncError):
    """The frames Git repository is missing, damaged, or refused an operation."""


@dataclass(frozen=True)
class Revision:
    """One commit in a frame's history."""

    commit: str
    author: str
    date: datetime
    message: str


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


def _git_date(when: datetime) -> str:
    """Git's internal date form, `@<unix seconds> +hhmm`; refuses naive datetimes."""
    offset = when.utcoffset()
    if offset is None:
        raise ValueError(f"commit time {when!r} has no time zone; pass an aware datetime")
    minutes = int(offset.total_seconds()) // 60
    sign = "-" if minutes < 0 else "+"
    return f"@{int(when.timestamp())} {sign}{abs(minutes) // 60:02d}{abs(minutes) % 60:02d}"


def _rel_path(path: str | os.PathLike[str]) -> str:
    """A path relative to the work tree in Git's form; refuses anything that could leave it."""
    text = os.fspath(path)
    pure = PurePosixPath(text)
    if not text or pure.is_absolute() or ".." in pure.parts or str(pure) == "." or "\0" in text:
        raise ValueError(f"{echo(text)} is not a path inside the frames work tree")
    return str(pure)


def _check_name(author: str) -> str:
    if not author or _BAD_NAME_CHARS & set(author):
        raise ValueError(f"author {echo(author)} cannot be written into a Git commit")
    return author


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
        try:
            self._repo = git.Repo(self.git_dir)
        except (git.NoSuchPathError, git.InvalidGitRepositoryError):
            raise GitStoreError(f"{self.git_dir} is not a Git repository; run `twinsync init` to "
                                "create the node home, or restore frames.git from a backup.") from None
        # GitPython reads core.worktree for a Git dir opened directly (repo/base.py), but lets a
        # GIT_WORK_TREE in our environment override it, so the work tree is read from the config
        # here and passed to every command explicitly.
        reader = self._repo.config_reader("repository")
        worktree = reader.get_value("core", "worktree", "") if reader.has_section("core") else ""
        if not worktree:
            self._repo.close()
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
        self._last: tuple[str, str] | None = None  # (commit, tree) this repo made last
        self._cmd.update_environment(**self._env)

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
            # The root commit is made while the repo is still bare: it needs no work tree.
            when = _git_date(clock())
            commit_env = {**env, **_identity_env(COMMITTER_NAME, COMMITTER_EMAIL, when, when)}
            repo.git.symbolic_ref("HEAD", f"refs/heads/{MAIN_BRANCH}", env=env)
            empty_tree = repo.git.mktree(env=env)
            root = repo.git.commit_tree(empty_tree, "-m", f"twinsync: history of {work_tree}",
                                        env=commit_env)
            repo.git.update_ref("HEAD", root, "", env=env)
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
        return cls(git_dir, clock=clock)

    def close(self) -> None:
        """End the `git` processes GitPython may keep; safe to call twice."""
        if self._cmd is not None:
            self._cmd.clear_cache()
            self._cmd = None
            self._repo.close()

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
        if self._cmd is None:
            raise GitStoreError(f"The frames repository {self.git_dir} was closed; open it again.")
        if not self.work_tree.is_dir():
            raise GitStoreError(f"The frames work tree {self.work_tree} of {self.git_dir} is missing; "
                                "restore the folder or fix core.worktree in the Git config.")
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

    def _head_and_tree(self) -> tuple[str | None, str | None]:
        """HEAD and its tree. Every frame put and every frame a peer sends is a commit, and
        each `git` process costs milliseconds (tens in a busy daemon), so when HEAD's ref
        file still names the commit this repo made last, its tree is known without asking
        Git; otherwise one `rev-parse`. A stale answer cannot slip through: `update-ref`
        moves HEAD only from the parent given."""
        loose = self._loose_head()
        if loose is not None and self._last is not None and loose == self._last[0]:
            return self._last
        status, out = self._run("rev-parse", "HEAD^{commit}", "HEAD^{tree}", ok=(0, 128))
        shas = out.decode().split()
        return (shas[0], shas[1]) if status == 0 and len(shas) == 2 else (None, None)

    def _loose_head(self) -> str | None:
        """The sha in HEAD's loose ref file, or None when it is not there as one (packed,
        detached, unreadable): the caller then asks Git."""
        try:
            head = (self.git_dir / "HEAD").read_text()
            if not head.startswith("ref: refs/"):
                return None
            sha = (self.git_dir / head[5:].strip()).read_text().strip()
        except (OSError, UnicodeDecodeError):
            return None
        return sha if len(sha) == 40 and all(c in "0123456789abcdef" for c in sha) else None

    def commit(self, paths: Iterable[str | os.PathLike[str]], message: str, author: str,
               when: datetime | None = None, *, checked: bool = False) -> str | None:
        """Record these work-tree paths (added, changed or deleted) as one commit by `author`.

        Paths that did not change, are excluded (info/exclude) or exist neither on disk nor in
        Git are skipped. Returns the new commit's sha, or None when there is nothing to commit.
        `checked`: the caller vouches that every path is a frame file it just validated or one
        that is gone (the pipeline does), so the `git status` that filters excluded paths is
        not needed: staging an unchanged file or a path Git never had changes nothing.
        """
        wanted = list(dict.fromkeys(_rel_path(p) for p in paths))
        _check_name(author)
        if not wanted:
            return None
        if checked:
            stage = wanted
        else:
            limit = ["--", *wanted] if len(wanted) <= _PATHSPEC_LIMIT else []
            changed = self._changed_paths(*limit)
            stage = [p for p in wanted if p in changed]
        if stage:
            self._run("update-index", "--add", "--remove", "-z", "--stdin",
                      stdin=b"\0".join(os.fsencode(p) for p in stage), what="stage the changed frames")
        return self._commit_index(message, author, when)

    def _changed_paths(self, *pathspec: str) -> set[str]:
        """Paths whose work-tree state differs from the index or HEAD, never excluded ones."""
        _, out = self._run("status", "--porcelain=v1", "-z", "--untracked-files=all", "--no-renames",
                           "--ignore-submodules=all", *pathspec, what="list changed frames")
        return {os.fsdecode(entry[3:]) for entry in out.split(b"\0") if len(entry) > 3}

    def _commit_index(self, message: str, author: str, when: datetime | None) -> str | None:
        tree = self._text("write-tree", what="write the staged tree")
        parent, parent_tree = self._head_and_tree()
        if parent_tree == tree:
            return None
        now = self._clock()
        env = _identity_env(author, f"{author}@twinsync", _git_date(when or now), _git_date(now))
        # The message goes on stdin: one argv element may not exceed 128 KiB on Linux.
        new = self._text("commit-tree", tree, *(("-p", parent) if parent else ()), "-F", "-",
                         stdin=message.encode("utf-8"), env=env, what="write a commit")
        self._run("update-ref", "-m", f"twinsync: {message.splitlines()[0] if message else 'commit'}",
                  "HEAD", new, parent or "", what="move HEAD (another writer moved it first?)")
        self._last = (new, tree)
        return new

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
        with tempfile.TemporaryDirectory(prefix="twinsync-index-", dir=self.git_dir) as tmp:
            index = {"GIT_INDEX_FILE": str(Path(tmp) / "index")}
            self._run("read-tree", base_sha, env=index, what="read the base tree")
            if content is None:
                self._run("update-index", "--force-remove", "--", rel, env=index,
                          what=f"remove {rel} from the fork tree")
            else:
                blob = self._text("hash-object", "-w", "--no-filters", "--stdin", stdin=content,
                                  what="store the fork content")
                self._run("update-index", "--add", "--cacheinfo", "100644", blob, rel, env=index,
                          what=f"set {rel} in the fork tree")
            tree = self._text("write-tree", env=index, what="write the fork tree")
        existing = self._resolve(ref)
        if existing is not None:
            tree_and_parents = self._text("show", "-s", "--format=%T %P", existing).split()
            if tree_and_parents == [tree, base_sha]:
                return existing
            raise GitStoreError(f"Branch {branch} already exists in {self.git_dir} with other "
                                "content; pick another name or delete that branch first.")
        now = _git_date(self._clock())
        env = _identity_env(author, f"{author}@twinsync", now, now)
        new = self._text("commit-tree", tree, "-p", base_sha, "-F", "-", stdin=message.encode("utf-8"),
                         env=env, what="write the fork commit")
        self._run("update-ref", "-m", f"twinsync: fork {branch}", ref, new, "",
                  what=f"create branch {branch} (it may have been created meanwhile)")
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


def _identity_env(author: str, email: str, author_date: str, commit_date: str) -> dict[str, str]:
    return {"GIT_AUTHOR_NAME": author, "GIT_AUTHOR_EMAIL": email, "GIT_AUTHOR_DATE": author_date,
            "GIT_COMMITTER_NAME": COMMITTER_NAME, "GIT_COMMITTER_EMAIL": COMMITTER_EMAIL,
            "GIT_COMMITTER_DATE": commit_date}


def _first_line(stderr: str | bytes | None) -> str:
    if isinstance(stderr, bytes):
        stderr = stderr.decode("utf-8", "replace")
    lines = [ln.strip() for ln in (stderr or "").splitlines() if ln.strip()]
    return lines[0].removeprefix("stderr: ").strip("'") if lines else ""
