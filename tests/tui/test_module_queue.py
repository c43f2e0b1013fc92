"""Modules in the Queue tab: beside conflicts and forks, approved or rejected with the same
service call as `twinsync module approve|reject`, a refused one explained, not decided."""

from __future__ import annotations

from dataclasses import replace

from orchestrator.modules import ModuleSummary, ModuleVersion
from tests.tui.fakes import FakeService
from tests.tui.helpers import until
from tests.tui.test_app import _notes, _run
from tui.dialogs import ConfirmScreen

V1 = ModuleVersion(1, "notes", "1.0", "sha256:" + "1" * 64, "desktop", "reason.py", ("plans",), "c1" * 20,
                   "approved", None, None, "2026-11-25T08:00:00Z", "laptop", "2026-11-25T08:00:00Z")
V2 = replace(V1, id=2, version="1.1", hash="sha256:" + "2" * 64, status="awaiting", created="2026-11-25T09:00:00Z",
             decided_by=None, decided_at=None)
REFUSED = ModuleVersion(3, "evil", None, None, None, None, (), None, "refused", "unlisted",
                        "modules.shared/evil/x.py is not listed in the manifest of evil 1; nothing of the module runs "
                        "until it is gone.", "2026-11-25T08:30:00Z", None, None)


class ModuleService(FakeService):
    def queue(self, *, history: bool = False):
        data = super().queue(history=history)
        return replace(data, conflicts=[], forks=[], modules=[ModuleSummary("notes", V1, (V2,), None),
                                                              ModuleSummary("evil", None, (), REFUSED)])

    def decide_module(self, name: str, *, approve: bool) -> ModuleVersion:
        self._record("decide_module", name, approve)
        return replace(V2, status="approved" if approve else "rejected")


def test_module_items_are_decided_in_the_queue_and_refusals_explained():
    service = ModuleService()

    async def scenario(app, pilot):
        await pilot.press("2")
        queue = app.pane("queue")
        await until(pilot, lambda: queue.entries, "the queue")
        assert [e.kind for e in queue.entries.values()] == ["module", "module"]
        assert queue.selected().module.name == "notes"
        assert "awaiting approval: 1.1" == queue.selected().state
        await pilot.press("a")
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen), "the dialog")
        assert "module notes 1.1 by desktop runs on this node" in app.screen.body
        await pilot.press("y")
        await until(pilot, lambda: service.calls, "the approval")
        assert service.calls == [("decide_module", "notes", True)]
        await until(pilot, lambda: ("information", "module notes 1.1: approved") in _notes(app), "the result")

        await pilot.press("down", "a")  # refused: nothing to approve, it says why
        await until(pilot, lambda: any("refused (unlisted)" in m for _, m in _notes(app)), "the explanation")
        assert not isinstance(app.screen, ConfirmScreen) and len(service.calls) == 1

    _run(service, scenario)
