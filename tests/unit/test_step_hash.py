"""The fast path of step_hash writes exactly the bytes canonical_json would: every node must
compute the same hash for the same step, whichever path it took."""

from __future__ import annotations

import hashlib

from hypothesis import given, settings, strategies as st

from folders.trace import canonical_json, step_hash

text = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=40)


@settings(max_examples=500, deadline=None)
@given(session=text, goal=text, parent=st.none() | text, author=text, ts=text, kind=text, content=text)
def test_fast_path_equals_canonical_json(session, goal, parent, author, ts, kind, content):
    expected = "sha256:" + hashlib.sha256(canonical_json(
        {"session": session, "goal": goal, "parent": parent, "author": author, "ts": ts, "kind": kind,
         "content": content})).hexdigest()
    assert step_hash(session, goal, parent, author, ts, kind, content) == expected


def test_non_text_values_take_the_general_path():
    assert step_hash("s", "g", None, "a", "t", "k", 5) == "sha256:" + hashlib.sha256(canonical_json(
        {"session": "s", "goal": "g", "parent": None, "author": "a", "ts": "t", "kind": "k", "content": 5})).hexdigest()
