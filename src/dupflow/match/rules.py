"""Match rules: a metric and a threshold, in bits or as a similarity in [0, 1].

One rule is one or more conditions that must all hold (`phash<=8&dhash<=10`); a rule set accepts
a pair when any rule does. Every metric maps its distance onto a similarity in [0, 1] (1 means
identical), so `phash>=0.85` and `phash<=9` name the same rule on 64-bit hashes.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from dupflow.errors import ConfigError

if TYPE_CHECKING:
    import numpy as np

__all__ = [
    "COSINE",
    "DEFAULT_RULES",
    "DEFAULT_RULES_WITH_EMBEDDINGS",
    "DIGESTS",
    "THOROUGH_RULES",
    "VERIFIED",
    "VERIFIED_DEFAULT",
    "VERIFIED_RULES",
    "Condition",
    "Rule",
    "metric_bits",
    "orientable",
    "parse_rule",
    "parse_rules",
    "searches_crops",
]

# Metrics that only match identical values: the file bytes, or the decoded pixels.
DIGESTS = {"exact": "SHA-256 of the file bytes", "pixel": "SHA-256 of the decoded pixels"}
# The cosine similarity of two embeddings: the store's `cnn` column, or the user's own (`--embeddings`).
COSINE = "cosine"

# The shared fraction of two pictures shown by geometric verification of their local features
# (`dupflow.match.verify`): `verified>=0.6`, or bare `verified` for the --min-shared setting.
VERIFIED = "verified"
# Chosen on seed 0 of bench/accuracy.py, reported on seed 1 (bench/results/accuracy.md): crops keeping
# 64% of a picture score 0.64, a window keeping 56% of it 0.56 and a quarter tile 0.25.
VERIFIED_DEFAULT = 0.6

# Defaults measured on edited copies vs distinct photographs (bench/thresholds.py, results in
# bench/results/thresholds.md): byte-identical files, and pHash within 10 of 64 bits. On 494
# distinct pictures (121,771 pairs) pHash<=10 finds 100% of 50% resizes, 99% of JPEG q40
# recompressions and brightness/gamma edits, 94% of 5% crops, 81% of 2-degree rotations, with 2
# false pairs; dHash, aHash and wHash give 247, 1,033 and 1,175 false pairs at the same threshold.
DEFAULT_RULES = ("exact", "phash<=10")
# With embeddings (bench/embeddings.py, results in bench/results/embeddings.md; 1,871 files, 14,280 true
# pairs): pair recall 0.640 against 0.455 for the hash rules alone, at precision 0.979 (0.982), and 3 of
# 43 pairs of overlapping crops of one photograph (hard negatives) matched instead of 1. Cosine alone
# at 0.93 catches flips and larger crops; with dHash loosely agreeing, 0.85 catches the crops, rotations
# and re-compositions that pHash<=10 misses, while cosine alone at 0.85 would give 20x the false pairs.
DEFAULT_RULES_WITH_EMBEDDINGS = ("exact", "phash<=10", "cosine>=0.85&dhash<=20", "cosine>=0.93")

# The default for a store with local features (the orb encoder, default since this release): tight hashes as
# they stand, and loose candidates from pHash (every orientation, and the windows' pHashes: crops) accepted
# only where verification shows the shared part (bench/results/accuracy.md).
VERIFIED_RULES = ("exact", "phash<=10", "phash<=16&verified")

# The thorough preset (needs the orb and cnn encoders): tight hashes as they stand, and loose candidates from
# pHash (every orientation) and the embeddings accepted only where verification shows the shared part.
THOROUGH_RULES = (*VERIFIED_RULES, "cosine>=0.65&verified")

# A hash condition allowing more than this fraction of its bits to differ (13+ of 64) is verified
# after a cosine search rather than driving its own.
LOOSE_FRACTION = 0.2

_CONDITION = re.compile(r"^\s*([a-z_]+)\s*(?:(<=|>=)\s*([0-9]*\.?[0-9]+)\s*)?$")


def metric_bits(metric: str, hash_size: int) -> int:
    """Bits of a metric's hash (256 for the digests, 0 for cosine)."""
    if metric in DIGESTS:
        return 256
    if metric in (COSINE, VERIFIED):
        return 0
    from dupflow.encode.hashing import ENCODERS  # here: the settings import the rules without the encoders

    encoder = ENCODERS.get(metric)
    if encoder is None or encoder.bits(hash_size) == 0:
        usable = sorted([*DIGESTS, COSINE, VERIFIED, *(n for n, e in ENCODERS.items() if e.bits(hash_size))])
        hint = " (the cnn encoder's embeddings are matched as cosine>=SIMILARITY)" if metric == "cnn" else ""
        raise ConfigError(f"unknown match metric {metric!r}: use one of {', '.join(usable)}{hint}")
    return encoder.bits(hash_size)


@dataclass(frozen=True)
class Condition:
    """`metric` within `max_distance` bits of `bits`, or for cosine a similarity of at least `min_similarity`."""

    metric: str
    max_distance: int
    bits: int
    min_similarity: float = 0.0

    @property
    def cosine(self) -> bool:
        return self.metric == COSINE

    @property
    def verified(self) -> bool:
        return self.metric == VERIFIED

    @property
    def scored(self) -> bool:
        """A similarity condition (cosine, verified) rather than a hash distance."""
        return self.cosine or self.verified

    def similarity(self, distance: np.ndarray) -> np.ndarray:
        """1 - distance / bits, for an array of distances."""
        import numpy as np  # here: the settings import the rules without numpy

        result: np.ndarray = 1.0 - np.asarray(distance) / self.bits
        return result

    @property
    def label(self) -> str:
        if self.scored:
            return f"{self.metric}>={self.min_similarity:g}"
        return self.metric if self.metric in DIGESTS else f"{self.metric}<={self.max_distance}"


@dataclass(frozen=True)
class Rule:
    """Conditions that must all hold; the first one drives the search (a hash before cosine)."""

    conditions: tuple[Condition, ...]

    @property
    def label(self) -> str:
        return "&".join(c.label for c in self.conditions)

    @property
    def method(self) -> str:
        return "+".join(c.metric for c in self.conditions)

    @property
    def uses_embeddings(self) -> bool:
        return any(c.cosine for c in self.conditions)

    @property
    def uses_features(self) -> bool:
        return any(c.verified for c in self.conditions)


def orientable(rule: Rule) -> bool:
    """Whether mirrored and rotated pHashes can drive `rule`: pHash first, and nothing after it but
    verification (a second hash of the mirrored picture would not match)."""
    return rule.conditions[0].metric == "phash" and all(c.verified for c in rule.conditions[1:])


def searches_crops(rule: Rule) -> bool:
    """Whether the windows' pHashes can propose `rule`'s pairs: an orientable rule that verifies (which
    decides what the windows propose)."""
    return orientable(rule) and rule.uses_features


def _condition(text: str, hash_size: int, min_shared: float) -> Condition:
    m = _CONDITION.match(text)
    if not m:
        raise ConfigError(
            f"cannot read match condition {text!r}: write METRIC<=BITS (phash<=10), "
            "METRIC>=SIMILARITY (phash>=0.85, cosine>=0.92) or a digest (exact, pixel)"
        )
    metric, op, value = m.groups()
    bits = metric_bits(metric, hash_size)
    if metric in DIGESTS:
        if op is not None:
            raise ConfigError(f"{metric!r} matches identical files only: write it without a threshold")
        return Condition(metric, 0, bits)
    if metric == VERIFIED:
        return Condition(metric, 0, 0, min_shared if op is None else _cosine_threshold(text, op, value))
    if op is None:
        example = "cosine>=0.92" if metric == COSINE else f"{metric}<=10 or {metric}>=0.85"
        raise ConfigError(f"condition {text!r} needs a threshold, e.g. {example}")
    if metric == COSINE:
        return Condition(metric, 0, 0, _cosine_threshold(text, op, value))
    distance = _hash_distance(text, op, value, bits)
    if distance > bits:
        raise ConfigError(f"{text!r}: {metric} has {bits} bits, so the distance is at most {bits}")
    return Condition(metric, distance, bits)


def _cosine_threshold(text: str, op: str, value: str) -> float:
    """The minimum similarity of a cosine or verified condition (`cosine>=0.92`, `verified>=0.6`)."""
    metric = text.split(op)[0].strip()
    if op != ">=":
        raise ConfigError(f"{text!r}: {metric} is a similarity; write {metric}>=0.6")
    similarity = float(value)
    if not 0.0 < similarity <= 1.0:
        raise ConfigError(f"{text!r}: a {metric} threshold is above 0 and at most 1")
    return similarity


def _hash_distance(text: str, op: str, value: str, bits: int) -> int:
    """The maximum distance in bits of a hash condition, written in bits (`<=10`) or as a similarity (`>=0.85`)."""
    if op == "<=":
        if "." in value:
            raise ConfigError(f"{text!r}: a distance is a whole number of bits; for a similarity write >=")
        return int(value)
    similarity = float(value)
    if not 0.0 <= similarity <= 1.0:
        raise ConfigError(f"{text!r}: a similarity is between 0 and 1")
    return math.floor((1.0 - similarity) * bits + 1e-9)


def _search_order(c: Condition) -> int:
    """Which condition drives a rule's search: digests and tight hashes (the Hamming index is fastest),
    then cosine (tiled matrix products), then loose hashes, whose index would probe most buckets; the
    verification of local features, the costliest per pair, only ever checks candidates."""
    if c.verified:
        return 3
    if c.cosine:
        return 1
    return 2 if c.max_distance > c.bits * LOOSE_FRACTION else 0


def parse_rule(text: str, hash_size: int = 8, min_shared: float = VERIFIED_DEFAULT) -> Rule:
    """`phash<=10`, `phash>=0.85`, `cosine>=0.92`, `exact`, or conditions joined by `&` (all must hold).
    The first condition drives the search (see `_search_order`); the others verify its candidates."""
    text = text.strip()
    if text.startswith("(") and text.endswith(")"):
        text = text[1:-1]
    parts = text.split("&")
    if not text.strip() or any(not p.strip() for p in parts):
        raise ConfigError(f"empty match rule in {text!r}")
    conditions = tuple(sorted((_condition(p, hash_size, min_shared) for p in parts), key=_search_order))
    if len({c.metric for c in conditions}) != len(conditions):
        raise ConfigError(f"rule {text!r} names a metric twice")
    if conditions[0].verified:
        raise ConfigError(f"rule {text!r}: verified checks candidates that another condition finds; add one, "
                          "e.g. phash<=16&verified or cosine>=0.65&verified")
    return Rule(conditions)


def parse_rules(
    texts: list[str] | tuple[str, ...], hash_size: int = 8, *, embeddings: bool = False,
    min_shared: float = VERIFIED_DEFAULT,
) -> tuple[Rule, ...]:
    """Rules (any of them accepts a pair), each text possibly several joined by `|`, e.g.
    `exact | (dhash<=10 & cosine>=0.85)`. With no texts: DEFAULT_RULES, or with `embeddings` available
    DEFAULT_RULES_WITH_EMBEDDINGS. Duplicates are dropped. Bare `verified` means verified>=`min_shared`."""
    rules: dict[str, Rule] = {}
    defaults = DEFAULT_RULES_WITH_EMBEDDINGS if embeddings else DEFAULT_RULES
    for text in texts or defaults:
        for alternative in text.split("|"):
            rule = parse_rule(alternative, hash_size, min_shared)
            rules.setdefault(rule.label, rule)
    return tuple(rules.values())
