"""A child of `StepHashes`: recompute the hashes of some rowid ranges of a private copy.

    python -m folders.stephashes <db> <first rowid> <last rowid> [<first> <last> ...]

prints {"bad": <hash>} for a step in the ranges whose hash does not recompute, else
{"bad": null}. It maps the file into memory, so it is only run on a copy nothing truncates.
"""

from __future__ import annotations

import json
import sqlite3
import sys

from folders.stepsfile import add_step_hash_function, first_bad_step, map_private_copy, readonly_uri


def main(argv: list[str]) -> None:
    db_path, bounds = argv[0], [int(bound) for bound in argv[1:]]
    conn = sqlite3.connect(readonly_uri(db_path), uri=True)
    try:
        map_private_copy(conn)
        add_step_hash_function(conn)
        print(json.dumps({"bad": first_bad_step(conn, list(zip(bounds[::2], bounds[1::2])))}))
    finally:
        conn.close()


if __name__ == "__main__":
    main(sys.argv[1:])
