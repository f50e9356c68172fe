"""Matching end to end on generated datasets: planted duplicates and leaks, groups, keepers, scores."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from dupflow.encode.settings import EncodeSettings
from dupflow.errors import ConfigError, StoreError
from dupflow.index import Block, HammingIndex, QueryRows, SearchPlan, concat_pairs, search_block, sort_pairs
from dupflow.io.sources import DatasetSource
from dupflow.match import decisions, matching
from dupflow.match.job import OUTPUT_FILES, finish_match_blocks, match_rules_block, match_store, plan_match, prepared
from dupflow.match.settings import MatchSettings
from dupflow.match.state import STATE_FOLDER
from dupflow.store.encode_job import run_encode
from imagegen import natural, write
from worlds import World, brighter, build_world


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    return build_world(tmp_path_factory.mktemp("world"), encoders=("phash", "dhash", "phash_dihedral"))


def _match(world: World, out: Path, **kw: Any) -> dict[str, Any]:
    return match_store(world.store, str(out), MatchSettings(**kw)).summary


def _table(out: Path, name: str) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = pq.read_table(out / name).to_pylist()
    return rows


def _groups(out: Path) -> dict[int, set[str]]:
    groups: dict[int, set[str]] = {}
    for row in _table(out, "groups.parquet"):
        groups.setdefault(row["group"], set()).add(row["uri"])
    return groups


def test_match_writes_exactly_the_contract_files_and_its_state(world: World, tmp_path: Path) -> None:
    _match(world, tmp_path / "out")
    assert sorted(os.listdir(tmp_path / "out")) == sorted([*OUTPUT_FILES, STATE_FOLDER])
    pairs = pq.read_table(tmp_path / "out" / "pairs.parquet")
    assert {"a", "b", "method", "distance", "similarity"} <= set(pairs.column_names)


def test_every_planted_copy_and_leak_is_found_and_nothing_else(world: World, tmp_path: Path) -> None:
    summary = _match(world, tmp_path / "out")
    groups = sorted(_groups(tmp_path / "out").values(), key=min)
    expected = sorted(({str(a), str(b)} for a, b in world.within + world.leaks), key=min)
    assert groups == expected
    shared = summary["intersections"]["train & val"]
    listed = {(g["train"][0], g["val"][0]) for g in shared["groups"]}
    assert listed == {(str(a), str(b)) for a, b in world.leaks}
    assert shared["shared_groups"] == len(world.leaks)
    assert shared["images"] == {"train": 3, "val": 3}
    train = summary["datasets"]["train"]
    assert (train["duplicate_groups"], train["appearances"], train["redundant_files"]) == (3, 6, 3)
    assert train["errors"] == {"corrupt": 1}
    assert train["images"] == train["encoded"] + 1
    assert summary["totals"]["leakage_groups"] == 3


def test_pairs_are_stored_once_without_self_pairs(world: World, tmp_path: Path) -> None:
    _match(world, tmp_path / "out", rules=("exact", "phash<=10", "dhash<=10"))
    rows = _table(tmp_path / "out", "pairs.parquet")
    keys = [(r["a"], r["b"], r["rule"]) for r in rows]
    assert len(keys) == len(set(keys))
    assert all(a != b for a, b, _ in keys)
    unordered = [(min(a, b), max(a, b), rule) for a, b, rule in keys]
    assert len(unordered) == len(set(unordered))
    assert all(0.0 <= r["similarity"] <= 1.0 for r in rows)
    assert all(r["similarity"] == pytest.approx(1 - r["distance"] / 64) for r in rows if r["method"] != "exact")
    exact = [r for r in rows if r["rule"] == "exact"]
    assert {(r["a"], r["b"]) for r in exact} == {(str(world.within[0][0]), str(world.within[0][1])),
                                                 (str(world.leaks[1][0]), str(world.leaks[1][1]))}


def test_every_group_has_one_keeper_and_keepers_never_move(world: World, tmp_path: Path) -> None:
    _match(world, tmp_path / "out")
    rows = _table(tmp_path / "out", "groups.parquet")
    keepers: dict[int, list[str]] = {}
    for r in rows:
        if r["keeper"]:
            keepers.setdefault(r["group"], []).append(r["uri"])
    assert all(len(k) == 1 for k in keepers.values())
    assert set(keepers) == {r["group"] for r in rows}
    manifest = _table(tmp_path / "out", "manifest.parquet")
    sources = {m["source"] for m in manifest}
    assert not sources & {k[0] for k in keepers.values()}
    assert len(manifest) == len(rows) - len(keepers)  # everything else moves
    for m in manifest:
        assert m["keeper"] == keepers[m["group"]][0]
        assert m["destination"] == str(tmp_path / "out" / "duplicates" / m["dataset"] / m["rel_path"])
        why = m["reason"].rsplit(" because ", 1)[1]
        assert why in {"its dataset comes first in the keep priority", "it has more pixels", "it is a larger file",
                       "it is older", "it is newer", "its path is shorter", "its path sorts first"}
        assert m["reason"] == (f"{m['rule']}: similarity {m['similarity']:.3f} to {m['matched']}; keeping "
                               f"{m['keeper']} because {why}")
        assert m["sha256"] == hashlib.sha256(Path(m["source"]).read_bytes()).hexdigest()


def test_default_policy_keeps_train_and_the_larger_picture(world: World, tmp_path: Path) -> None:
    _match(world, tmp_path / "out")
    sources = {m["source"] for m in _table(tmp_path / "out", "manifest.parquet")}
    assert {str(b) for _, b in world.leaks} <= sources  # val copies of train pictures move
    assert str(world.within[1][1]) in sources  # the half-size PNG moves, not its original


def test_dataset_priority_reverses_which_copy_stays(world: World, tmp_path: Path) -> None:
    _match(world, tmp_path / "out", keep=("dataset:val,train", "resolution"))
    manifest = _table(tmp_path / "out", "manifest.parquet")
    sources = {m["source"] for m in manifest}
    assert {str(a) for a, _ in world.leaks} <= sources
    assert not {str(b) for _, b in world.leaks} & sources
    leak_rows = [m for m in manifest if m["source"] in {str(a) for a, _ in world.leaks}]
    assert all("keep priority" in m["reason"] for m in leak_rows)


def test_a_tie_in_every_key_is_broken_by_path(tmp_path: Path) -> None:
    data = tmp_path / "data"
    original = write(data / "zz" / "b.jpg", natural(7, 200, 150), quality=90)
    for name in ("a.jpg", "c.jpg"):
        target = data / "zz" / name
        shutil.copy(original, target)
    for p in (data / "zz").iterdir():
        os.utime(p, ns=(1_700_000_000_000_000_000, 1_700_000_000_000_000_000))
    run_encode([DatasetSource("d", str(data))], str(tmp_path / "store"), EncodeSettings())
    match_store(str(tmp_path / "store"), str(tmp_path / "out"), MatchSettings())
    manifest = _table(tmp_path / "out", "manifest.parquet")
    assert {m["keeper"] for m in manifest} == {str(data / "zz" / "a.jpg")}
    assert all("path sorts first" in m["reason"] for m in manifest)


def test_manifest_is_byte_identical_across_runs_threads_and_shards(world: World, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    dups = str(tmp_path / "dups")
    _match(world, tmp_path / "one", threads=1, blocks=1, duplicates_root=dups)
    monkeypatch.setattr(decisions, "_MANIFEST_SLICE", 2)  # built two rows at a time, written the same
    _match(world, tmp_path / "two", threads=2, blocks=13, duplicates_root=dups)
    other = build_world(tmp_path / "again", shard_size=3)
    match_store(other.store, str(tmp_path / "three"), MatchSettings(threads=2, duplicates_root=dups))
    for name in ("manifest.parquet", "pairs.parquet", "groups.parquet", "scores.parquet"):
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes()
    relative = [
        [{k: str(v).replace(str(root), "") for k, v in r.items() if k != "mtime"}  # worlds built apart
         for r in _table(out, "manifest.parquet")]
        for root, out in ((world.root, tmp_path / "one"), (other.root, tmp_path / "three"))
    ]
    assert relative[0] == relative[1]
    assert relative[0]


def test_query_sides_indexed_in_small_parts_give_byte_identical_outputs(world: World, tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    dups = str(tmp_path / "dups")
    for name, kw in (("mirrors", {}), ("reference", {"reference": ("train",), "datasets": ("train", "val")})):
        _match(world, tmp_path / f"{name}-whole", threads=2, blocks=3, duplicates_root=dups, **kw)
    parts: list[Block] = []
    real_part = QueryRows.part

    def counted(rows: QueryRows, block: Block) -> HammingIndex:
        parts.append(block)
        return real_part(rows, block)

    monkeypatch.setattr(matching, "QUERY_PART_ROWS", 2)
    monkeypatch.setattr(QueryRows, "part", counted)
    for name, kw in (("mirrors", {}), ("reference", {"reference": ("train",), "datasets": ("train", "val")})):
        _match(world, tmp_path / f"{name}-parts", threads=2, blocks=3, duplicates_root=dups, **kw)
        for output in ("manifest.parquet", "pairs.parquet", "groups.parquet", "scores.parquet"):
            whole, split = (tmp_path / f"{name}-{how}" / output for how in ("whole", "parts"))
            assert whole.read_bytes() == split.read_bytes()
    assert max(b.of for b in parts) > 3  # the 3 blocks were split into sub-blocks
    assert _table(tmp_path / "mirrors-parts", "pairs.parquet")


def test_the_decision_releases_the_search_indexes_and_a_later_block_prepares_them_again(world: World,
                                                                                       tmp_path: Path) -> None:
    settings = MatchSettings(incremental=False, duplicates_root=str(tmp_path / "dups"))  # no state to search from
    job = plan_match(world.store, str(tmp_path / "out"), settings)
    first = match_rules_block(job, Block(0, 1))
    assert all(s.joins for s in prepared(job).searches)
    finish_match_blocks(job, [first])
    ready = prepared(job)
    assert ready.released
    assert all(s.joins == () for s in ready.searches)
    with pytest.raises(RuntimeError, match="released for the decision"):
        ready.searches[0].block(Block(0, 1))
    again = match_rules_block(job, Block(0, 1))  # prepared anew in this process
    assert not prepared(job).released
    for before, after in zip(first.pairs, again.pairs, strict=True):
        assert np.array_equal(before.c1, after.c1)
        assert np.array_equal(before.c2, after.c2)
    assert sum(len(p) for p in first.pairs) > 0


def test_a_finished_incremental_match_cannot_be_searched_again_from_the_state_it_wrote(world: World,
                                                                                      tmp_path: Path) -> None:
    job = plan_match(world.store, str(tmp_path / "out"), MatchSettings(duplicates_root=str(tmp_path / "dups")))
    finish_match_blocks(job, [match_rules_block(job, Block(0, 1))])  # writes a new state into out
    with pytest.raises(StoreError, match="changed since this match was planned"):
        match_rules_block(job, Block(0, 1))
    again = plan_match(world.store, str(tmp_path / "out"), MatchSettings(duplicates_root=str(tmp_path / "dups")))
    assert again.state != job.state
    match_rules_block(again, Block(0, 1))  # planned against the state now there


def test_reference_corpus_is_never_matched_against_itself_nor_moved(world: World, tmp_path: Path) -> None:
    summary = _match(world, tmp_path / "out", reference=("train",), datasets=("train", "val"))
    pairs = _table(tmp_path / "out", "pairs.parquet")
    assert pairs
    assert not [p for p in pairs if p["a_dataset"] == p["b_dataset"] == "train"]
    manifest = _table(tmp_path / "out", "manifest.parquet")
    assert not [m for m in manifest if m["dataset"] == "train"]
    moved = {m["source"] for m in manifest}
    inside_val = {str(p) for p in world.within[3]}
    assert len(moved & inside_val) == 1
    assert moved - inside_val == {str(b) for _, b in world.leaks}
    assert summary["datasets"]["train"]["reference"]
    assert summary["datasets"]["train"]["duplicate_groups"] == 0


def test_exact_copies_score_zero_except_the_keeper(tmp_path: Path) -> None:
    data = tmp_path / "data"
    first = write(data / "a.jpg", natural(3, 200, 150), quality=90)
    for name in ("b.jpg", "c.jpg"):
        shutil.copy(first, data / name)
    write(data / "other.jpg", natural(4, 200, 150), quality=90)
    near = write(data / "z_near.jpg", brighter(natural(3, 200, 150)), quality=90)
    run_encode([DatasetSource("d", str(data))], str(tmp_path / "store"), EncodeSettings())
    match_store(str(tmp_path / "store"), str(tmp_path / "out"), MatchSettings(rules=("exact",)))
    scores = {Path(r["uri"]).name: r for r in _table(tmp_path / "out", "scores.parquet")}
    assert [scores[n]["uniqueness"] for n in ("a.jpg", "b.jpg", "c.jpg")] == [1.0, 0.0, 0.0]
    assert scores["a.jpg"]["keeper"]
    assert scores["b.jpg"]["status"] == scores["a.jpg"]["status"] == "fail"
    assert scores["other.jpg"]["status"] == "pass"
    assert scores["other.jpg"]["uniqueness"] == 1.0
    assert scores["other.jpg"]["group"] is None
    assert scores[near.name]["status"] == "pass"
    match_store(str(tmp_path / "store"), str(tmp_path / "out2"), MatchSettings())
    scores = {Path(r["uri"]).name: r for r in _table(tmp_path / "out2", "scores.parquet")}
    near_sim = scores[near.name]["max_similarity"]
    assert scores[near.name]["status"] == "fail"
    assert 0.8 < near_sim <= 1.0
    group = [r for r in scores.values() if r["group"] is not None]
    keeper = [r for r in group if r["keeper"]]
    assert len(group) == 4
    assert len(keeper) == 1
    assert keeper[0]["uniqueness"] == pytest.approx(1 - near_sim)  # identical copies do not zero it
    assert keeper[0]["uniqueness"] > 0
    assert sorted(r["uniqueness"] for r in group if not r["keeper"])[:2] == [0.0, 0.0]


def test_mirrored_and_rotated_copies_are_found_by_default_and_not_with_orientations_off(tmp_path: Path) -> None:
    data = tmp_path / "data"
    pictures = [natural(50 + i, 240, 240) for i in range(12)]
    for i, p in enumerate(pictures):
        write(data / f"p{i:02d}.png", p)
    write(data / "x_mirror.png", pictures[0].transpose(Image.Transpose.FLIP_LEFT_RIGHT))
    write(data / "x_rot90.png", pictures[1].transpose(Image.Transpose.ROTATE_90))
    run_encode([DatasetSource("d", str(data))], str(tmp_path / "store"),
               EncodeSettings(encoders=("phash", "phash_dihedral")))
    match_store(str(tmp_path / "store"), str(tmp_path / "plain"), MatchSettings(orientations=False))
    assert _table(tmp_path / "plain", "pairs.parquet") == []
    match_store(str(tmp_path / "store"), str(tmp_path / "out"), MatchSettings())
    rows = _table(tmp_path / "out", "pairs.parquet")
    pairs = {(Path(p["a"]).name, Path(p["b"]).name): p["orientation"] for p in rows}
    assert pairs == {("p00.png", "x_mirror.png"): "hflip", ("p01.png", "x_rot90.png"): "rot90"}


def test_orientation_mode_without_its_encoder_names_the_fix(world: World, tmp_path: Path) -> None:
    store = tmp_path / "store"
    run_encode([DatasetSource("v", str(world.root / "val"))], str(store), EncodeSettings(preset="fast"))
    match_store(str(store), str(tmp_path / "auto"), MatchSettings())  # the default: on only where it can be
    with pytest.raises(ConfigError, match=r"phash_dihedral.*dupflow encode"):
        match_store(str(store), str(tmp_path / "out"), MatchSettings(orientations=True))
    with pytest.raises(ConfigError, match="no dataset nope"):
        match_store(str(store), str(tmp_path / "out"), MatchSettings(datasets=("nope",)))


def test_all_of_rule_needs_every_condition(world: World, tmp_path: Path) -> None:
    _match(world, tmp_path / "any", rules=("phash<=10",))
    _match(world, tmp_path / "all", rules=("phash<=10&dhash<=1",))
    any_pairs = {(p["a"], p["b"]) for p in _table(tmp_path / "any", "pairs.parquet")}
    all_rows = _table(tmp_path / "all", "pairs.parquet")
    assert {(p["a"], p["b"]) for p in all_rows} < any_pairs
    assert all(r["method"] == "phash+dhash" for r in all_rows)


def test_summary_is_json_with_errors_by_kind(world: World, tmp_path: Path) -> None:
    _match(world, tmp_path / "out", examples=1)
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["totals"]["errors"] == {"corrupt": 1}
    assert summary["datasets"]["train"]["groups_listed"] == 1
    assert len(summary["datasets"]["train"]["groups"]) == 1
    scores = pq.read_table(tmp_path / "out" / "scores.parquet")
    assert scores.schema.metadata[b"dupflow.schema"] == b"scores"
    unread = [r for r in scores.to_pylist() if r["status"] == "error"]
    assert [(Path(r["uri"]).name, r["error"], r["uniqueness"]) for r in unread] == [("broken.jpg", "corrupt", None)]
    assert isinstance(pq.read_table(tmp_path / "out" / "manifest.parquet"), pa.Table)


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 2**32 - 1), st.lists(st.integers(1, 9), min_size=1, max_size=5), st.booleans())
def test_view_rows_are_the_column_values_view_by_view_in_any_chunking(seed: int, chunks: list[int],
                                                                      shuffled: bool) -> None:
    rng = np.random.default_rng(seed)
    views, n = 7, sum(chunks)
    raw = rng.integers(0, 256, (n, views * 8), dtype=np.uint8)
    parts, at = [], 0
    for size in chunks:  # a column of many chunks, each sliced out of a larger array (a non-zero offset)
        whole = pa.array([bytes(r) for r in raw[at:at + size]] + [bytes(views * 8)], pa.binary(views * 8))
        parts.append(whole.slice(0, size))
        at += size
    ids = rng.choice(n, size=rng.integers(1, n + 1), replace=False)
    ids = ids if shuffled else np.sort(ids)
    got = matching._view_major(pa.chunked_array(parts), ids, views)
    want = raw[ids].reshape(len(ids), views, 8)[:, :, ::-1].copy().view(np.uint64).reshape(len(ids), views)
    assert np.array_equal(got, want.T.reshape(-1, 1))  # view by view: row v * len(ids) + i


def test_query_parts_stay_small_where_a_block_spans_cheap_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(4)
    words = rng.integers(0, 2**64 - 1, (4000, 1), dtype=np.uint64, endpoint=True)
    queries = words ^ np.uint64(0b101)
    # chunk 0 costs 100x the others: an even share of the work holds 100x more rows in chunks 1-3
    plan = SearchPlan(10, np.array([2, 2, 2, 1]), np.array([1000.0, 10.0, 10.0, 10.0]))
    rows = QueryRows.of(queries, plan)
    join = matching._Join(HammingIndex.build(words, plan), rows, matching._Rows(np.arange(len(queries))),
                          np.arange(len(words)))
    monkeypatch.setattr(matching, "QUERY_PART_ROWS", 250)
    whole = HammingIndex.build(queries, plan)
    for block in (Block(0, 1), Block(1, 2)):
        subs = join.sub_blocks(block)
        assert all(rows.rows_in(sub) <= 250 * 4 for sub in subs)
        got = sort_pairs(concat_pairs([search_block(join.index, sub, rows.part(sub)) for sub in subs]))
        assert np.array_equal(np.stack(got), np.stack(sort_pairs(search_block(join.index, block, whole))))
    assert len(join.sub_blocks(Block(0, 1))) > 4000 // 250  # counted in rows alone, the parts would be 4x over


@pytest.mark.parametrize("collide", [False, True])
def test_classes_gather_identical_keys_numbered_by_first_row_even_when_their_mixes_collide(
        collide: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(5)
    key = rng.integers(0, 4, (3_000, 3)).astype(np.uint64)  # 64 distinct keys: every class has many rows
    if collide:  # two keys mixing alike cannot be found by chance: make every key mix alike
        monkeypatch.setattr(matching, "key_mix", lambda k: np.zeros(len(k), np.uint64))
    first, cls = matching._classes(key)
    seen: dict[tuple[int, ...], int] = {}
    expected = [seen.setdefault(tuple(row), len(seen)) for row in key.tolist()]
    assert len(seen) == 64
    assert cls.tolist() == expected
    assert first.tolist() == [expected.index(c) for c in range(len(seen))]


def test_file_columns_are_made_one_chunk_unless_too_large_for_one(monkeypatch: pytest.MonkeyPatch) -> None:
    from dupflow.match import job

    parts = [pa.table({"uri": [f"s3://b/{k}-{i}.jpg" for i in range(50)], "size": list(range(50)),
                       "phash": pa.array(range(50), pa.uint64())}) for k in range(4)]
    table = pa.concat_tables(parts)
    assert table["uri"].num_chunks == 4
    one = job._contiguous(table)
    assert [c.num_chunks for c in one.columns] == [1, 1, 4]  # hashes are never taken by image id
    assert one.equals(table)
    monkeypatch.setattr(job, "_ONE_CHUNK_BYTES", table["size"].nbytes + 1)  # the uris no longer fit in one
    kept = job._contiguous(table)
    assert [c.num_chunks for c in kept.columns] == [4, 1, 4]
    assert kept.equals(table)


@pytest.mark.parametrize("n", [1_000, 2**40])  # a combined key, and lexsort where the key would overflow
def test_pairs_are_ordered_by_images_then_rule_as_a_lexsort_would(n: int) -> None:
    from dupflow.match.decisions import _pair_order

    rng = np.random.default_rng(3)
    a, b, rule = rng.integers(0, 40, 500), rng.integers(0, 40, 500), rng.integers(0, 3, 500)
    a, b = a * (n // 40), b * (n // 40)  # ids spread up to n
    assert np.array_equal(_pair_order(a, b, rule, n), np.lexsort((rule, b, a)))


@pytest.mark.parametrize("failing", ["_manifest_table", "build_summary"])
def test_a_run_that_fails_writing_its_outputs_leaves_no_summary_beside_them(
    world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failing: str,
) -> None:
    from dupflow.match import job

    out = tmp_path / "out"
    _match(world, out)
    assert (out / "summary.json").exists()

    def broken(*_: Any, **__: Any) -> None:
        raise RuntimeError(f"{failing} failed")

    monkeypatch.setattr(decisions if failing == "_manifest_table" else job, failing, broken)
    with pytest.raises(RuntimeError, match=f"{failing} failed"):
        _match(world, out, incremental=False)
    assert not (out / "summary.json").exists()  # the last run's summary would describe tables it did not write


@pytest.mark.parametrize("datasets", [2, 500])  # cells counted densely, and sorted where they would be many
def test_a_groups_dataset_span_counts_the_datasets_its_members_are_in(datasets: int) -> None:
    rng = np.random.default_rng(8)
    n = 2_000
    group_of = np.where(rng.random(n) < 0.5, rng.integers(0, 300, n), -1)
    group_of[:300] = np.arange(300)  # every group has a member
    dataset_ix = rng.integers(0, datasets, n)
    images = matching.Images(pa.table({"uri": [str(i) for i in range(n)]}),
                             tuple(f"d{k}" for k in range(datasets)), dataset_ix, np.zeros(n, bool))
    expected = [len({int(d) for d in dataset_ix[group_of == g]}) for g in range(300)]
    assert decisions._spans(images, group_of, 300).tolist() == expected
