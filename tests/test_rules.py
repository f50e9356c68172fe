"""Rule and keep-policy parsing: one threshold language, clear errors."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from dupflow.errors import ConfigError
from dupflow.match.keep import KeepPolicy
from dupflow.match.rules import DEFAULT_RULES, DEFAULT_RULES_WITH_EMBEDDINGS, parse_rule, parse_rules


def test_similarity_and_bits_name_the_same_rule() -> None:
    assert parse_rule("phash>=0.85").label == parse_rule("phash<=9").label == "phash<=9"
    assert parse_rule("phash>=0.85", hash_size=16).conditions[0].max_distance == 38
    assert parse_rule("dhash>=1.0").conditions[0].max_distance == 0
    cond = parse_rule("phash<=16").conditions[0]
    assert (cond.bits, float(cond.similarity(np.asarray(cond.max_distance)))) == (64, 0.75)


def test_conditions_join_with_and_and_rules_dedupe() -> None:
    rule = parse_rule(" phash <= 8 & dhash<=10 ")
    assert rule.label == "phash<=8&dhash<=10"
    assert rule.method == "phash+dhash"
    assert [r.label for r in parse_rules(["exact", "phash<=10", "phash>=0.85", "phash<=9"])] == [
        "exact", "phash<=10", "phash<=9"]
    assert [r.label for r in parse_rules([])] == list(DEFAULT_RULES)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("phash", "needs a threshold"),
        ("exact<=2", "identical files only"),
        ("phash<=65", "at most 64"),
        ("phash<=2.5", "whole number"),
        ("phash>=1.5", "between 0 and 1"),
        ("nohash<=3", "unknown match metric"),
        ("crop_resistant<=3", "unknown match metric"),
        ("phash<=3&phash<=4", "twice"),
        ("phash<=3&", "empty"),
        ("phash=3", "cannot read"),
    ],
)
def test_bad_rules_say_what_to_write(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_rule(text)


def test_keep_policy_always_ends_with_path() -> None:
    policy = KeepPolicy.parse(["dataset:val,train", "size"])
    assert policy.keys == ("dataset", "size", "path")
    assert policy.dataset_priority == ("val", "train")
    assert policy.label == "dataset:val,train > size > path"
    assert KeepPolicy.parse([]).keys[-1] == "path"


@pytest.mark.parametrize(
    ("keys", "message"),
    [(["biggest"], "unknown keep key"), (["size", "size"], "twice"), (["oldest", "newest"], "contradict"),
     (["size:1"], "takes no argument")],
)
def test_bad_keep_policies_are_refused(keys: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        KeepPolicy.parse(keys)


def test_alternatives_join_with_a_bar_and_tight_hashes_drive_the_search() -> None:
    rules = parse_rules(["exact | (dhash<=10 & cosine>=0.85)", "cosine>=0.85 & dhash<=20"])
    assert [r.label for r in rules] == ["exact", "dhash<=10&cosine>=0.85", "cosine>=0.85&dhash<=20"]
    assert [r.uses_embeddings for r in rules] == [False, True, True]
    assert parse_rule("cosine>=0.9").conditions[0].min_similarity == 0.9
    assert [r.label for r in parse_rules([], embeddings=True)] == list(DEFAULT_RULES_WITH_EMBEDDINGS)


@pytest.mark.parametrize(
    ("text", "message"),
    [("cosine<=3", "cosine is a similarity"), ("cosine", "needs a threshold"), ("cosine>=0", "above 0"),
     ("cnn>=0.9", "matched as cosine"), ("cosine>=0.9 | ", "empty")],
)
def test_bad_cosine_rules_say_what_to_write(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_rules([text])


def test_keep_keys_of_some_rows_order_those_rows_as_the_keys_of_all_rows_do() -> None:
    rng = np.random.default_rng(3)
    n = 300
    names = np.array(["train", "val"])[rng.integers(0, 2, n)]
    table = pa.table({
        "uri": [f"s3://b/{d}/{'x' * int(k)}{i:03d}.jpg" for i, (d, k) in enumerate(zip(names, rng.integers(0, 4, n),
                                                                                        strict=True))],
        "dataset": names, "width": rng.integers(1, 4, n), "height": np.full(n, 2), "size": rng.integers(1, 5, n),
        "mtime": pa.array(rng.integers(0, 3, n), pa.timestamp("ns", tz="UTC")),
    })
    reference = rng.random(n) < 0.2
    rows = np.sort(rng.choice(n, 120, replace=False))
    policy = KeepPolicy.parse(["dataset:val,train", "resolution", "size", "oldest", "shortest-path"])
    every = policy.sort_keys(table, ["train", "val"], reference)
    some = policy.sort_keys(table, ["train", "val"], reference, rows)
    assert len(some) == len(every) == 7
    for whole, part in zip(every, some, strict=True):
        assert np.array_equal(np.argsort(whole[rows], kind="stable"), np.argsort(part[rows], kind="stable"))
    whole_order, part_order = (np.lexsort(tuple(reversed([k[rows] for k in keys]))) for keys in (every, some))
    assert np.array_equal(whole_order, part_order)
