"""The Ask dialog (`k`): a goal in, the network's answer out, as `twinsync ask` prints it,
asked in a worker so the screen stays live while peers are tried."""

from __future__ import annotations

from collections.abc import Callable

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Input, Label, Static

from orchestrator.ask import Answer, describe
from tui.work import ServiceCalls


class AskScreen(ServiceCalls, ModalScreen[None]):
    """Type a goal, Enter asks; each answer replaces the last. Escape closes."""

    BINDINGS = [Binding("escape", "close", "Close")]
    DEFAULT_CSS = """
    AskScreen { align: center middle; }
    AskScreen #dialog { width: 100; }
    AskScreen #ask-answer { margin-top: 1; }
    """

    def __init__(self, ask: Callable[[str], Answer]) -> None:
        super().__init__()
        self.ask = ask

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Label("Ask the network", id="dialog-title")
            yield Input(placeholder="a goal, e.g. plan the week (Enter asks, Escape closes)", id="ask-goal")
            yield Static(Text("This node answers when it holds a fresh conclusion; otherwise the peers "
                              "nearest by meaning are asked over the peer link.", style="dim"), id="ask-answer")

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        goal = event.value.strip()
        if not goal:
            return
        self.query_one("#ask-answer", Static).update(Text(f"Asking about {goal!r}…", style="dim"))
        self.call_service(self.ask, goal, then=self.show_answer, group="ask", title="Ask")

    def show_answer(self, answer: Answer) -> None:
        style = "" if answer.fresh else "yellow"
        self.query_one("#ask-answer", Static).update(Text(describe(answer), style=style))

    def action_close(self) -> None:
        self.workers.cancel_group(self, "ask")
        self.dismiss(None)
