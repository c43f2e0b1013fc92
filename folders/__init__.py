"""Pure node-side logic: the node home layout, keys, invites, frames and traces.

Nothing here configures logging or talks to Syncthing, and nothing keeps a thread or a
process running: the few started here (a restore's copy and its step-hash children, a
merge's rehash) end inside the call that started them. The orchestrator wires these
pieces together.
"""
