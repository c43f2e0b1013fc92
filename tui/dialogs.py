"""Modal screens: a confirm dialog that says what will happen, and the help screen."""

from __future__ import annotations

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Label, Static

from folders.metrics import METRIC_WORDS


class ConfirmScreen(ModalScreen[bool]):
    """Asks before an action that changes data: a title, what happens, Yes / No.

    `y` or Enter on the confirm button confirms; `n` or Escape cancels.
    """

    BINDINGS = [Binding("y", "answer(True)", "Yes"), Binding("n", "answer(False)", "No"),
                Binding("escape", "answer(False)", "Cancel", show=False)]

    def __init__(self, title: str, body: str, confirm: str = "Yes") -> None:
        super().__init__()
        self.title_text = title
        self.body = body
        self.confirm_label = confirm

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Label(self.title_text, id="dialog-title")
            yield Static(Text(self.body), id="dialog-body")
            with Horizontal(id="dialog-buttons"):
                yield Button(f"{self.confirm_label} (y)", variant="warning", id="yes")
                yield Button("Cancel (n)", id="no")

    def on_mount(self) -> None:
        self.query_one("#no", Button).focus()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        self.dismiss(event.button.id == "yes")

    def action_answer(self, answer: bool) -> None:
        self.dismiss(answer)


#: (keys, what) per place, as the help screen shows them.
KEYS: dict[str, list[tuple[str, str]]] = {
    "Everywhere": [
        ("1 … 5", "Nodes, Queue, Snapshots, Frames, Metrics tab"),
        ("ctrl+r", "refresh now (every tab also refreshes by itself)"),
        ("ctrl+p", "command palette: every action by name"),
        ("k", "ask the network about a goal (the answer, who gave it, every peer tried)"),
        ("?", "this help"),
        ("q / ctrl+q", "quit"),
    ],
    "Nodes": [
        ("↑ ↓", "select a node; its details show below"),
        ("p", "pause or resume the selected peer in Syncthing"),
        ("u", "unpair the selected peer (asks: keep or delete its recovery folder)"),
        ("s", "ask Syncthing to rescan twinsync's folders now"),
        ("g", "open Syncthing's GUI (its address when there is no desktop browser)"),
    ],
    "Queue": [
        ("/", "filter the list (Escape returns to it)"),
        ("a", "approve the selected item or fork branch (asks first, says what it does)"),
        ("r", "reject the selected item or fork branch (asks first, says what it does)"),
        ("b", "on a fork: select its next branch"),
        ("h", "decided items (who decided what, and on which node) / the open queue"),
    ],
    "Snapshots": [
        ("v", "verify the selected snapshot (hashes, signature, every step)"),
        ("R", "restore trace.db from the selected snapshot (asks first)"),
    ],
    "Frames": [
        ("tab", "move between the frames and the selected frame's history"),
        ("t", "restore the frame to the selected revision (asks first)"),
    ],
}


#: One line per seed metric (Metrics tab), in the words and units the tab shows.
METRIC_HELP: list[tuple[str, str]] = [
    (METRIC_WORDS["convergence"], "share of published reasoning sessions whose conclusion agrees with their "
                    "goal's consensus, in %; higher is better"),
    (METRIC_WORDS["conflict_rate"], "share of frames in conflict, invalid, or different on another node, in %; "
                      "lower is better"),
    (METRIC_WORDS["access_p95_ms"], "how long an answer takes (95th percentile), in ms: asks that peers "
                    "answered over the peer link, or this node's own lookup before any; lower is better"),
    (METRIC_WORDS["routes_per_goal"], "published sessions per goal on average: how many ways each question "
                        "was reasoned through; higher is better"),
    ("not enough data yet", "too few frames or sessions for the number to mean anything; "
                            "it fills in as the nodes work"),
]


class HelpScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape,q,question_mark", "close", "Close")]

    def compose(self) -> ComposeResult:
        table = Table.grid(padding=(0, 2))
        table.add_column(style="bold", no_wrap=True)
        table.add_column()
        for place, keys in KEYS.items():
            table.add_row(Text(place, style="underline"), "")
            for key, what in keys:
                table.add_row(key, what)
            table.add_row("", "")
        table.add_row(Text("Metrics", style="underline"), "")
        for name, what in METRIC_HELP:
            table.add_row(name, what)
        with VerticalScroll(id="help"):
            yield Label("twinsync — keys", id="dialog-title")
            yield Static(table)
            yield Static(Text("Every decision runs the same service as the CLI "
                              "(`twinsync approve`, `fork approve`, `restore`, `frame restore`).",
                              style="dim"))

    def action_close(self) -> None:
        self.dismiss(None)
