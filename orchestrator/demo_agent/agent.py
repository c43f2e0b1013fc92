"""The demo's reasoning agent, shipped as a twinsync module: `twinsync demo` publishes this
directory as module `demo-agent` (entry `agent:answer`) on node1 and every other node
approves it, so each demo session is reasoned by approved code in the sandbox.

It knows a few goals and their usual answer; every DISSENT_EVERY-th session (the demo
passes its number in the request's context) it disagrees, so consensus has something to
decide. It imports nothing of twinsync: a module runs with its own files only.
"""

GOALS = {
    "plan the week": ("gym on Tuesday", "gym on Monday"),
    "pick a book": ("Dune", "Solaris"),
    "what to cook": ("pasta", "curry"),
    "where to travel": ("the coast", "the mountains"),
}
DISSENT_EVERY = 15


def answer(request: dict) -> dict:
    goal, node = request["goal"], request["node"]
    number = int((request.get("context") or {}).get("n", 0))
    agree, dissent = GOALS.get(goal, ("ask a person", "ask a person"))
    conclusion = dissent if number and number % DISSENT_EVERY == 0 else agree
    return {"steps": [{"kind": "observation", "content": f"{node} looked at {goal!r} ({number})"},
                      {"kind": "inference", "content": f"so: {conclusion}"}],
            "conclusion": conclusion}
