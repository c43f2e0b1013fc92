"""Command palette entries (ctrl+p) for every action of the TUI."""

from __future__ import annotations

from collections.abc import Callable

from textual.command import DiscoveryHit, Hit, Hits, Provider


class TwinsyncCommands(Provider):
    def _commands(self) -> list[tuple[str, str, Callable[[], object]]]:
        app = self.app
        tabs = [(f"Show the {title} tab", f"key {key}", lambda tab=tab: app.action_show_tab(tab))
                for key, (tab, title) in enumerate(app.TABS, start=1)]  # type: ignore[attr-defined]
        return [
            ("Approve the selected queue item", "conflict or fork branch; asks first (key a)",
             lambda: app.action_decide(True)),  # type: ignore[attr-defined]
            ("Reject the selected queue item", "conflict or fork branch; asks first (key r)",
             lambda: app.action_decide(False)),  # type: ignore[attr-defined]
            ("Show decided queue items, or the open queue again",
             "who decided what, and on which node (key h)", app.action_toggle_history),  # type: ignore[attr-defined]
            ("Verify the selected snapshot", "hashes, signature, every step (key v)",
             app.action_verify),  # type: ignore[attr-defined]
            ("Restore trace.db from the selected snapshot", "asks first; the current one is kept aside (key R)",
             app.action_restore),  # type: ignore[attr-defined]
            ("Restore the selected frame revision", "asks first (key t)",
             app.action_restore_frame),  # type: ignore[attr-defined]
            ("Refresh now", "every tab also refreshes by itself (ctrl+r)",
             app.action_refresh_now),  # type: ignore[attr-defined]
            ("Help: keys", "key ?", app.action_help),  # type: ignore[attr-defined]
            *tabs,
        ]

    async def discover(self) -> Hits:
        for name, help_text, command in self._commands():
            yield DiscoveryHit(name, command, help=help_text)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for name, help_text, command in self._commands():
            score = matcher.match(name)
            if score > 0:
                yield Hit(score, matcher.highlight(name), command, text=name, help=help_text)
