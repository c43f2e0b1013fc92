"""Syncthing 2.x's migration server, recognised from its answer alone."""

from syncthing.migration import is_migration_answer

#: Exactly what cmd/syncthing/main.go `migratingAPI` (v2.0 to v2.1) writes: the banner, a
#: blank line, then its log lines so far.
MIGRATION_BODY = (b"*** Database migration in progress ***\n\n"
                  b"2025-08-12 10:00:01 INF Migrating database (folder=default)\n")


def test_the_migration_servers_answer_is_recognised():
    assert is_migration_answer("text/plain; charset=utf-8", MIGRATION_BODY)
    assert is_migration_answer("text/plain", b"*** Database migration in progress ***\n\n")


def test_api_answers_and_other_text_are_not_migration():
    assert not is_migration_answer("application/json", b'{"ping": "pong"}')
    assert not is_migration_answer("text/html", MIGRATION_BODY)
    assert not is_migration_answer("text/plain", b"404 page not found\n")
    assert not is_migration_answer(None, MIGRATION_BODY)
