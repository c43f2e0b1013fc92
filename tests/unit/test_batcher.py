"""The batcher decides when a batch of frame paths is committed: after a quiet gap, or at
once when Syncthing wrote every path whole and its pull is over. Driven with a clock the test
moves; `next_batch(stop, 0)` polls without blocking."""

from __future__ import annotations

import threading

from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator.batcher import Batcher

QUIET, MAX_WAIT = 0.2, 1.0
FOLDERS = ("twinsync-frames", "twinsync-frames-notes")


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _batcher() -> tuple[Batcher, Clock]:
    clock = Clock()
    return Batcher(QUIET, MAX_WAIT, clock=clock), clock


def _poll(batcher: Batcher) -> set[str] | None:
    batch = batcher.next_batch(threading.Event(), 0)
    return batch.paths if batch else None


def test_a_frame_syncthing_brought_is_ready_once_its_folder_is_idle():
    batcher, clock = _batcher()
    batcher.add({"ns/a.frame.json"})  # the watcher saw Syncthing's rename
    batcher.arrived(FOLDERS[0], {"ns/a.frame.json"})
    assert _poll(batcher) is None  # the pull may bring more
    batcher.settled(FOLDERS[0])
    assert _poll(batcher) == {"ns/a.frame.json"}  # no quiet gap waited


def test_syncthings_temp_file_does_not_hold_the_batch_back():
    clock = Clock()
    batcher = Batcher(QUIET, MAX_WAIT, clock=clock, inert=lambda rel: rel.rsplit("/", 1)[-1].startswith(".syncthing."))
    batcher.add({"ns/.syncthing.a.frame.json.tmp"})  # written, then renamed into place
    batcher.add({"ns/.syncthing.a.frame.json.tmp", "ns/a.frame.json"})
    batcher.arrived(FOLDERS[0], {"ns/a.frame.json"})
    batcher.settled(FOLDERS[0])
    assert _poll(batcher) == {"ns/.syncthing.a.frame.json.tmp", "ns/a.frame.json"}


def test_a_local_write_in_the_batch_keeps_the_quiet_gap():
    batcher, clock = _batcher()
    batcher.arrived(FOLDERS[0], {"ns/a.frame.json"})
    batcher.add({"ns/mine.frame.json"})
    batcher.settled(FOLDERS[0])
    assert _poll(batcher) is None
    clock.now += QUIET
    assert _poll(batcher) == {"ns/a.frame.json", "ns/mine.frame.json"}


def test_a_batch_says_which_paths_syncthing_wrote_so_they_are_not_announced_back():
    batcher, clock = _batcher()
    batcher.arrived(FOLDERS[0], {"ns/a.frame.json"})
    batcher.add({"ns/mine.frame.json"})
    batcher.settled(FOLDERS[0])
    clock.now += QUIET
    batch = batcher.next_batch(threading.Event(), 0)
    assert (batch.paths, batch.synced) == ({"ns/a.frame.json", "ns/mine.frame.json"}, {"ns/a.frame.json"})
    batcher.add({"ns/a.frame.json"})  # written here after it arrived: this one is ours to announce
    clock.now += QUIET
    assert batcher.next_batch(threading.Event(), 0).synced == set()


def test_a_burst_from_syncthing_is_one_batch_until_the_pull_ends():
    batcher, clock = _batcher()
    names = {f"ns/f{i:04d}.frame.json" for i in range(500)}
    for name in sorted(names):
        batcher.arrived(FOLDERS[0], {name})
        clock.now += 0.001
        assert _poll(batcher) is None
    batcher.settled(FOLDERS[1])  # another folder going idle is no reason
    assert _poll(batcher) is None
    batcher.settled(FOLDERS[0])
    assert _poll(batcher) == names


ops = st.lists(st.one_of(
    st.tuples(st.just("add"), st.sets(st.sampled_from("abcdef"), min_size=1, max_size=3)),
    st.tuples(st.just("arrived"), st.sampled_from(FOLDERS), st.sets(st.sampled_from("abcdef"), min_size=1, max_size=3)),
    st.tuples(st.just("settled"), st.sampled_from(FOLDERS)),
    st.tuples(st.just("tick"), st.floats(0, 0.5)),
), max_size=40)


@settings(max_examples=300, deadline=None)
@given(ops)
def test_nothing_is_lost_and_only_syncthings_whole_files_skip_the_quiet_gap(script):
    batcher, clock = _batcher()
    released: list[set[str]] = []
    seen: set[str] = set()
    window = {"first": None, "last": None, "local": set(), "arrived": set()}
    pulling: set[str] = set()

    def poll() -> None:
        paths = _poll(batcher)
        if paths is None:
            return
        on_time = clock.now >= min(window["last"] + QUIET, window["first"] + MAX_WAIT)
        synced = not window["local"] and not pulling and paths <= window["arrived"]
        assert on_time or synced, (paths, window, pulling)
        released.append(paths)
        window.update(first=None, last=None, local=set(), arrived=set())

    def note(paths: set[str]) -> None:
        window["first"] = clock.now if window["first"] is None else window["first"]
        window["last"] = clock.now
        seen.update(paths)

    for op in script:
        if op[0] == "add":
            note(op[1])
            window["local"] |= op[1] - window["arrived"]
            batcher.add(op[1])
        elif op[0] == "arrived":
            note(op[2])
            window["arrived"] |= op[2]
            window["local"] -= op[2]
            pulling.add(op[1])
            batcher.arrived(op[1], op[2])
        elif op[0] == "settled":
            pulling.discard(op[1])
            batcher.settled(op[1])
        else:
            clock.now += op[1]
        poll()
    clock.now += MAX_WAIT
    poll()
    assert set().union(*released) == seen
    assert _poll(batcher) is None
