"""Service calls in thread workers, their results and errors delivered as messages.

The worker thread only calls the service and posts a message (it never touches a widget);
the widget that asked handles the message on the event loop. Errors a user can act on
(TwinsyncError, SyncthingError) reach the screen as an error notification with their
message; anything else too, with its type, and goes to the log: never a traceback.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from textual.message import Message
from textual.worker import Worker, get_current_worker

from folders.errors import TwinsyncError
from syncthing.errors import SyncthingError

logger = logging.getLogger(__name__)


class ServiceDone(Message):
    """A service call returned `value`; `then` shows it."""

    def __init__(self, then: Callable[[Any], object] | None, value: Any, key: str = "") -> None:
        super().__init__()
        self.then = then
        self.value = value
        self.key = key


class ServiceFailed(Message):
    """A service call raised; `text` is the sentence to show."""

    def __init__(self, text: str, title: str, after: Callable[[], object] | None, key: str = "") -> None:
        super().__init__()
        self.text = text
        self.title = title
        self.after = after
        self.key = key


def error_text(exc: BaseException) -> str:
    if isinstance(exc, (TwinsyncError, SyncthingError)):
        return str(exc)
    return f"Unexpected {type(exc).__name__}: {exc}"


class ServiceCalls:
    """Mixin for widgets and the app: `call_service` runs one call in a thread worker."""

    def call_service(self, fn: Callable[..., Any], *args: Any, then: Callable[[Any], object] | None = None,
                     group: str = "service", exclusive: bool = True, title: str = "",
                     after_error: Callable[[], object] | None = None, **kwargs: Any) -> Worker:
        """Run `fn(*args, **kwargs)` off the event loop; `then(value)` runs on it after.

        With `exclusive`, a newer call in the same group supersedes an older one, whose
        result is then dropped. `after_error` runs (on the event loop) after a failure.
        A refresh that keeps failing the same way says so once, not on every tick: the same
        error of the same call is shown again only after that call has once succeeded.
        """
        key = f"{id(self)}:{group}:{title}"

        def work() -> None:
            worker = get_current_worker()
            try:
                value = fn(*args, **kwargs)
            except Exception as exc:  # noqa: BLE001 - every failure becomes a notification
                if not isinstance(exc, (TwinsyncError, SyncthingError)):
                    logger.exception("%s failed", getattr(fn, "__name__", fn))
                message: Message = ServiceFailed(error_text(exc), title, after_error, key)
            else:
                message = ServiceDone(then, value, key)
            if not worker.is_cancelled:
                self.post_message(message)  # thread-safe; dropped if the widget is gone

        return self.run_worker(work, thread=True, group=group, exclusive=exclusive,  # type: ignore[attr-defined]
                               exit_on_error=False, name=getattr(fn, "__name__", "service call"))

    def busy(self, group: str) -> bool:
        """Whether a call of `group` that this widget started is still running."""
        return any(w.group == group and w.node is self and w.is_running
                   for w in self.workers)  # type: ignore[attr-defined]

    def _errors_shown(self) -> dict[str, str]:
        """The error each call last showed, kept on the app for every widget: call key → text."""
        app = self.app  # type: ignore[attr-defined]
        if not hasattr(app, "errors_shown"):
            app.errors_shown = {}
        return app.errors_shown

    def _shows_results(self) -> bool:
        """Not while the app shuts down, nor once the demo it watches has ended: its nodes
        are stopping, and what a call says now is that, not news."""
        app = self.app  # type: ignore[attr-defined]
        return app.is_running and not app.ended

    def on_service_done(self, message: ServiceDone) -> None:
        message.stop()
        if not self._shows_results():
            return
        self._errors_shown().pop(message.key, None)
        if message.then is not None:
            message.then(message.value)

    def on_service_failed(self, message: ServiceFailed) -> None:
        message.stop()
        if not self._shows_results():
            return
        shown = self._errors_shown()
        if shown.get(message.key) != message.text:
            shown[message.key] = message.text
            self.app.notify(message.text, title=message.title or "twinsync", severity="error",  # type: ignore[attr-defined]
                            timeout=12, markup=False)
        if message.after is not None:
            message.after()
