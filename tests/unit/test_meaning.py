"""Nearest by meaning: profiles and the ranking of peers (folders/meaning.py)."""

from __future__ import annotations

import base64
import json
import random
import unicodedata

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from folders.meaning import (DEFAULT, MAX_ENTRIES, MAX_TEXT_CHARS, REGISTRY, UNRANKED, Profile, ProfileError, body_text,
                             Representation, profile_of, rank_peers, unranked)

# Letters of both languages, spaces and some punctuation: what goals and questions are made of.
TEXT = st.text(alphabet=st.sampled_from("abcdefghijklmnopqrstuvwxyzабвгдеёжзийклмнопрстуфхцчшщыьэюяABCЖЯ ,.?-/"),
               max_size=80)
NAMES = st.sampled_from(["alpha", "bravo", "charlie", "delta", "echo", "foxtrot"])
PROFILES = st.dictionaries(NAMES, st.lists(TEXT, max_size=4).map(profile_of), min_size=1, max_size=6)


@settings(max_examples=60, deadline=None)
@given(TEXT, PROFILES)
def test_ranking_is_deterministic_and_order_free(question, profiles):
    expected = rank_peers(question, profiles)
    assert rank_peers(question, profiles) == expected
    shuffled = list(profiles.items())
    random.Random(len(question)).shuffle(shuffled)
    assert rank_peers(question, dict(shuffled)) == expected
    assert sorted(peer for peer, _ in expected) == sorted(profiles)
    scores = [score for _, score in expected]
    assert scores == sorted(scores, reverse=True)
    assert all(0.0 <= s <= 1.0 + 1e-9 for s in scores)


@settings(max_examples=60, deadline=None)
@given(TEXT, PROFILES)
def test_a_profile_built_from_the_question_itself_ranks_first(question, others):
    assume(DEFAULT.features(question))  # not only function words ("the", "как")
    profiles = {**others, "zulu-exact": profile_of([question])}
    ranking = rank_peers(question, profiles)
    exact = dict(ranking)["zulu-exact"]
    # First, or tied (within quantization) with a peer whose texts give the same features.
    assert exact >= ranking[0][1] - 0.02
    assert exact > 0.9


@settings(max_examples=60, deadline=None)
@given(st.lists(TEXT, max_size=20), st.sampled_from(sorted(REGISTRY)))
def test_profile_round_trips_through_json_and_stays_small(texts, name):
    profile = profile_of(texts, REGISTRY[name])
    data = json.loads(json.dumps(profile.to_dict()))
    assert Profile.from_dict(data) == profile
    assert len(profile.entries) <= REGISTRY[name].top_k
    assert all(a[0] < b[0] for a, b in zip(profile.entries, profile.entries[1:]))


def test_a_large_profile_is_a_few_kilobytes():
    words = [f"слово{chr(0x430 + i % 32)}{chr(0x61 + i % 26)}topic{i}" for i in range(5000)]
    profile = profile_of(words)
    assert len(profile.entries) == DEFAULT.top_k
    assert len(json.dumps(profile.to_dict())) < 4 * 1024


def test_russian_and_english_questions_find_their_node():
    profiles = {
        "garden": profile_of(["Полив томатов в теплице", "tomato blight treatment", "garden/tomatoes"]),
        "energy": profile_of(["heat pump efficiency in winter", "солнечные панели на крыше"]),
        "car": profile_of(["замена масла в двигателе", "winter tyres pressure", "car/service"]),
    }
    assert rank_peers("Как часто поливать томаты?", profiles)[0][0] == "garden"
    assert rank_peers("is my heat pump efficient enough?", profiles)[0][0] == "energy"
    assert rank_peers("когда менять масло в двигателе", profiles)[0][0] == "car"


def test_profiles_that_cannot_be_compared_rank_last_with_a_reason():
    other = Representation("chargram-9", 1, sizes=(9,))
    profiles = {"new": profile_of(["tomatoes"]), "old": None,
                "alien": profile_of(["tomatoes"], other),
                "later": Profile(DEFAULT.name, DEFAULT.version + 1, 1, ((1, 255),))}
    ranking = rank_peers("tomatoes", profiles)
    assert ranking[0][0] == "new" and ranking[0][1] > 0.9
    assert ranking[1:] == [("alien", UNRANKED), ("later", UNRANKED), ("old", UNRANKED)]
    reasons = unranked(profiles)
    assert set(reasons) == {"alien", "later", "old"}
    assert "older twinsync" in reasons["old"]
    assert "'chargram-9' version 1" in reasons["alien"]


def test_empty_question_and_empty_profiles_do_not_crash():
    profiles = {"b": profile_of([]), "a": profile_of(["x"])}
    assert rank_peers("", profiles) == [("a", 0.0), ("b", 0.0)]
    assert rank_peers("?!", {}) == []


def _vector(raw: bytes) -> dict:
    return {"representation": "x", "version": 1, "texts": 1, "vector": base64.b64encode(raw).decode()}


@pytest.mark.parametrize("data, why", [
    ([], "not an object"),
    ({"representation": "x", "version": 1, "texts": 1}, "not an object"),
    ({"representation": "", "version": 1, "texts": 1, "vector": ""}, "short name"),
    ({"representation": "x", "version": -1, "texts": 1, "vector": ""}, "version"),
    ({"representation": "x", "version": 1, "texts": True, "vector": ""}, "texts"),
    ({"representation": "x", "version": 1, "texts": 1, "vector": "%%%%"}, "not base64"),
    (_vector(b"\x05"), "truncated"),
    (_vector(b"\x85"), "truncated"),
    (_vector(b"\xff\xff\xff\xff\x7f\x01"), "too long"),
    (_vector(b"\xff\xff\xff\x0f\x01"), "beyond"),
    (_vector(b"\x00\x01" * (MAX_ENTRIES + 1)), "at most|beyond"),
    (_vector(b"\x00\x01\x03\x00"), "zero weight"),
])
def test_malformed_profiles_are_refused_with_a_sentence(data, why):
    with pytest.raises(ProfileError, match=why):
        Profile.from_dict(data)


def test_body_text_reads_values_in_order_and_is_bounded():
    body = {"text": "полив томатов", "tags": ["garden", {"note": "evening"}], "n": 3, "ok": True}
    assert body_text(body) == "полив томатов garden evening"
    deep: object = "bottom"
    for _ in range(5000):
        deep = [deep]
    assert body_text(deep) == "bottom"
    assert len(body_text({"a": "x" * 10_000, "b": "y" * 10})) == 2000


@settings(max_examples=100, deadline=None)
@given(st.dictionaries(st.integers(0, (1 << 24) - 1), st.integers(1, 255), max_size=200))
def test_any_entries_round_trip_through_the_packed_vector(weights):
    profile = Profile("x", 3, 7, tuple(sorted(weights.items())))
    assert Profile.from_dict(json.loads(json.dumps(profile.to_dict()))) == profile


def test_the_same_words_give_the_same_features_however_they_are_written():
    composed = "Какой ёмкости аккумулятор? Straße"
    assert DEFAULT.features(unicodedata.normalize("NFD", composed)) == DEFAULT.features(composed)
    assert DEFAULT.features("КАКОЙ ЕМКОСТИ АККУМУЛЯТОР? STRASSE") == DEFAULT.features(composed)


def test_a_huge_question_costs_what_a_page_does():
    page = "полив томатов tomato watering " * (MAX_TEXT_CHARS // 30 + 1)
    assert DEFAULT.features(page * 2500) == DEFAULT.features(page)


def test_a_profile_stuffed_beyond_its_representation_ranks_last():
    stuffed = Profile(DEFAULT.name, DEFAULT.version, 1,
                      tuple((slot, 255) for slot in range(DEFAULT.top_k + 1)))
    assert Profile.from_dict(stuffed.to_dict()) == stuffed  # well-formed, but not honest
    ranking = rank_peers("tomatoes", {"stuffed": stuffed, "honest": profile_of(["tomatoes"])})
    assert ranking == [("honest", ranking[0][1]), ("stuffed", UNRANKED)]
    assert "more than the 1024" in unranked({"stuffed": stuffed})["stuffed"]
