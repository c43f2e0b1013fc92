"""Reasoning can start on any node (DESIGN §8 "reason"): the node's reasoner, a configured
command or an approved module, is run in the sandbox on a goal; what it prints becomes a
session in trace.db, which is published only once it passes COHERENCE-CHECK.

The protocol, for anyone writing a reasoner: the program reads one JSON object on stdin,
`{"twinsync": 1, "goal": "...", "node": "laptop"}` (and `"context": {...}` when the caller
gives one), and prints one JSON object on stdout,
`{"steps": [{"kind": "observation", "content": "..."}, ...], "conclusion": "..."}`; step
kinds are trace.db's (observation, inference, hypothesis, question, action). Anything else
(a crash, a hang, too much memory or output, output that is not that object) leaves a
shadow session whose last step says why, and the caller gets a `Reasoning` saying so: a
reasoner never takes the daemon down.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from collections.abc import Mapping
from typing import Any

from folders.errors import TwinsyncError, echo
from folders.trace import KINDS, TraceDB, chain_steps, coherence_check
from orchestrator import sandbox
from orchestrator.modules import program_of
from orchestrator.node import Node
from orchestrator.recovery import publish_now
from orchestrator.sandbox import Program

logger = logging.getLogger(__name__)

PROTOCOL_VERSION = 1
MAX_STEPS = 200
MAX_CONTENT = 64 * 1024
#: Kinds a reasoner may print; a conclusion is its own field, decisions are people's.
STEP_KINDS = KINDS - {"conclusion", "decision"}
#: The outcome when the steps were recorded but COHERENCE-CHECK refused the session.
INCOHERENT = "incoherent"


class ReasonerError(TwinsyncError):
    """No reasoner is configured, or the configured one cannot be used on this node."""


@dataclass(frozen=True)
class Reasoning:
    """One run of the reasoner on a goal. `outcome` is ok, timeout, memory, crashed, garbage
    or incoherent; `status` is the session's: "published" when it passed COHERENCE-CHECK
    ("finished" when asked not to publish yet), otherwise "shadow" (kept on this node only,
    its last step saying `reason`)."""

    goal: str
    session: str
    status: str
    outcome: str
    conclusion: str | None
    reason: str
    steps: int
    reasoner: str
    elapsed_ms: float

    @property
    def ok(self) -> bool:
        return self.status == "published"


def configured_program(node: Node) -> Program:
    """The node's `[reasoner]`: a command, or an approved module by name."""
    settings = node.config.reasoner
    if settings.command and settings.module:
        raise ReasonerError(f"[reasoner] in {node.layout.config} names both a command and a module; keep one.")
    if settings.command:
        return Program(tuple(settings.command), f"reasoner {settings.command[0]}")
    if settings.module:
        return program_of(node, settings.module)
    raise ReasonerError(f"This node has no reasoner; set [reasoner] command = [\"PROGRAM\", ...] or "
                        f"module = \"NAME\" in {node.layout.config}.")


def reason(node: Node, goal: str, *, timeout_s: float | None = None, program: Program | None = None,
           context: Mapping[str, Any] | None = None, publish: bool = True) -> Reasoning:
    """Run the reasoner on `goal`, record its steps as a new session of this node, check the
    session and publish it at once when it is coherent. `timeout_s` shortens (never lengthens)
    `[reasoner] timeout_s`; `program` overrides the configured reasoner (tests, the demo);
    `context` (JSON values) travels to the reasoner in the request; `publish=False` leaves a
    coherent session finished for the daemon's next scheduled publish (the demo's pace).
    Raises ReasonerError when no reasoner is configured and ModuleQueueError when the
    configured module is not approved here (both TwinsyncError: nothing ran); whatever the
    reasoner itself does ends in a Reasoning."""
    if not isinstance(goal, str) or not goal.strip():
        raise ReasonerError(f"Goal {echo(goal)} is empty; give a goal in words, e.g. 'plan the week'.")
    program = program or configured_program(node)
    settings = node.config.reasoner
    limit = settings.timeout_s if timeout_s is None else min(timeout_s, settings.timeout_s)
    started = time.perf_counter()
    request = json.dumps({"twinsync": PROTOCOL_VERSION, "goal": goal, "node": node.name,
                          **({"context": dict(context)} if context else {})}).encode()
    result = sandbox.run(program.argv, stdin=request, env=dict(program.env), what=program.label,
                         limits=sandbox.Limits(timeout_s=limit, memory_mb=settings.memory_mb))
    outcome, reason_text = result.status, result.reason
    parsed = None
    if result.ok:
        try:
            parsed = parse_output(result.stdout, program.label)
        except ReasonerError as exc:
            outcome, reason_text = sandbox.GARBAGE, str(exc)
    with TraceDB(node.layout.trace_db, node.name) as trace:
        session = trace.start_session(goal)
        if parsed is None:
            trace.append(session, "observation", f"{program.label} gave no answer ({outcome}): {reason_text}")
            conclusion = None
        else:
            steps, conclusion = parsed
            for kind, content in steps:
                trace.append(session, kind, content)
            trace.finish(session, conclusion)
            problems = coherence_check(trace, session, chain_steps(trace, session))
            if problems:
                outcome, reason_text = INCOHERENT, problems[0].message
                trace.reopen(session)
        count = len(trace.session_steps(session))
    status = "shadow"
    if outcome == sandbox.OK and publish:
        publish_now(node)
        status = "published"
    elif outcome == sandbox.OK:
        status = "finished"
    else:
        logger.warning("%s on goal %s: %s (shadow session %s)", program.label, echo(goal), reason_text, session)
    return Reasoning(goal, session, status, outcome, conclusion, reason_text, count, program.label,
                     (time.perf_counter() - started) * 1000)


def parse_output(stdout: bytes, label: str) -> tuple[list[tuple[str, str]], str]:
    """The reasoner's answer as (kind, content) steps and a conclusion; ReasonerError with
    one sentence for anything else."""
    try:
        data: Any = json.loads(stdout.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise ReasonerError(f"{label} printed something that is not one JSON object "
                            f"(it began {echo(stdout[:60].decode('utf-8', 'replace'))}).") from None
    if not isinstance(data, dict) or not isinstance(data.get("conclusion"), str) or not data["conclusion"].strip():
        raise ReasonerError(f"{label} printed JSON without a \"conclusion\" text; print "
                            "{\"steps\": [...], \"conclusion\": \"...\"}.")
    raw = data.get("steps", [])
    if not isinstance(raw, list) or len(raw) > MAX_STEPS:
        raise ReasonerError(f"{label} printed \"steps\" that are not a list of at most {MAX_STEPS} steps.")
    steps = []
    for number, step in enumerate(raw, 1):
        if not isinstance(step, dict) or step.get("kind") not in STEP_KINDS or not isinstance(step.get("content"), str):
            raise ReasonerError(f"{label} printed step {number} without a known \"kind\" "
                                f"({', '.join(sorted(STEP_KINDS))}) and a \"content\" text.")
        steps.append((step["kind"], step["content"]))
    if any(len(content) > MAX_CONTENT for _, content in steps) or len(data["conclusion"]) > MAX_CONTENT:
        raise ReasonerError(f"{label} printed a step longer than {MAX_CONTENT} characters.")
    return steps, data["conclusion"]
