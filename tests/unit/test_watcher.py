"""FrameWatcher on a real folder with real inotify: every change reaches the callback, files
in a folder made after the watch started included; reading a file does not, and is not even
reported by the kernel (the inotify mask leaves opens and reads out, so an idle daemon is not
woken by whoever reads its files)."""

from __future__ import annotations

import os
import threading
from pathlib import Path

from orchestrator.watcher import FrameWatcher
from tests.conftest import stays_false, wait_for

IN_ACCESS, IN_CLOSE_NOWRITE, IN_OPEN = 0x1, 0x10, 0x20


def inotify_masks() -> list[int]:
    """The mask of every inotify watch this process holds, as the kernel reports them."""
    masks = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{fd}") != "anon_inode:inotify":
                continue
            info = Path(f"/proc/self/fdinfo/{fd}").read_text()
        except OSError:
            continue
        masks += [int(field[5:], 16) for line in info.splitlines() if line.startswith("inotify wd:")
                  for field in line.split() if field.startswith("mask:")]
    return masks


def test_changes_reach_the_callback_and_reads_do_not(tmp_path: Path):
    root = tmp_path / "frames.shared"
    (root / "notes").mkdir(parents=True)
    kept = root / "notes" / "kept.json"
    kept.write_text("{}")
    seen: list[str] = []
    lock = threading.Lock()

    def on_change(paths: set[str]) -> None:
        with lock:
            seen.extend(paths)

    def saw(path: str) -> bool:
        with lock:
            return path in seen

    rescans = threading.Event()
    stop = threading.Event()
    watcher = FrameWatcher(root, on_change, rescans.set)
    thread = threading.Thread(target=watcher.run, args=(stop,), daemon=True)
    thread.start()
    try:
        wait_for(rescans.is_set, 10, "the watch to start")
        masks = inotify_masks()
        assert masks and not any(mask & (IN_ACCESS | IN_CLOSE_NOWRITE | IN_OPEN) for mask in masks)
        for _ in range(20):  # opened, read and closed without a write, over and over
            assert kept.read_text() == "{}"
            os.listdir(root / "notes")
        stays_false(lambda: seen, 0.5)

        (root / "later" / "deeper").mkdir(parents=True)  # made after the watch started
        (root / "later" / "deeper" / "new.json").write_text("{}")
        wait_for(lambda: saw("later/deeper/new.json"), 10, "a file in a new folder")
        kept.write_text('{"v": 2}')
        wait_for(lambda: saw("notes/kept.json"), 10, "a file written in place")
        kept.rename(root / "notes" / "moved.json")
        wait_for(lambda: saw("notes/moved.json"), 10, "a file renamed")
        (root / "notes" / "moved.json").unlink()
        with lock:
            seen.clear()
        (root / "later" / "deeper" / "new.json").unlink()
        wait_for(lambda: saw("later/deeper/new.json"), 10, "a file deleted")
    finally:
        stop.set()
        thread.join(10)
    assert not thread.is_alive()
