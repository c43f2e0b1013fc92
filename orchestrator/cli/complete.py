"""Shell completion of what commands take back: queue item numbers, snapshot names, fork
ids, frame ids, module and peer names (`twinsync --install-completion` sets it up).

Each reads the node home the command line names so far (`--home`, else $TWINSYNC_HOME, else
the default) and offers nothing when it cannot: a completion runs inside the user's prompt,
where an error message or a wait on Syncthing would be worse than no suggestion."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import typer

from orchestrator.cli.common import default_home
from orchestrator.node import Node

Suggestions = list[tuple[str, str]]


@contextmanager
def _node(ctx: typer.Context) -> Iterator[Node]:
    home = ctx.params.get("home") or default_home()
    logging.disable(logging.CRITICAL)  # nothing may reach the prompt
    try:
        with Node.open(Path(home), timeout=0.5) as node:
            yield node
    finally:
        logging.disable(logging.NOTSET)


def _quiet(list_: Callable[[Node], Suggestions]) -> Callable[[typer.Context, str], Suggestions]:
    def complete(ctx: typer.Context, incomplete: str) -> Suggestions:
        try:
            with _node(ctx) as node:
                return [(value, help_) for value, help_ in list_(node) if value.startswith(incomplete)]
        except Exception:  # noqa: BLE001 - any failure means "no suggestion", never a traceback
            return []
    complete.__doc__ = list_.__doc__
    return complete


@_quiet
def queue_items(node: Node) -> Suggestions:
    """Open queue items, with what each is about."""
    from orchestrator import frames

    return [(str(i.id), f"{i.kind} {i.frame or i.path}") for i in frames.list_conflicts(node, shows="open")]


@_quiet
def snapshot_names(node: Node) -> Suggestions:
    """Every node's snapshots here, newest first."""
    from orchestrator import recovery

    return [(s.manifest_path.stem, f"{s.node}, {s.rows} steps") for s in recovery.snapshots(node)]


@_quiet
def fork_ids(node: Node) -> Suggestions:
    """Forked sessions, with their goal."""
    from orchestrator import traces

    return [(f.id, f.goal) for f in traces.forks(node)]


@_quiet
def frame_ids(node: Node) -> Suggestions:
    """Frames on disk (valid ones), with their author."""
    from orchestrator import frames

    return [(f.id, f.author or "") for f in frames.list_frames(node) if f.ok and f.id]


@_quiet
def module_names(node: Node) -> Suggestions:
    """Modules this node knows."""
    from orchestrator import modules

    return [(m.name, "awaiting approval" if m.awaiting else "") for m in modules.list_modules(node)]


@_quiet
def peer_names(node: Node) -> Suggestions:
    """Trusted peers by node name."""
    return [(name, peer.device_id[:7]) for name, peer in sorted(node.peers().items())]
