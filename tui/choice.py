"""A dialog with more than yes or no: a title, what happens, and one button per choice,
each with its key (the unpair dialog: keep the peer's recovery folder, remove it, cancel)."""

from __future__ import annotations

from rich.text import Text
from textual import events
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Label, Static


class ChoiceScreen(ModalScreen[str | None]):
    """Dismissed with the chosen value, or None on Cancel, `n` or Escape."""

    BINDINGS = [Binding("escape,n", "choose(None)", "Cancel", show=False)]
    DEFAULT_CSS = """
    ChoiceScreen { align: center middle; }
    ChoiceScreen #dialog { width: 96; }
    """

    def __init__(self, title: str, body: str, choices: list[tuple[str, str, str]]) -> None:
        """`choices`: (key, label, value) per button, the most careful first."""
        super().__init__()
        self.title_text = title
        self.body = body
        self.choices = choices

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Label(self.title_text, id="dialog-title")
            yield Static(Text(self.body), id="dialog-body")
            with Horizontal(id="dialog-buttons"):
                for key, label, value in self.choices:
                    yield Button(f"{label} ({key})", variant="warning", id=f"choice-{value}")
                yield Button("Cancel (n)", id="choice-cancel")

    def on_mount(self) -> None:
        self.query_one("#choice-cancel", Button).focus()

    def on_key(self, event: events.Key) -> None:
        for key, _, value in self.choices:
            if event.key == key:
                event.stop()
                self.dismiss(value)

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        value = (event.button.id or "").removeprefix("choice-")
        self.dismiss(None if value == "cancel" else value)

    def action_choose(self, value: str | None) -> None:
        self.dismiss(value)
