"""`twinsync tui`: the Textual app over orchestrator's service layer.

One factory, `make_app`, builds the app for the CLI and for the tests; the app takes a
service object (the real `NodeService`, or a fake with fixed values in snapshot tests),
polls Syncthing and refreshes the visible tab every `refresh_s` seconds, all in thread
workers, and stops its timer and workers when it unmounts.

Opened by `twinsync demo`, the service also carries the demo's timeline: a panel under
the tabs shows it as it happens, and when the demo ends the app stops asking its nodes
(which are being stopped) and shows the results until `q`.
"""

from __future__ import annotations

import logging
import sys
import threading
import webbrowser
from collections.abc import Callable
from pathlib import Path

import platformdirs

from rich.text import Text
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.css.query import NoMatches
from textual.message import Message
from textual.timer import Timer
from textual.widgets import Footer, Static, TabbedContent, TabPane

from folders.layout import NodeLayout
from orchestrator.alerts import desktop_session
from orchestrator.heartbeat import DEGRADED, NOT_RUNNING, RUNNING, STALLED
from orchestrator.logfile import logs_to
from orchestrator.status import NodeStatus
from tui.ask import AskScreen
from tui.commands import TwinsyncCommands
from tui.crash import EXIT_CRASH, crash_message, write_crash_report
from tui.dialogs import HelpScreen
from tui.frames import FramesPane
from tui.metrics import MetricsPane
from tui.nodes import NodesPane
from tui.pane import Pane
from tui.queue import QueuePane
from tui.service import NodeService, Service, Timeline
from tui.snapshots import SnapshotsPane
from tui.timeline import TimelinePanel
from tui.work import ServiceCalls

logger = logging.getLogger(__name__)

#: Seconds between looks for a daemon to watch when none serves a link here.
WATCH_RETRY_S = 5.0


class DemoChanged(Message):
    """The demo's timeline changed (posted from the demo's thread)."""


PANES: dict[str, type[Pane]] = {"nodes": NodesPane, "queue": QueuePane, "snapshots": SnapshotsPane,
                                "frames": FramesPane, "metrics": MetricsPane}


class TwinsyncApp(ServiceCalls, App[None]):
    CSS_PATH = "app.tcss"
    TITLE = "twinsync"
    COMMANDS = App.COMMANDS | {TwinsyncCommands}
    TABS = (("nodes", "Nodes"), ("queue", "Queue"), ("snapshots", "Snapshots"), ("frames", "Frames"),
            ("metrics", "Metrics"))
    BINDINGS = [
        *(Binding(str(i), f"show_tab('{tab}')", title, show=False)
          for i, (tab, title) in enumerate(TABS, start=1)),
        Binding("a", "decide(True)", "Approve"),
        Binding("r", "decide(False)", "Reject"),
        Binding("b", "next_branch", "Next branch"),
        Binding("h", "toggle_history", "Decided/open"),
        Binding("slash", "filter", "Filter"),
        Binding("v", "verify", "Verify"),
        Binding("R", "restore", "Restore"),
        Binding("t", "restore_frame", "Restore revision"),
        Binding("p", "pause_peer", "Pause/resume peer"),
        Binding("s", "rescan", "Rescan"),
        Binding("u", "unpair", "Unpair peer"),
        Binding("g", "open_gui", "Syncthing GUI"),
        Binding("k", "ask", "Ask"),
        Binding("question_mark", "help", "Help"),
        Binding("ctrl+r", "refresh_now", "Refresh"),
        Binding("q", "quit", "Quit"),
    ]

    #: Keys that act on one tab: shown in the footer, and active, only there.
    TAB_ACTIONS = {"decide": "queue", "next_branch": "queue", "filter": "queue", "toggle_history": "queue",
                   "verify": "snapshots", "restore": "snapshots", "restore_frame": "frames", "pause_peer": "nodes",
                   "rescan": "nodes", "unpair": "nodes", "open_gui": "nodes"}
    #: Keys that ask a node something: gone once the demo this app watches has ended.
    DATA_ACTIONS = {*TAB_ACTIONS, "ask", "refresh_now"}

    def __init__(self, service: Service, *, refresh_s: float = 2.0,
                 open_url: Callable[[str], bool] | None = None) -> None:
        super().__init__()
        self.service = service
        self.refresh_s = refresh_s
        self.open_url = open_url or open_in_browser
        self.status: NodeStatus | None = None
        self.crash_report: str | None = None
        self._timer: Timer | None = None
        self._watch_stop = threading.Event()
        self._unfollow_demo: Callable[[], None] = lambda: None
        self._frozen = False

    @property
    def node_name(self) -> str | None:
        return self.status.node if self.status else None

    @property
    def ended(self) -> bool:
        """Whether the demo this app watches has ended: its nodes stop, so no result of a
        service call is shown any more (a failure would be the stop, not news)."""
        view = self.service.demo()
        return view is not None and view.ended is not None

    def compose(self) -> ComposeResult:
        with Vertical(id="top"):
            yield Static(Text(" twinsync", style="bold"), id="header")
            yield Static("", id="banner")
        with TabbedContent(initial="nodes", id="tabs"):
            for tab, title in self.TABS:
                with TabPane(title, id=tab):
                    yield PANES[tab](id=f"{tab}-pane")
        if self.service.demo() is not None:  # only `twinsync demo` has a timeline
            yield TimelinePanel(id="timeline")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#banner").display = False
        self._timer = self.set_interval(self.refresh_s, self.tick)
        self.tick()
        self.pane("nodes").focus_main()
        threading.Thread(target=self._watch_daemon, name="twinsync-watch", daemon=True).start()
        self._unfollow_demo = self.service.follow_demo(lambda: self.post_message(DemoChanged()))
        self.show_demo()

    def on_unmount(self) -> None:
        self._unfollow_demo()
        self._watch_stop.set()
        if self._timer is not None:
            self._timer.stop()
        self.workers.cancel_all()

    def _watch_daemon(self) -> None:
        """The daemon's events over its link (a batch committed, steps merged, a module
        queued): refresh at once rather than at the next tick. While no daemon serves a
        link here, look again every WATCH_RETRY_S. A thread of its own, not a Textual
        worker: Textual waits for its workers before it unmounts, and this one ends on
        unmount (within half a second)."""
        while not self._watch_stop.is_set():
            try:
                self.service.watch(self._daemon_event, self._watch_stop.is_set)
            except Exception:  # noqa: BLE001 - watching is a nicety: the timer still refreshes
                logger.debug("watching the daemon failed", exc_info=True)
            self._watch_stop.wait(WATCH_RETRY_S)

    def _daemon_event(self, event: dict) -> None:
        try:
            self.call_from_thread(self.tick)
        except RuntimeError:  # the app stopped between the event and now
            pass

    # -- the demo ------------------------------------------------------------------------

    def on_demo_changed(self, message: DemoChanged) -> None:
        self.show_demo()

    def show_demo(self) -> None:
        view = self.service.demo()
        if view is None:
            return
        try:
            panel = self.query_one(TimelinePanel)
        except NoMatches:  # the app is closing: the demo goes on without it
            return
        panel.show(view)
        if view.ended is not None and not self._frozen:
            self.freeze()

    def freeze(self) -> None:
        """The demo ended: stop refreshing and watching, drop the calls in flight, close any
        dialog (its action could no longer be carried out) and leave the keys that still
        mean something: tabs, help and quit."""
        self._frozen = True
        if self._timer is not None:
            self._timer.stop()
        self._watch_stop.set()
        self.workers.cancel_all()
        while len(self.screen_stack) > 1:
            self.pop_screen()
        self.query_one("#banner").display = False  # what it said is about nodes that now stop anyway
        self.show_header()
        self.refresh_bindings()

    def pane(self, tab: str) -> Pane:
        return self.query_one(f"#{tab}-pane", Pane)

    @property
    def active_tab(self) -> str:
        return self.query_one(TabbedContent).active

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action in self.DATA_ACTIONS and self._frozen:
            return False
        tab = self.TAB_ACTIONS.get(action)
        if tab is None:
            return True
        try:
            return self.active_tab == tab
        except NoMatches:  # not composed yet
            return False

    # -- refresh -------------------------------------------------------------------------

    def tick(self) -> None:
        """Poll Syncthing for the header; refresh the queue (its count is in its tab) and
        whichever tab is visible."""
        if not self.is_running or self._frozen:  # the timer may fire once more while the app shuts down
            return
        if not self.busy("status"):
            self.call_service(self.service.status, then=self.show_status, group="status", title="Status")
        self.pane("queue").load()
        if self.active_tab != "queue":
            self.pane(self.active_tab).load()

    def show_status(self, status: NodeStatus) -> None:
        self.status = status
        self.show_header()
        problems = [] if status.syncthing_ok else [f"Syncthing problem — {status.syncthing_error}"]
        daemon = status.daemon
        if daemon is not None and daemon.state in (DEGRADED, STALLED):  # "not running" is a choice: header only
            problems.append(f"Daemon {daemon.state} — {daemon.message}")
        banner = self.query_one("#banner", Static)
        banner.update(Text("\n".join(problems)))
        banner.display = bool(problems)
        self.pane("nodes").show_status(status)  # type: ignore[attr-defined]

    def show_header(self) -> None:
        status = self.status
        header = Text()
        if status is None:
            header.append(" twinsync", style="bold")
        else:
            self._status_header(header, status)
        if self._frozen and status is None:
            header.append("  demo ended", style="bold reverse")
        self.query_one("#header", Static).update(header)

    def _status_header(self, header: Text, status: NodeStatus) -> None:
        header.append(" twinsync ", style="bold")
        header.append(f" {status.node} ", style="bold reverse")
        header.append(f"  {status.home}  ", style="dim")
        if self._frozen:  # what the last poll said is no longer true
            header.append("demo ended: its Syncthings and daemons stop", style="bold reverse")
            return
        if status.syncthing_ok:
            header.append(f"Syncthing {status.syncthing_version} ✓", style="green")
        else:
            header.append("Syncthing ✗", style="bold red")
        daemon = status.daemon
        if daemon is not None:
            style = {RUNNING: "green", DEGRADED: "yellow", NOT_RUNNING: "yellow"}.get(daemon.state, "bold red")
            header.append(f"  daemon {'✓' if daemon.ok else daemon.state}", style=style)
        if getattr(self.service, "watching", False):
            header.append("  live", style="green")  # the daemon's events arrive as they happen

    def on_tabbed_content_tab_activated(self, event: TabbedContent.TabActivated) -> None:
        tab = event.pane.id
        self.refresh_bindings()
        if tab in PANES:
            if not self._frozen:
                self.pane(tab).load()
            self.pane(tab).focus_main()

    # -- actions (keys and the command palette) -------------------------------------------

    def action_show_tab(self, tab: str) -> None:
        self.query_one(TabbedContent).active = tab
        self.pane(tab).focus_main()  # focus left in a hidden tab would switch back to it

    def action_ask(self) -> None:
        self.push_screen(AskScreen(self.service.ask))

    def action_help(self) -> None:
        self.push_screen(HelpScreen())

    def action_refresh_now(self) -> None:
        self.tick()
        self.notify("Refreshing…", timeout=2)

    def _on_tab(self, tab: str, action: Callable[[], object]) -> None:
        """Run a tab's action; from another tab (the command palette), show that tab first
        and act once it is shown, so the dialog opens over the item it names."""
        if self.active_tab == tab:
            action()
            return
        self.action_show_tab(tab)
        self.call_after_refresh(action)

    def action_decide(self, approve: bool) -> None:
        self._on_tab("queue", lambda: self.pane("queue").decide(approve))  # type: ignore[attr-defined]

    def action_next_branch(self) -> None:
        self._on_tab("queue", self.pane("queue").next_branch)  # type: ignore[attr-defined]

    def action_toggle_history(self) -> None:
        self._on_tab("queue", self.pane("queue").toggle_history)  # type: ignore[attr-defined]

    def action_filter(self) -> None:
        self._on_tab("queue", self.pane("queue").focus_filter)  # type: ignore[attr-defined]

    def action_verify(self) -> None:
        self._on_tab("snapshots", self.pane("snapshots").verify)  # type: ignore[attr-defined]

    def action_restore(self) -> None:
        self._on_tab("snapshots", self.pane("snapshots").restore)  # type: ignore[attr-defined]

    def action_restore_frame(self) -> None:
        self._on_tab("frames", self.pane("frames").restore_revision)  # type: ignore[attr-defined]

    def action_pause_peer(self) -> None:
        self._on_tab("nodes", self.pane("nodes").toggle_pause)  # type: ignore[attr-defined]

    def action_rescan(self) -> None:
        self._on_tab("nodes", self.pane("nodes").rescan)  # type: ignore[attr-defined]

    def action_unpair(self) -> None:
        self._on_tab("nodes", self.pane("nodes").unpair)  # type: ignore[attr-defined]

    def action_open_gui(self) -> None:
        """Syncthing's own GUI in the desktop's browser; without a desktop, its address."""
        if self.status is None:
            self.notify("Syncthing's address is not known yet; try again in a moment.", severity="warning")
            return
        url = self.status.syncthing_url
        if not self.open_url(url):
            self.notify(f"Open {url} in a browser (no desktop browser here).", title="Syncthing GUI",
                        timeout=15, markup=False)

    # -- a bug in the TUI: a report, not a traceback -------------------------------------

    def _handle_exception(self, error: Exception) -> None:
        self.crash_report = write_crash_report(error)
        super()._handle_exception(error)
        self._exit_renderables[:] = [Text(crash_message("twinsync tui", error, self.crash_report))]


def open_in_browser(url: str) -> bool:
    """Only in a desktop session: elsewhere `webbrowser` would start a text browser in the
    terminal the TUI is drawing on."""
    return desktop_session() and webbrowser.open(url)


def make_app(home: Path, *, refresh_s: float = 2.0, service: Service | None = None,
             demo: Timeline | None = None) -> TwinsyncApp:
    """The app for `home` (of a demo, with its `demo` timeline); tests pass `service` to
    show fixed values instead. No node at `home` is refused here (NoNodeError), not shown
    as a screen that never loads."""
    if service is None:
        NodeLayout(Path(home)).require()
        service = NodeService(Path(home), demo=demo)
    return TwinsyncApp(service, refresh_s=refresh_s)


def run_app(home: Path, *, demo: Timeline | None = None) -> None:
    app = make_app(home, demo=demo)
    with logs_to(platformdirs.user_log_path("twinsync", ensure_exists=True) / "tui.log"):
        app.run()
    if app.crash_report is not None:
        sys.exit(EXIT_CRASH)
