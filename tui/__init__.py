"""The Textual TUI (issue 6): screens over orchestrator's service layer; it opens no git, SQLite or HTTP itself."""
