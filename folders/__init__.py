"""Pure node-side logic: the node home layout, keys, invites, frames and traces.

Nothing here starts threads, configures logging or talks to Syncthing; the orchestrator
wires these pieces together.
"""
