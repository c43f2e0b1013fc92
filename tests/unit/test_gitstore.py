"""folders.gitstore on real Git repositories under tmp_path: a Git dir outside its work tree,
batch commits, excluded files, history, fork branches, and no `git` process left behind."""

from __future__ import annotations

import hashlib
import subprocess
from datetime import datetime, timedelta, timezone
from pathlib import Path

import git
import psutil
import pytest

from folders.errors import TwinsyncError
from folders.gitobjects import object_id
from folders.gitstore import GIT_EXCLUDES, FrameRepo, GitStoreError, Revision

T0 = datetime(2026, 11, 25, 8, 0, tzinfo=timezone.utc)


class Clock:
    """A clock that moves one second each time it is read."""

    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        self.now += timedelta(seconds=1)
        return self.now


@pytest.fixture
def paths(tmp_path: Path) -> tuple[Path, Path]:
    work = tmp_path / "home" / "frames.shared"
    work.mkdir(parents=True)
    return tmp_path / "home" / "frames.git", work


@pytest.fixture
def repo(paths):
    git_dir, work = paths
    with FrameRepo.create(git_dir, work, clock=Clock()) as r:
        yield r


def write(work: Path, rel: str, text: str) -> None:
    path = work / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def git_cli(repo: FrameRepo, *args: str) -> str:
    """The git command line a person would type, to check from outside the module."""
    return subprocess.run(["git", "--git-dir", str(repo.git_dir), "--work-tree", str(repo.work_tree),
                           *args], check=True, capture_output=True, text=True).stdout


def repo_of(git_dir: Path) -> FrameRepo:
    r = FrameRepo(git_dir)
    r.close()
    return r


def commit_files(repo: FrameRepo, sha: str) -> list[str]:
    return git_cli(repo, "show", "--name-status", "--format=", sha).split("\n")[:-1]


def test_create_and_open_keep_the_git_dir_outside_the_work_tree(paths):
    git_dir, work = paths
    with FrameRepo.create(git_dir, work, clock=Clock()) as created:
        root = created.head()
        assert root is not None
    assert not (work / ".git").exists() and list(work.iterdir()) == []
    assert (git_dir / "info" / "exclude").read_text().splitlines() == GIT_EXCLUDES
    with FrameRepo(git_dir) as opened:
        assert opened.work_tree == work and opened.head() == root
        assert opened.log("any/x.frame.json") == []
        assert opened.tracked() == {}
    assert git_cli(repo_of(git_dir), "log", "--format=%an <%ae>|%s", root) == \
        f"twinsync <twinsync@localhost>|twinsync: history of {work}\n"


def test_gitpython_finds_the_work_tree_but_cannot_run_git_there(paths):
    """Why FrameRepo passes GIT_DIR itself (GitPython issue #1710): a Repo opened on a Git dir
    reads core.worktree, then runs git in the work tree without GIT_DIR, where no .git is."""
    git_dir, work = paths
    FrameRepo.create(git_dir, work).close()
    with git.Repo(git_dir) as plain:
        assert Path(plain.working_tree_dir) == work and not plain.bare
        with pytest.raises(git.GitCommandError, match="not a git repository"):
            plain.git.status()


def test_create_works_before_the_work_tree_exists(tmp_path):
    """`twinsync init` creates frames.git under a staging dir, pointing at the final path."""
    work = tmp_path / "final" / "frames.shared"
    with FrameRepo.create(tmp_path / "staging" / "frames.git", work) as r:
        assert not work.exists()
        with pytest.raises(GitStoreError, match="work tree .* is missing"):
            r.head()
    work.mkdir(parents=True)
    with FrameRepo(tmp_path / "staging" / "frames.git") as r:
        assert r.head() is not None


def test_create_and_open_refuse_bad_places(tmp_path, paths):
    git_dir, work = paths
    with pytest.raises(GitStoreError, match="must not contain"):
        FrameRepo.create(work / "frames.git", work)
    FrameRepo.create(git_dir, work).close()
    with pytest.raises(GitStoreError, match="already exists"):
        FrameRepo.create(git_dir, work)
    with pytest.raises(GitStoreError, match="not a Git repository") as info:
        FrameRepo(tmp_path / "nothing")
    assert isinstance(info.value, TwinsyncError)


def test_a_batch_is_one_commit_by_its_author(repo):
    work = repo.work_tree
    write(work, "ns/a.frame.json", "a1\n")
    write(work, "ns/b.frame.json", "b1\n")
    first = repo.commit(["ns/a.frame.json", "ns/b.frame.json"], "batch 1", "laptop", when=T0)
    write(work, "ns/a.frame.json", "a2\n")
    (work / "ns" / "b.frame.json").unlink()
    write(work, "other/c.frame.json", "c1\n")
    write(work, "other/untouched.frame.json", "not in the batch\n")
    second = repo.commit(["ns/a.frame.json", "ns/b.frame.json", "other/c.frame.json"], "batch 2", "desk")
    assert repo.head() == second
    assert git_cli(repo, "rev-parse", f"{second}^") == f"{first}\n"
    assert sorted(commit_files(repo, second)) == ["A\tother/c.frame.json", "D\tns/b.frame.json",
                                                  "M\tns/a.frame.json"]
    assert git_cli(repo, "log", "-1", "--format=%an <%ae>|%cn <%ce>", second) == \
        "desk <desk@twinsync>|twinsync <twinsync@localhost>\n"
    assert git_cli(repo, "log", "-1", "--format=%aI", first) == "2026-11-25T08:00:00+00:00\n"
    repo.sync_index()
    assert git_cli(repo, "status", "--porcelain") == "?? other/untouched.frame.json\n"


def test_nothing_to_commit_returns_none(repo):
    write(repo.work_tree, "ns/a.frame.json", "a\n")
    assert repo.commit(["ns/a.frame.json"], "add", "laptop")
    head = repo.head()
    assert repo.commit(["ns/a.frame.json"], "again", "laptop") is None
    assert repo.commit(["ns/never-existed.frame.json"], "ghost", "laptop") is None
    assert repo.commit([], "empty", "laptop") is None
    assert repo.head() == head


def test_vouched_paths_skip_nothing_that_matters(repo):
    # The pipeline's commits skip the excluded patterns: unchanged, deleted and never-tracked
    # paths must still come out as they do through `git status`.
    def blob(text: str) -> str:
        return object_id(b"blob", text.encode())

    write(repo.work_tree, "ns/a.frame.json", "a\n")
    first = repo.commit(["ns/a.frame.json"], "add", "laptop", vouched={"ns/a.frame.json": blob("a\n")})
    assert first and commit_files(repo, first) == ["A\tns/a.frame.json"]
    assert repo.commit(["ns/a.frame.json"], "again", "laptop", vouched={"ns/a.frame.json": blob("a\n")}) is None
    assert repo.commit(["ns/never-existed.frame.json"], "ghost", "laptop",
                       vouched={"ns/never-existed.frame.json": None}) is None
    (repo.work_tree / "ns/a.frame.json").unlink()
    gone = repo.commit(["ns/a.frame.json"], "delete", "laptop", vouched={"ns/a.frame.json": None})
    assert gone and commit_files(repo, gone) == ["D\tns/a.frame.json"]
    repo.sync_index()
    assert git_cli(repo, "status", "--porcelain") == ""


def test_a_file_that_changed_after_it_was_vouched_for_is_not_committed(repo):
    """The pipeline validates a file, then commits it; a writer in between (a person, a
    script, Syncthing) must not get its bytes into Git unchecked: the path is left out and
    its change is the next batch's. The same for a file found gone that came back, and one
    vouched for that is gone now."""
    def blob(text: str) -> str:
        return object_id(b"blob", text.encode())

    write(repo.work_tree, "ns/a.frame.json", "checked\n")
    write(repo.work_tree, "ns/b.frame.json", "b\n")
    base = repo.commit(["ns/a.frame.json", "ns/b.frame.json"], "base", "laptop")
    write(repo.work_tree, "ns/a.frame.json", "written after the check\n")  # vouched as "v2\n"
    write(repo.work_tree, "ns/new.frame.json", "came back\n")  # vouched as gone
    (repo.work_tree / "ns/b.frame.json").unlink()  # vouched as "b2\n"
    write(repo.work_tree, "ns/c.frame.json", "c\n")  # vouched as is
    sha = repo.commit(["ns/a.frame.json", "ns/new.frame.json", "ns/b.frame.json", "ns/c.frame.json"], "batch",
                      "laptop", vouched={"ns/a.frame.json": blob("v2\n"), "ns/new.frame.json": None,
                                         "ns/b.frame.json": blob("b2\n"), "ns/c.frame.json": blob("c\n")})
    assert sha and commit_files(repo, sha) == ["A\tns/c.frame.json"]
    assert repo.show(sha, "ns/a.frame.json") == b"checked\n" and repo.show(sha, "ns/b.frame.json") == b"b\n"
    assert repo.commit(["ns/a.frame.json"], "only a", "laptop", vouched={"ns/a.frame.json": blob("v2\n")}) is None
    assert repo.head() == sha and base


def test_the_index_is_kept_split_and_true_whoever_writes_it(repo):
    # A batch writes a small split index, not the whole index again; plain Git commands
    # (no splitIndex setting) keep reading and writing it, and `git status` stays true.
    def shared_index() -> str:
        return git_cli(repo, "rev-parse", "--shared-index-path").strip()

    for k in range(3):
        write(repo.work_tree, f"ns/{k}.frame.json", f"{k}\n")
        repo.commit([f"ns/{k}.frame.json"], "add", "laptop")
        repo.sync_index()
        assert shared_index() and Path(shared_index()).is_file()
    assert git_cli(repo, "status", "--porcelain") == ""
    write(repo.work_tree, "ns/0.frame.json", "edited\n")
    git_cli(repo, "add", "ns/0.frame.json")  # another writer of the index: a person's Git
    assert shared_index() and git_cli(repo, "status", "--porcelain") == "M  ns/0.frame.json\n"
    repo.commit(["ns/0.frame.json"], "edit", "laptop")
    repo.sync_index()
    assert git_cli(repo, "status", "--porcelain") == ""
    assert git_cli(repo, "ls-files") == "ns/0.frame.json\nns/1.frame.json\nns/2.frame.json\n"
    git_cli(repo, "fsck", "--strict")


@pytest.mark.parametrize("packed", [False, True], ids=["loose-ref", "packed-ref"])
def test_a_commit_by_another_writer_becomes_the_parent(paths, packed):
    # The daemon's repo remembers the commit it made last; a frame put from the CLI (another
    # FrameRepo, another process) moves HEAD in between: the next commit must build on it,
    # whether HEAD's ref is a loose file or was packed by `git gc`.
    git_dir, work = paths
    with FrameRepo.create(git_dir, work, clock=Clock()) as daemon, FrameRepo(git_dir) as cli:
        write(work, "ns/a.frame.json", "a\n")
        first = daemon.commit(["ns/a.frame.json"], "a", "laptop")
        write(work, "ns/b.frame.json", "b\n")
        second = cli.commit(["ns/b.frame.json"], "b", "desktop")
        if packed:
            git_cli(daemon, "pack-refs", "--all")
        write(work, "ns/c.frame.json", "c\n")
        third = daemon.commit(["ns/c.frame.json"], "c", "laptop")
        assert git_cli(daemon, "rev-list", "HEAD").split()[:3] == [third, second, first]
        assert sorted(git_cli(daemon, "ls-tree", "-r", "--name-only", "HEAD").split()) == \
            ["ns/a.frame.json", "ns/b.frame.json", "ns/c.frame.json"]


def test_excluded_files_are_never_committed_even_when_named(repo):
    work = repo.work_tree
    junk = [".stfolder/marker", ".stignore", ".stversions/ns/a.frame.json",
            "ns/a.sync-conflict-20261125-080000-ABCDEFG.frame.json",
            "ns/.twinsync-tmp-1a2b-a.frame.json", "ns/.syncthing.a.frame.json.tmp",
            "ns/~syncthing~a.frame.json.tmp"]
    for rel in junk:
        write(work, rel, "junk\n")
    write(work, "ns/a.frame.json", "a\n")
    sha = repo.commit([*junk, "ns/a.frame.json"], "batch", "laptop")
    assert commit_files(repo, sha) == ["A\tns/a.frame.json"]
    write(work, "ns/b.frame.json", "b\n")
    repo.commit(["ns/b.frame.json"], "b", "laptop")
    assert set(repo.tracked()) == {"ns/a.frame.json", "ns/b.frame.json"}
    assert repo.commit(junk, "only junk", "laptop") is None
    # A batch too big for a pathspec-limited `git status` takes the whole-tree path.
    many = [f"many/f{i}.frame.json" for i in range(40)]
    for rel in many:
        write(work, rel, "m\n")
    sha = repo.commit([*junk, *many], "big batch", "laptop")
    assert sorted(commit_files(repo, sha)) == sorted(f"A\t{rel}" for rel in many)


def test_commit_and_tracked(repo):
    work = repo.work_tree
    paths = [f"ns{i % 2}/f{i}.frame.json" for i in range(5)]
    for i, rel in enumerate(paths):
        write(work, rel, f"{i}\n")
    sha = repo.commit(paths, "batch", "laptop")
    assert sha and repo.head() == sha
    tracked = repo.tracked()
    assert tracked == {line.split("\t")[1]: line.split()[2]
                       for line in git_cli(repo, "ls-tree", "-r", "HEAD").splitlines()}
    blob = git_cli(repo, "hash-object", str(work / "ns0/f0.frame.json")).strip()
    assert tracked["ns0/f0.frame.json"] == blob
    (work / "ns0" / "f0.frame.json").unlink()
    repo.commit(["ns0/f0.frame.json"], "deletion", "twinsync")
    assert "ns0/f0.frame.json" not in repo.tracked() and len(repo.tracked()) == 4


def test_log_show_versions(repo):
    work, rel = repo.work_tree, "ns/a.frame.json"
    shas = []
    for i, author in enumerate(["laptop", "desk", "laptop"]):
        write(work, rel, f"v{i}\n")
        write(work, "ns/other.frame.json", f"other {i}\n")
        shas.append(repo.commit([rel, "ns/other.frame.json"], f"edit {i}\n\nbody", author,
                                when=T0 + timedelta(hours=i)))
    write(work, "ns/other.frame.json", "only the other one\n")
    repo.commit(["ns/other.frame.json"], "other only", "desk")
    log = repo.log(rel)
    assert [r.commit for r in log] == shas[::-1]
    assert log[0] == Revision(shas[2], "laptop", T0 + timedelta(hours=2), "edit 2\n\nbody")
    assert log[0].date.tzinfo is not None
    assert [r.commit for r in repo.log(rel, limit=2)] == shas[:0:-1]
    assert repo.show(shas[0], rel) == b"v0\n"  # the trailing newline survives
    assert list(repo.versions(rel)) == [(shas[2], b"v2\n"), (shas[1], b"v1\n"), (shas[0], b"v0\n")]
    assert repo.holds(rel) and not repo.holds("ns/never.frame.json")
    (work / rel).unlink()
    gone = repo.commit([rel], "delete", "laptop")
    assert not repo.holds(rel)  # the history stays, the path does not
    assert repo.log(rel)[0].commit == gone
    assert [sha for sha, _ in repo.versions(rel)] == shas[::-1]
    with pytest.raises(GitStoreError, match=f"{rel} does not exist at revision {gone}"):
        repo.show(gone, rel)
    with pytest.raises(GitStoreError, match="does not exist at revision nosuchrev"):
        repo.show("nosuchrev", rel)
    assert repo.deletions() == {rel: (gone, repo.log(rel)[0].date)}
    assert repo.show(f"{gone}^", rel) == b"v2\n"  # the last version before the delete
    write(work, rel, "back\n")
    repo.commit([rel], "back", "laptop")
    assert repo.deletions() == {}
    for bad in ("--output=/tmp/x", "", "HEAD HEAD"):
        with pytest.raises(GitStoreError, match="is not a revision"):
            repo.show(bad, rel)


def test_show_returns_exact_bytes(repo):
    data = b'{"x": "\xc3\xa9"}\r\n\n'
    (repo.work_tree / "ns").mkdir()
    (repo.work_tree / "ns" / "a.frame.json").write_bytes(data)
    sha = repo.commit(["ns/a.frame.json"], "bytes", "laptop")
    assert repo.show(sha, "ns/a.frame.json") == data


def test_diff(repo):
    work, rel = repo.work_tree, "ns/a.frame.json"
    write(work, rel, "one\ntwo\n")
    a = repo.commit([rel], "a", "laptop")
    write(work, rel, "one\nthree\n")
    b = repo.commit([rel], "b", "laptop")
    text = repo.diff(a, b, rel)
    assert f"--- a/{rel}\n+++ b/{rel}\n" in text and "-two\n+three\n" in text
    assert repo.diff(a, a, rel) == ""
    assert repo.diff(a, b, "ns/elsewhere.frame.json") == ""


def test_create_branch_with_touches_neither_work_tree_nor_index(repo):
    work, rel = repo.work_tree, "ns/a.frame.json"
    write(work, rel, "base\n")
    write(work, "ns/b.frame.json", "b\n")
    base = repo.commit([rel, "ns/b.frame.json"], "base", "laptop")
    write(work, rel, "ours, committed\n")
    ours = repo.commit([rel], "ours", "laptop")
    write(work, rel, "ours, not committed yet\n")
    write(work, "ns/new.frame.json", "untracked\n")
    repo.sync_index()
    status_before = git_cli(repo, "status", "--porcelain")
    index_before = (repo.git_dir / "index").read_bytes()

    branch = "fork/ns/a/ABCDEFG-20261125-080000"
    fork = repo.create_branch_with(branch, base, rel, b"theirs\n", "their version", "desk")

    assert git_cli(repo, "status", "--porcelain") == status_before
    assert (repo.git_dir / "index").read_bytes() == index_before
    assert (work / rel).read_text() == "ours, not committed yet\n"
    assert repo.head() == ours
    assert repo.branches() == {branch: fork}
    assert repo.show(fork, rel) == b"theirs\n"
    assert repo.show(fork, "ns/b.frame.json") == b"b\n"
    assert git_cli(repo, "log", "-1", "--format=%P|%an", fork) == f"{base}|desk\n"
    assert "+theirs" in repo.diff(base, fork, rel)
    # Asking again for the same fork is harmless; another fork under that name is refused.
    assert repo.create_branch_with(branch, base, rel, b"theirs\n", "again", "desk") == fork
    with pytest.raises(GitStoreError, match="already exists"):
        repo.create_branch_with(branch, base, rel, b"something else\n", "other", "desk")
    assert repo.branches() == {branch: fork}

    removed = repo.create_branch_with("fork/ns/a/removed", ours, rel, None, "deleted there", "desk")
    assert rel not in git_cli(repo, "ls-tree", "-r", "--name-only", removed).split()
    assert set(repo.branches()) == {branch, "fork/ns/a/removed"}
    assert repo.branches("nothing/") == {}


@pytest.mark.parametrize("name", ["fork/a..b", "fork/a b", "fork/x.lock", "-fork", "fork//x",
                                  "fork/a~1", "fork/a:b", "fork/", ""])
def test_invalid_branch_names_are_refused(repo, name):
    with pytest.raises(GitStoreError, match="not a valid Git branch name"):
        repo.create_branch_with(name, repo.head(), "ns/a.frame.json", b"x\n", "m", "desk")
    assert repo.branches() == {}


def test_unknown_base_is_refused(repo):
    with pytest.raises(GitStoreError, match="is not a commit"):
        repo.create_branch_with("fork/x", "0" * 40, "ns/a.frame.json", b"x\n", "m", "desk")


@pytest.mark.parametrize("bad", ["/etc/passwd", "../outside", "ns/../../x", ""])
def test_paths_outside_the_work_tree_are_refused(repo, bad):
    with pytest.raises(ValueError):
        repo.commit([bad], "m", "laptop")


def test_two_thousand_files_in_one_commit(repo):
    work = repo.work_tree
    names = [f"ns{i % 20}/f{i}.frame.json" for i in range(2000)]
    for rel in names:
        write(work, rel, f"{rel}\n")
    sha = repo.commit(names, "big batch", "laptop")
    assert len(commit_files(repo, sha)) == 2000
    assert git_cli(repo, "rev-list", "--count", "HEAD") == "2\n"
    assert len(repo.tracked()) == 2000


def test_close_leaves_no_git_process(paths):
    me = psutil.Process()
    before = {p.pid for p in me.children(recursive=True)}
    git_dir, work = paths
    r = FrameRepo.create(git_dir, work)
    write(work, "ns/a.frame.json", "a\n")
    sha = r.commit(["ns/a.frame.json"], "a", "laptop")
    r.show(sha, "ns/a.frame.json")
    list(r.versions("ns/a.frame.json"))
    r.create_branch_with("fork/a", sha, "ns/a.frame.json", b"b\n", "fork", "desk")
    r.diff(sha, "fork/a", "ns/a.frame.json")
    r.tracked(), r.log("ns/a.frame.json"), r.branches()
    # FrameRepo itself never starts GitPython's persistent `git cat-file --batch-check`;
    # start one through its command object to show that close() ends it too.
    assert r._cmd.get_object_header(sha)[1] == b"commit"
    assert any("cat-file" in " ".join(p.cmdline()) for p in me.children(recursive=True))
    r.close()
    r.close()
    left = [p for p in me.children(recursive=True)
            if p.pid not in before and p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert left == []
    with pytest.raises(GitStoreError, match="closed"):
        r.head()


def test_the_users_git_config_does_not_change_history(paths, tmp_path, monkeypatch):
    """A global ignore of *.json, a clean filter, another identity, signing or hooks must not
    leak in: history must hold the exact bytes Syncthing delivered."""
    home = tmp_path / "user"
    (home / ".config" / "git").mkdir(parents=True)
    (home / ".config" / "git" / "ignore").write_text("*.json\n")
    (home / ".config" / "git" / "attributes").write_text("*.json text\n")
    (home / "hooks").mkdir()
    (home / ".gitconfig").write_text(
        f"[user]\n\tname = Someone Else\n\temail = else@example.org\n[commit]\n\tgpgSign = true\n"
        f"[core]\n\texcludesFile = {home / 'ignore'}\n\thooksPath = {home / 'hooks'}\n"
        f"\tattributesFile = {home / 'attributes'}\n[filter \"mangle\"]\n\tclean = tr a X\n"
        f"[init]\n\tdefaultBranch = trunk\n")
    (home / "attributes").write_text("*.json filter=mangle\n")
    (home / "ignore").write_text("*.frame.json\n")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / ".config"))
    git_dir, work = paths
    with FrameRepo.create(git_dir, work) as r:
        (work / "ns").mkdir()
        (work / "ns" / "a.frame.json").write_bytes(b"a\r\n")
        sha = r.commit(["ns/a.frame.json"], "a", "laptop")
        assert sha and set(r.tracked()) == {"ns/a.frame.json"}
        assert r.show(sha, "ns/a.frame.json") == b"a\r\n"
        assert git_cli(r, "log", "-1", "--format=%an|%cn", sha) == "laptop|twinsync\n"
        assert git_cli(r, "symbolic-ref", "HEAD") == "refs/heads/main\n"


def test_gc_packs_loose_objects_when_git_says_so(repo):
    """`gc --auto` samples objects/17/; blobs that land there make Git decide to pack."""
    contents = []
    i = 0
    while len(contents) < 3:
        data = f"{i}\n".encode()
        if hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest().startswith("17"):
            contents.append(data)
        i += 1
    for n, data in enumerate(contents):
        (repo.work_tree / "ns").mkdir(exist_ok=True)
        (repo.work_tree / f"ns/f{n}.frame.json").write_bytes(data)
    repo.commit([f"ns/f{n}.frame.json" for n in range(len(contents))], "batch", "laptop")
    git_cli(repo, "config", "gc.auto", "1")
    loose = lambda: int(dict(line.split(": ") for line in git_cli(repo, "count-objects", "-v").splitlines())["count"])  # noqa: E731
    assert loose() > 3
    repo.gc()
    assert loose() == 0
    assert repo.show("HEAD", "ns/f0.frame.json") == contents[0]
