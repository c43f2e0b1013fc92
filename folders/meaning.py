"""Nearest by meaning: a compact profile of what a node knows, and questions ranked against
the profiles of its peers (issue 13 §3).

A profile is a bag of hashed features (character n-grams of words padded at their
boundaries, optionally whole words) summed over the node's texts, cut to its strongest
`top_k` features and quantized to one byte each, so it fits in a signed fingerprint in a
few kilobytes. Character n-grams need no model and no download, read Russian and English
alike (Unicode words, casefolded, ё as е), and survive inflection ("томаты", "томатов"),
which whole words do not. The hash is crc32, not Python's `hash()`: every node must map a
feature to the same slot.

Function words of both languages are dropped first (STOPWORDS). Ranking then weighs each
question feature by how few peers' profiles hold it (an IDF over the peers ranked), so
what every node knows counts for little, and normalises like a cosine. Representations
are pluggable: a profile names its representation and version, and a profile this node
cannot compare is ranked last with a reason, never an error. The default was picked from
tests/benchmarks/routing.py (docs/routing.md has the figures).
"""

from __future__ import annotations

import base64
import binascii
import math
import re
import unicodedata
import zlib
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from folders.errors import TwinsyncError, echo

#: Score given to a peer whose profile cannot be compared: below every cosine (0..1).
UNRANKED = -1.0
#: The most entries any profile may carry; larger ones are not ours.
MAX_ENTRIES = 4096
#: Characters of one text (a goal, a frame, a question) that count: a peer's 10 MB question
#: costs what a page does.
MAX_TEXT_CHARS = 4000
_SLOT_LIMIT = 1 << 24  # no representation hashes into more slots
_WORD = re.compile(r"[^\W\d_]+")  # letters of any script; digits and "_" separate words
#: Function words of both languages. Dropped before n-grams are taken: they are in every
#: question ("how", "как", "сколько") but only in some profiles, where an IDF over a handful
#: of peers would mistake them for knowledge (the routing benchmark: +4 to +6 points).
STOPWORDS = frozenset("""
a about after all also am an and any are as at be been before being but by can could did do
does doing for from get got had has have how i if in into is it its just me more most much
my no not of on or our out over should so some than that the their them then there these
they this to too up very was we what when where which who why will with would you your
а без бы был была были было быть в вам вас ведь во вот все всё всего вы где да даже для до
его ее её если есть еще ещё же за зачем и из или им их к как какая какие каким какое какой
когда кто ли либо лучше между меня мне много можно мой моя мы на над надо нам нас не него
нет ни но ну нужно о об он она они оно от по под после почему при про раз с сам свой себя
сколько со так такой там то тоже только ты у уже чем что чтобы эта эти это этот я
""".split())


class ProfileError(TwinsyncError):
    """A profile's data is malformed; the message names what is wrong."""


@dataclass(frozen=True)
class Representation:
    """How texts become features. `version` changes whenever the features of a text would,
    so profiles built by different code are never compared as if they were alike."""

    name: str
    version: int
    sizes: tuple[int, ...] = (5,)  # character n-gram lengths over " word "
    words: bool = False  # whole words as features too
    stopwords: bool = True  # drop STOPWORDS first
    bits: int = 18  # features hash into 2**bits slots
    top_k: int = 1024  # strongest features a profile keeps

    def __post_init__(self) -> None:
        if not 0 < self.bits <= 24 or not 0 < self.top_k <= MAX_ENTRIES:
            raise ValueError(f"representation {self.name!r}: bits must be 1..24 and top_k "
                             f"1..{MAX_ENTRIES}, as profiles are packed")

    def features(self, text: str) -> dict[int, float]:
        """Sublinear term weights (1 + log tf), L2-normalised, so a long text does not
        outweigh many short ones in a profile. NFKC first: a decomposed "й" (и + combining
        breve, as macOS writes file names) must not split its word in two."""
        counts: Counter[str] = Counter()
        text = unicodedata.normalize("NFKC", text[:MAX_TEXT_CHARS]).casefold().replace("ё", "е")
        for word in _WORD.findall(text):
            if self.stopwords and word in STOPWORDS:
                continue
            if self.words:
                counts["w" + word] += 1
            padded = f" {word} "
            for n in self.sizes:
                counts.update(padded[i:i + n] for i in range(max(1, len(padded) - n + 1)))
        mask = (1 << self.bits) - 1
        slots: dict[int, float] = {}
        for gram, count in counts.items():
            slot = zlib.crc32(gram.encode("utf-8")) & mask
            slots[slot] = slots.get(slot, 0.0) + 1.0 + math.log(count)
        norm = math.sqrt(sum(w * w for w in slots.values()))
        return {slot: w / norm for slot, w in slots.items()} if norm else {}


#: The candidates tests/benchmarks/routing.py measures; a node ranks with DEFAULT.
REGISTRY: dict[str, Representation] = {r.name: r for r in (
    Representation("chargram-5", 1, sizes=(5,)),
    Representation("chargram-3", 1, sizes=(3,)),
    Representation("chargram-4", 1, sizes=(4,)),
    Representation("chargram-34", 1, sizes=(3, 4)),
    Representation("chargram-45", 1, sizes=(4, 5)),
    Representation("chargram-5-words", 1, sizes=(5,), words=True),
    Representation("chargram-5-k256", 1, sizes=(5,), top_k=256),
    Representation("chargram-5-k512", 1, sizes=(5,), top_k=512),
    Representation("chargram-5-12bits", 1, sizes=(5,), bits=12),
    Representation("chargram-5-all-words", 1, sizes=(5,), stopwords=False),
    Representation("chargram-34-all-words", 1, sizes=(3, 4), stopwords=False),
    Representation("words", 1, sizes=(), words=True),
)}
DEFAULT = REGISTRY["chargram-5"]


@dataclass(frozen=True)
class Profile:
    """What a node knows, as its representation's strongest features: `entries` are
    (slot, weight 1..255) sorted by slot; `texts` is how many texts went in."""

    representation: str
    version: int
    texts: int
    entries: tuple[tuple[int, int], ...]

    def to_dict(self) -> dict[str, Any]:
        """`vector` is base64 of, per entry, the gap from the previous slot as a LEB128
        varint, then the weight byte: about 2.6 bytes an entry instead of 4."""
        packed = bytearray()
        previous = -1
        for slot, weight in self.entries:
            gap = slot - previous - 1
            previous = slot
            while gap >= 0x80:
                packed.append(0x80 | (gap & 0x7F))
                gap >>= 7
            packed += bytes((gap, weight))
        return {"representation": self.representation, "version": self.version,
                "texts": self.texts, "vector": base64.b64encode(packed).decode("ascii")}

    @classmethod
    def from_dict(cls, data: Any) -> Profile:
        """Any representation name is accepted (a newer peer's is compared as unknown, not
        refused); the shape of the data must be right."""
        if not isinstance(data, dict) or set(data) != {"representation", "version", "texts",
                                                       "vector"}:
            raise ProfileError("the profile is not an object with exactly representation, "
                               "version, texts and vector")
        name, version, texts, vector = (data["representation"], data["version"],
                                        data["texts"], data["vector"])
        if not isinstance(name, str) or not 0 < len(name) <= 64:
            raise ProfileError(f"the profile's representation {echo(name)} is not a short name")
        for what, value in (("version", version), ("texts", texts)):
            if type(value) is not int or value < 0:
                raise ProfileError(f"the profile's {what} {echo(value)} is not a count")
        if not isinstance(vector, str) or len(vector) > 4 * math.ceil(5 * MAX_ENTRIES / 3):
            raise ProfileError("the profile's vector is not a string of at most "
                               f"{MAX_ENTRIES} entries")
        try:
            packed = base64.b64decode(vector, validate=True)
        except (binascii.Error, ValueError):
            raise ProfileError("the profile's vector is not base64") from None
        return cls(name, version, texts, _unpack(packed))

    def vector(self) -> dict[int, int]:
        """The entries as a slot → weight map, made once per profile (it is immutable)."""
        cached = self.__dict__.get("_vector")
        if cached is None:
            cached = dict(self.entries)
            object.__setattr__(self, "_vector", cached)
        return cached

    def norm(self) -> float:
        cached = self.__dict__.get("_norm")
        if cached is None:
            cached = math.sqrt(sum(w * w for _, w in self.entries))
            object.__setattr__(self, "_norm", cached)
        return cached

    def compatible(self, representation: Representation) -> str | None:
        """None when this profile can be compared under `representation`; else why not."""
        if (self.representation, self.version) != (representation.name, representation.version):
            return (f"its profile uses {echo(self.representation)} version {self.version}, "
                    f"this node ranks with {representation.name!r} version "
                    f"{representation.version}")
        if len(self.entries) > representation.top_k:
            # More than the representation keeps: a profile stuffed to attract every question.
            return (f"its profile holds {len(self.entries)} entries, more than the "
                    f"{representation.top_k} its representation keeps")
        return None


def _unpack(packed: bytes) -> tuple[tuple[int, int], ...]:
    entries = []
    slot, i = -1, 0
    while i < len(packed):
        gap = shift = 0
        while True:
            if i >= len(packed) or shift > 21:
                raise ProfileError("the profile's vector is truncated or has a gap too long")
            byte = packed[i]
            i += 1
            gap |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                break
        slot += gap + 1
        if i >= len(packed):
            raise ProfileError("the profile's vector is truncated or has a gap too long")
        if slot >= _SLOT_LIMIT or len(entries) >= MAX_ENTRIES:
            raise ProfileError("the profile's vector goes beyond its slots or entries")
        if packed[i] == 0:
            raise ProfileError("the profile's vector has a zero weight")
        entries.append((slot, packed[i]))
        i += 1
    return tuple(entries)


def profile_of(texts: Iterable[str], representation: Representation = DEFAULT) -> Profile:
    """Sum each text's features, keep the `top_k` strongest (ties by slot), quantize to
    1..255 of the strongest."""
    total: dict[int, float] = {}
    count = 0
    for text in texts:
        count += 1
        for slot, weight in representation.features(text).items():
            total[slot] = total.get(slot, 0.0) + weight
    kept = sorted(total.items(), key=lambda item: (-item[1], item[0]))[:min(
        representation.top_k, MAX_ENTRIES)]
    top = kept[0][1] if kept else 0.0
    entries = tuple(sorted((slot, max(1, min(255, round(255 * weight / top))))
                           for slot, weight in kept))
    return Profile(representation.name, representation.version, count, entries)


def body_text(body: Any, limit: int = 2000) -> str:
    """The strings of a frame body (values, not keys: keys are the same on every node), in
    document order, cut at `limit` characters so one huge frame costs no more than a page.
    Walked with a stack, not recursion: a body can be deep."""
    pieces: list[str] = []
    size = 0
    stack = [body]
    while stack and size < limit:
        value = stack.pop()
        if isinstance(value, str):
            pieces.append(value)
            size += len(value) + 1
        elif isinstance(value, dict):
            stack.extend(reversed(list(value.values())))
        elif isinstance(value, list):
            stack.extend(reversed(value))
    return " ".join(pieces)[:limit]


def rank_peers(question: str, profiles: Mapping[str, Profile | None],
               representation: Representation = DEFAULT) -> list[tuple[str, float]]:
    """Peers best first by the question's idf-weighted similarity to each profile; ties by
    name. Peers without a comparable profile (None: an older fingerprint; another
    representation) follow with score UNRANKED, by name; `unranked` says why.

    The idf weighs only the question's side (squared, as if both sides were weighted) and
    the profile keeps its own norm, so a ranking costs O(question features x peers), not
    O(profile entries x peers): about 0.1 ms for six peers instead of several.
    """
    usable = {peer: p for peer, p in profiles.items()
              if p is not None and p.compatible(representation) is None}
    vectors = {peer: p.vector() for peer, p in usable.items()}
    asked = representation.features(question)
    peers = len(vectors)
    weighted = {}
    for slot, weight in asked.items():
        holders = sum(slot in vector for vector in vectors.values())
        weighted[slot] = weight * (math.log((1 + peers) / (1 + holders)) + 1.0)
    asked_norm = math.sqrt(sum(w * w for w in weighted.values()))
    scored = []
    for peer, vector in vectors.items():
        norm = usable[peer].norm()
        dot = sum(w * w / asked[slot] * vector[slot]
                  for slot, w in weighted.items() if slot in vector)
        score = min(1.0, dot / (asked_norm * norm)) if asked_norm and norm else 0.0
        scored.append((peer, round(score, 9)))
    scored.sort(key=lambda item: (-item[1], item[0]))
    return scored + [(peer, UNRANKED) for peer in sorted(set(profiles) - set(usable))]


def unranked(profiles: Mapping[str, Profile | None],
             representation: Representation = DEFAULT) -> dict[str, str]:
    """Why each peer that `rank_peers` puts last cannot be compared, as a sentence."""
    reasons = {}
    for peer, profile in sorted(profiles.items()):
        why = ("its fingerprint carries no profile (an older twinsync)" if profile is None
               else profile.compatible(representation))
        if why is not None:
            reasons[peer] = f"{peer} is ranked last: {why}."
    return reasons
