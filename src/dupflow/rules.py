"""Match rules: a metric and a threshold, in bits or as a similarity in [0, 1].

One rule is one or more conditions that must all hold (`phash<=8&dhash<=10`); a rule set accepts
a pair when any rule does. Every metric maps its distance onto a similarity in [0, 1] (1 means
identical), so `phash>=0.85` and `phash<=9` name the same rule on 64-bit hashes.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np

from dupflow.errors import ConfigError
from dupflow.hashing import ENCODERS

__all__ = ["DEFAULT_RULES", "DIGESTS", "Condition", "Rule", "metric_bits", "parse_rule", "parse_rules"]

# Metrics that only match identical values: the file bytes, or the decoded pixels.
DIGESTS = {"exact": "SHA-256 of the file bytes", "pixel": "SHA-256 of the decoded pixels"}

# Defaults measured on edited copies vs distinct photographs (bench/thresholds.py, results in
# bench/results/thresholds.md): byte-identical files, and pHash within 10 of 64 bits. On 494
# distinct pictures (121,771 pairs) pHash<=10 finds 100% of 50% resizes, 99% of JPEG q40
# recompressions and brightness/gamma edits, 94% of 5% crops, 81% of 2-degree rotations, with 2
# false pairs; dHash, aHash and wHash give 247, 1,033 and 1,175 false pairs at the same threshold.
DEFAULT_RULES = ("exact", "phash<=10")

_CONDITION = re.compile(r"^\s*([a-z_]+)\s*(?:(<=|>=)\s*([0-9]*\.?[0-9]+)\s*)?$")


def metric_bits(metric: str, hash_size: int) -> int:
    """Bits of a metric's hash (256 for the digests)."""
    if metric in DIGESTS:
        return 256
    encoder = ENCODERS.get(metric)
    if encoder is None or encoder.bits(hash_size) == 0:
        usable = sorted([*DIGESTS, *(n for n, e in ENCODERS.items() if e.bits(hash_size))])
        raise ConfigError(f"unknown match metric {metric!r}: use one of {', '.join(usable)}")
    return encoder.bits(hash_size)


@dataclass(frozen=True)
class Condition:
    """`metric` within `max_distance` bits of `bits`."""

    metric: str
    max_distance: int
    bits: int

    def similarity(self, distance: np.ndarray) -> np.ndarray:
        """1 - distance / bits, for an array of distances."""
        result: np.ndarray = 1.0 - np.asarray(distance) / self.bits
        return result

    @property
    def label(self) -> str:
        return self.metric if self.metric in DIGESTS else f"{self.metric}<={self.max_distance}"


@dataclass(frozen=True)
class Rule:
    """Conditions that must all hold; the first one drives the indexed search."""

    conditions: tuple[Condition, ...]

    @property
    def label(self) -> str:
        return "&".join(c.label for c in self.conditions)

    @property
    def method(self) -> str:
        return "+".join(c.metric for c in self.conditions)


def _condition(text: str, hash_size: int) -> Condition:
    m = _CONDITION.match(text)
    if not m:
        raise ConfigError(
            f"cannot read match condition {text!r}: write METRIC<=BITS (phash<=10), "
            "METRIC>=SIMILARITY (phash>=0.85) or a digest (exact, pixel)"
        )
    metric, op, value = m.groups()
    bits = metric_bits(metric, hash_size)
    if metric in DIGESTS:
        if op is not None:
            raise ConfigError(f"{metric!r} matches identical files only: write it without a threshold")
        return Condition(metric, 0, bits)
    if op is None:
        raise ConfigError(f"condition {text!r} needs a threshold, e.g. {metric}<=10 or {metric}>=0.85")
    if op == "<=":
        if "." in value:
            raise ConfigError(f"{text!r}: a distance is a whole number of bits; for a similarity write >=")
        distance = int(value)
    else:
        similarity = float(value)
        if not 0.0 <= similarity <= 1.0:
            raise ConfigError(f"{text!r}: a similarity is between 0 and 1")
        distance = math.floor((1.0 - similarity) * bits + 1e-9)
    if distance > bits:
        raise ConfigError(f"{text!r}: {metric} has {bits} bits, so the distance is at most {bits}")
    return Condition(metric, distance, bits)


def parse_rule(text: str, hash_size: int = 8) -> Rule:
    """`phash<=10`, `phash>=0.85`, `exact`, or conditions joined by `&` (all must hold)."""
    parts = text.split("&")
    if not text.strip() or any(not p.strip() for p in parts):
        raise ConfigError(f"empty match rule in {text!r}")
    conditions = tuple(_condition(p, hash_size) for p in parts)
    if len({c.metric for c in conditions}) != len(conditions):
        raise ConfigError(f"rule {text!r} names a metric twice")
    return Rule(conditions)


def parse_rules(texts: list[str] | tuple[str, ...], hash_size: int = 8) -> tuple[Rule, ...]:
    """Rules (any of them accepts a pair); DEFAULT_RULES when none are given. Duplicates are dropped."""
    rules: dict[str, Rule] = {}
    for text in texts or DEFAULT_RULES:
        rule = parse_rule(text, hash_size)
        rules.setdefault(rule.label, rule)
    return tuple(rules.values())
