"""Everything twinsync knows about Syncthing: its REST API, a managed `syncthing serve`,
its config file and its folder and conflict-copy conventions. Imports nothing of ours."""
