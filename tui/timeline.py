"""The demo's timeline, under every tab: what the demo staged as it happens, and once it
has ended, its results and that its nodes are stopped (the tabs then keep what they showed
at the end). Only the app `twinsync demo` opens has one."""

from __future__ import annotations

from rich.text import Text
from textual.widgets import Static

from tui.service import TimelineView

#: Entries the panel shows while the demo runs: the newest, under the older ones.
SHOWN = 4


def timeline_title(view: TimelineView) -> str:
    if view.ended is not None:
        return "demo ended — results"
    clock = f"t={view.elapsed:.0f} s" + (f" · {view.duration:.0f} s of reasoning" if view.duration else "")
    return " · ".join(part for part in ("demo", view.phase, clock, view.progress) if part)


def timeline_text(view: TimelineView, shown: int = SHOWN) -> Text:
    """The newest entries with their time (the staged incidents in bold); once ended, how
    each node did, whether its processes are stopped yet, and how to leave."""
    text = Text()
    if view.ended is None:
        for entry in view.entries[-shown:]:
            text.append(f"{entry.at:5.0f} s  ", style="dim")
            text.append(entry.text + "\n", style="bold" if entry.incident else "")
        text.rstrip()
        return text
    for ok, line in view.ended.lines:
        text.append("✓ " if ok else "✗ ", style="green" if ok else "bold red")
        text.append(line + "\n")
    if view.ended.stopped:
        text.append(f"Syncthing and the daemons are stopped: the tabs show the nodes as the demo ended. "
                    f"Node homes: {view.root}\n", style="dim")
    else:
        text.append("Stopping Syncthing and the daemons…\n", style="dim")
    text.append("Press q to quit", style="bold")
    text.append(" (the demo then prints every node's metrics).")
    return text


class TimelinePanel(Static):
    def show(self, view: TimelineView) -> None:
        self.border_title = timeline_title(view)
        self.set_class(view.ended is not None, "ended")
        self.set_class(view.ended is not None and not view.ended.meets, "missed")
        self.update(timeline_text(view))
