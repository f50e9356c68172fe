"""Geometric verification of local features: crops, flips and rotations verify; overlapping windows and
touching tiles do not; scores are shared fractions in [0, 1], the same in either order; groups do not
chain; the default catches a mirrored copy with no flag; the thorough preset is selected by name."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image, ImageEnhance

from dupflow.encode.features import KEYPOINTS, extract_features, parse_features
from dupflow.encode.settings import EncodeSettings
from dupflow.errors import ConfigError
from dupflow.io.sources import DatasetSource
from dupflow.match import verify
from dupflow.match.job import match_store
from dupflow.match.rules import THOROUGH_RULES, VERIFIED_DEFAULT, parse_rule
from dupflow.match.settings import MatchSettings
from dupflow.match.verify import MIN_TEXTURE, shared_fraction, verify_pair
from dupflow.store.encode_job import run_encode
from imagegen import detailed, natural, write


def features(picture: Image.Image):  # type: ignore[no-untyped-def]
    return parse_features(extract_features(np.asarray(picture.convert("L"))))


def crop(picture: Image.Image, keep: float, left: float = 0.5, top: float = 0.5) -> Image.Image:
    """Keep `keep` of the width and of the height; `left`/`top`: where the cut falls (0: all on the right)."""
    w, h = picture.size
    cw, ch = round(w * (1 - keep)), round(h * (1 - keep))
    x, y = round(cw * left), round(ch * top)
    return picture.crop((x, y, x + w - cw, y + h - ch))


SCENE = detailed(7)
W, H = SCENE.size


@pytest.mark.parametrize(("name", "copy", "low", "high"), [
    ("crop 10%", crop(SCENE, 0.9, 0.3, 0.7), 0.76, 0.86),
    ("crop 20%", crop(SCENE, 0.8, 0.6, 0.2), 0.59, 0.69),
    ("mirrored", SCENE.transpose(Image.Transpose.FLIP_LEFT_RIGHT), 0.95, 1.0),
    ("rotated 90", SCENE.transpose(Image.Transpose.ROTATE_90), 0.95, 1.0),
    ("half size, re-encoded", SCENE.resize((W // 2, H // 2)), 0.95, 1.0),
    ("crop 10% of the mirror image", crop(SCENE.transpose(Image.Transpose.FLIP_LEFT_RIGHT), 0.9), 0.76, 0.86),
])
def test_planted_copies_verify_with_the_share_they_keep(name: str, copy: Image.Image, low: float, high: float) -> None:
    score = shared_fraction(features(SCENE), features(copy))
    assert low <= score <= high, f"{name}: shared fraction {score:.3f}"
    assert score >= VERIFIED_DEFAULT


@pytest.mark.parametrize(("name", "a", "b"), [
    # two windows of 57% of the width, sharing a quarter of their area
    ("25%-overlap windows", SCENE.crop((0, 0, round(W * 0.571), H)), SCENE.crop((round(W * 0.429), 0, W, H))),
    ("touching tiles", SCENE.crop((0, 0, W // 2, H)), SCENE.crop((W // 2, 0, W, H))),
    ("a quarter tile and its photograph", SCENE.crop((0, 0, W // 2, H // 2)), SCENE),
    ("unrelated pictures", SCENE, detailed(8)),
])
def test_overlaps_tiles_and_strangers_fall_below_the_boundary(name: str, a: Image.Image, b: Image.Image) -> None:
    score = shared_fraction(features(a), features(b))
    assert score < VERIFIED_DEFAULT, f"{name}: shared fraction {score:.3f}"
    assert score <= 0.3, f"{name}: shared fraction {score:.3f}"


def test_scores_stay_in_range_and_do_not_depend_on_the_order() -> None:
    pictures = [SCENE, crop(SCENE, 0.85), SCENE.transpose(Image.Transpose.ROTATE_270), detailed(9),
                SCENE.crop((0, 0, W // 2, H))]
    found = [features(p) for p in pictures]
    for i, a in enumerate(found):
        for b in found[i + 1:]:
            one, two = shared_fraction(a, b), shared_fraction(b, a)
            assert one == two
            assert 0.0 <= one <= 1.0


def test_a_flat_picture_cannot_be_verified_rather_than_failing() -> None:
    flat = Image.new("L", (400, 300), 128)
    got = features(flat)
    assert len(got) < 16
    assert np.isnan(verify_pair(got, features(SCENE)))
    assert len(features(SCENE)) == KEYPOINTS


def backdrop(seed: int, w: int = 640, h: int = 480) -> Image.Image:
    """A smooth picture with no keypoints: a few broad waves of light."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w] / max(w, h)
    field = sum(rng.uniform(20, 50) * np.cos(2 * np.pi * (rng.uniform(0.3, 1.2) * (x * np.cos(t) + y * np.sin(t)))
                                             + rng.uniform(0, 6)) for t in rng.uniform(0, np.pi, 3))
    return Image.fromarray(np.clip(128 + field, 0, 255).astype(np.uint8)).convert("RGB")


def small_detail(background: Image.Image, seed: int = 7) -> Image.Image:
    """The background with one small detailed patch (a logo, a small subject): low texture."""
    picture = background.copy()
    picture.paste(detailed(seed).resize((150, 110)), (430, 300))
    return picture


LOW = small_detail(backdrop(1))


@pytest.mark.parametrize(("name", "copy", "low"), [
    ("itself, re-encoded", LOW.resize((640, 480), Image.Resampling.BICUBIC), 0.95),
    ("mirrored", LOW.transpose(Image.Transpose.FLIP_LEFT_RIGHT), 0.95),
    ("rotated 90", LOW.transpose(Image.Transpose.ROTATE_90), 0.95),
    ("crop keeping 88%", LOW.crop((40, 30, 640, 480)), 0.8),
    ("half size, brighter", ImageEnhance.Brightness(LOW.resize((320, 240))).enhance(1.3), 0.9),
])
def test_a_copy_of_a_picture_with_little_detail_verifies_through_its_thumbnail(name: str, copy: Image.Image,
                                                                              low: float) -> None:
    original = features(LOW)
    assert verify._texture(original) < MIN_TEXTURE  # the keypoints alone would not be trusted
    score = shared_fraction(original, features(copy))
    assert low <= score <= 1.0, f"{name}: shared fraction {score:.3f}"
    without_thumb = dataclasses.replace(original, thumb=None)  # features of format 1
    assert np.isnan(shared_fraction(without_thumb, features(copy)))


def flat(grey: int) -> Image.Image:
    return Image.new("RGB", (640, 480), (grey, grey, grey))


@pytest.mark.parametrize(("name", "one", "other"), [
    ("two backgrounds with light", small_detail(backdrop(1)), small_detail(backdrop(2))),
    ("two flat greys", small_detail(flat(60)), small_detail(flat(200))),
    ("flat and with light", small_detail(flat(128)), small_detail(backdrop(4))),
])
def test_two_plain_pictures_sharing_one_small_detail_do_not_verify(
    name: str, one: Image.Image, other: Image.Image, monkeypatch: pytest.MonkeyPatch
) -> None:
    a, b = features(one), features(other)
    assert np.isnan(verify_pair(a, b)), name
    assert np.isnan(verify_pair(b, a)), name
    monkeypatch.setattr(verify, "MIN_AGREEMENT", 0.0)  # the keypoints alone agree: only the thumbnails tell
    assert shared_fraction(a, b) >= VERIFIED_DEFAULT


def test_a_copy_of_a_flat_picture_with_one_small_detail_verifies() -> None:
    original = small_detail(flat(128))
    brighter = ImageEnhance.Brightness(original.resize((500, 375))).enhance(1.2)
    assert shared_fraction(features(original), features(brighter)) >= 0.95


def test_flat_pictures_whose_details_differ_are_refuted_so_the_group_check_can_drop_them() -> None:
    assert shared_fraction(features(LOW), features(small_detail(backdrop(1), seed=8))) == 0.0


def test_a_copy_aligned_exactly_shares_all_of_its_frame() -> None:
    once = features(SCENE)
    assert verify_pair(once, once) == pytest.approx(1.0, abs=1e-6)
    # the frame of a copy mapped by a fitted identity (RANSAC leaves ~1e-14 in it): OpenCV's
    # intersectConvexConvex gave 57,578 of these 68,160 px, so an exact flip scored 0.73
    mapped = np.array([[2.5752556e-14, -1.4164708e-14], [320, 6.3787409e-15], [320, 213], [1.2078322e-14, 213]])
    assert verify._area_in_frame(mapped, 320, 213) == pytest.approx(320 * 213)
    assert verify._area_in_frame(mapped * 0.5 + 200, 320, 213) == pytest.approx(120 * 13)


def test_verified_checks_candidates_and_its_threshold_is_a_shared_fraction() -> None:
    with pytest.raises(ConfigError, match="verified checks candidates"):
        parse_rule("verified>=0.5")
    with pytest.raises(ConfigError, match="at most 1"):
        parse_rule("phash<=16&verified>=1.5")
    rule = parse_rule("verified&phash<=16", min_shared=0.7)
    assert rule.label == "phash<=16&verified>=0.7"


def _encode(root: Path, store: Path, **settings: object) -> None:
    run_encode([DatasetSource("pics", str(root))], str(store), EncodeSettings(**settings), workers=1)  # type: ignore[arg-type]


def _groups(out: Path) -> list[set[str]]:
    rows = pq.read_table(out / "groups.parquet").to_pylist()
    groups: dict[int, set[str]] = {}
    for r in rows:
        groups.setdefault(r["group"], set()).add(r["rel_path"])
    return list(groups.values())


def test_a_chain_of_weak_matches_does_not_merge_pictures_that_share_too_little(tmp_path: Path) -> None:
    wide = detailed(11, 960, 360)
    # windows of 70% of the width, 15% apart: neighbours share 0.65, the two ends 0.40
    for name, left in (("a.png", 0.0), ("b.png", 0.15), ("c.png", 0.30)):
        write(tmp_path / "pics" / name, wide.crop((round(960 * left), 0, round(960 * (left + 0.7)), 360)))
    _encode(tmp_path / "pics", tmp_path / "store", encoders=("phash", "orb"))
    rules = ("phash<=64&verified",)  # every pair a candidate: only verification decides
    match_store(str(tmp_path / "store"), str(tmp_path / "checked"), MatchSettings(rules=rules))
    match_store(str(tmp_path / "store"), str(tmp_path / "chained"), MatchSettings(rules=rules, verify_groups=False))
    pairs = {frozenset((r["a"].rsplit("/", 1)[1], r["b"].rsplit("/", 1)[1]))
             for r in pq.read_table(tmp_path / "checked" / "pairs.parquet").to_pylist()}
    assert pairs == {frozenset(("a.png", "b.png")), frozenset(("b.png", "c.png"))}
    assert _groups(tmp_path / "chained") == [{"a.png", "b.png", "c.png"}]
    checked = _groups(tmp_path / "checked")
    assert len(checked) == 1
    assert len(checked[0]) == 2
    assert "b.png" in checked[0]


def test_a_picture_joined_only_through_a_flat_one_leaves_the_group(tmp_path: Path) -> None:
    write(tmp_path / "pics" / "keeper.png", detailed(31, 800, 600))  # the most pixels: the keeper
    write(tmp_path / "pics" / "flat.png", Image.new("RGB", (640, 480), (120, 130, 140)))
    write(tmp_path / "pics" / "stranger.png", detailed(32))
    _encode(tmp_path / "pics", tmp_path / "store", encoders=("phash", "orb"))
    rules = ("phash<=64",)  # accepts every pair unless verification refutes it
    match_store(str(tmp_path / "store"), str(tmp_path / "checked"), MatchSettings(rules=rules))
    match_store(str(tmp_path / "store"), str(tmp_path / "chained"), MatchSettings(rules=rules, verify_groups=False))
    pairs = {frozenset((r["a"].rsplit("/", 1)[1], r["b"].rsplit("/", 1)[1]))
             for r in pq.read_table(tmp_path / "checked" / "pairs.parquet").to_pylist()}
    assert frozenset(("keeper.png", "stranger.png")) not in pairs  # refuted: both have detail, nothing shared
    assert _groups(tmp_path / "chained") == [{"keeper.png", "flat.png", "stranger.png"}]
    assert _groups(tmp_path / "checked") == [{"keeper.png", "flat.png"}]


def test_the_default_catches_a_mirrored_copy_with_no_flag(tmp_path: Path) -> None:
    picture = natural(3)
    write(tmp_path / "pics" / "photo.jpg", picture, quality=92)
    write(tmp_path / "pics" / "mirrored.jpg", picture.transpose(Image.Transpose.FLIP_LEFT_RIGHT), quality=92)
    write(tmp_path / "pics" / "other.jpg", natural(4), quality=92)
    _encode(tmp_path / "pics", tmp_path / "store")
    match_store(str(tmp_path / "store"), str(tmp_path / "out"), MatchSettings())
    assert _groups(tmp_path / "out") == [{"photo.jpg", "mirrored.jpg"}]
    match_store(str(tmp_path / "store"), str(tmp_path / "off"), MatchSettings(orientations=False))
    assert _groups(tmp_path / "off") == []
    match_store(str(tmp_path / "store"), str(tmp_path / "fast"), MatchSettings(preset="fast"))
    assert _groups(tmp_path / "fast") == []


def test_the_default_catches_crops_through_the_windows_and_verifies_them(tmp_path: Path) -> None:
    scene = detailed(7)
    write(tmp_path / "pics" / "photo.jpg", scene, quality=92)
    write(tmp_path / "pics" / "crop20.jpg", crop(scene, 0.8, 0.7, 0.2), quality=92)
    write(tmp_path / "pics" / "crop12.jpg", crop(scene, 0.88, 0.0, 1.0), quality=92)
    write(tmp_path / "pics" / "tile.jpg", crop(scene, 0.5, 0.0, 0.0), quality=92)  # a quarter: not a copy
    write(tmp_path / "pics" / "other.jpg", detailed(8), quality=92)
    _encode(tmp_path / "pics", tmp_path / "store")
    match_store(str(tmp_path / "store"), str(tmp_path / "out"), MatchSettings())
    assert _groups(tmp_path / "out") == [{"photo.jpg", "crop20.jpg", "crop12.jpg"}]
    pairs = pq.read_table(tmp_path / "out" / "pairs.parquet").to_pylist()
    crops = [p for p in pairs if "crop20.jpg" in (p["a"].rsplit("/", 1)[1], p["b"].rsplit("/", 1)[1])]
    assert crops
    assert all(p["orientation"] == "crop" and 0.59 <= p["similarity"] <= 0.69 for p in crops)
    # the whole picture's pHash alone does not reach the crops
    match_store(str(tmp_path / "store"), str(tmp_path / "off"), MatchSettings(crops=False))
    assert {"crop20.jpg"} & set().union(*_groups(tmp_path / "off")) == set()


def test_crops_are_found_both_ways_across_a_reference_dataset_and_never_within_it(tmp_path: Path) -> None:
    first, second = detailed(7), detailed(9)
    write(tmp_path / "corpus" / "first.jpg", first, quality=92)  # the reference holds one original...
    write(tmp_path / "corpus" / "first-crop.jpg", crop(first, 0.8, 0.2, 0.8), quality=92)  # ...and its crop
    write(tmp_path / "corpus" / "second-crop.jpg", crop(second, 0.8, 0.7, 0.2), quality=92)  # ...and a crop
    write(tmp_path / "ingest" / "first-crop.jpg", crop(first, 0.8, 0.9, 0.1), quality=92)  # a crop of one
    write(tmp_path / "ingest" / "second.jpg", second, quality=92)  # the original of the other
    sources = [DatasetSource("corpus", str(tmp_path / "corpus")), DatasetSource("ingest", str(tmp_path / "ingest"))]
    run_encode(sources, str(tmp_path / "store"), EncodeSettings(), workers=1)
    match_store(str(tmp_path / "store"), str(tmp_path / "out"),
                MatchSettings(datasets=("ingest", "corpus"), reference=("corpus",)))
    pairs = {frozenset((f"{r['a_dataset']}/{r['a'].rsplit('/', 1)[1]}", f"{r['b_dataset']}/{r['b'].rsplit('/', 1)[1]}"))
             for r in pq.read_table(tmp_path / "out" / "pairs.parquet").to_pylist()}
    assert frozenset(("ingest/first-crop.jpg", "corpus/first.jpg")) in pairs  # a new crop of a kept picture
    assert frozenset(("ingest/second.jpg", "corpus/second-crop.jpg")) in pairs  # the original of a kept crop
    assert not any(all(x.startswith("corpus/") for x in p) for p in pairs)  # the reference is never matched


def test_a_dataset_encoded_before_the_windows_existed_is_matched_without_them(tmp_path: Path) -> None:
    scene = detailed(7)
    write(tmp_path / "old" / "photo.jpg", scene, quality=92)
    write(tmp_path / "new" / "crop.jpg", crop(scene, 0.8, 0.7, 0.2), quality=92)
    write(tmp_path / "new" / "mirrored.jpg", scene.transpose(Image.Transpose.FLIP_LEFT_RIGHT), quality=92)
    store = str(tmp_path / "store")
    run_encode([DatasetSource("old", str(tmp_path / "old"))], store,
               EncodeSettings(encoders=("phash", "dhash", "orb")), workers=1)  # no dihedral or window hashes
    run_encode([DatasetSource("new", str(tmp_path / "new"))], store, EncodeSettings(), workers=1)
    match_store(store, str(tmp_path / "out"), MatchSettings())
    # the mirrored copy's own orientations reach the old photo's pHash; a crop needs the photo's windows
    assert _groups(tmp_path / "out") == [{"photo.jpg", "mirrored.jpg"}]
    run_encode([DatasetSource("old", str(tmp_path / "old"))], store, EncodeSettings(), workers=1)
    match_store(store, str(tmp_path / "again"), MatchSettings())
    assert _groups(tmp_path / "again") == [{"photo.jpg", "crop.jpg", "mirrored.jpg"}]


def test_crops_without_a_rule_that_verifies_are_refused(tmp_path: Path) -> None:
    write(tmp_path / "pics" / "photo.jpg", natural(3))
    _encode(tmp_path / "pics", tmp_path / "store")
    with pytest.raises(ConfigError, match="--crops searches crops for rules on pHash that verify"):
        match_store(str(tmp_path / "store"), str(tmp_path / "out"),
                    MatchSettings(crops=True, rules=("exact", "phash<=10")))


def test_thorough_on_a_store_without_its_encodings_says_how_to_encode(tmp_path: Path) -> None:
    write(tmp_path / "pics" / "photo.jpg", natural(3))
    _encode(tmp_path / "pics", tmp_path / "store")
    with pytest.raises(ConfigError, match="encode it with --preset thorough"):
        match_store(str(tmp_path / "store"), str(tmp_path / "out"), MatchSettings(preset="thorough"))


@pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="needs the [cnn] extra")
def test_preset_thorough_on_the_command_line_encodes_and_matches_the_thorough_path(tmp_path: Path) -> None:
    from conftest import run_cli

    scene = detailed(21)
    write(tmp_path / "pics" / "scene.jpg", scene, quality=92)
    write(tmp_path / "pics" / "cropped.jpg", crop(scene, 0.8), quality=92)
    write(tmp_path / "pics" / "other.jpg", detailed(22), quality=92)
    run_cli("encode", "--dataset", f"pics={tmp_path / 'pics'}", "--store", str(tmp_path / "store"),
            "--preset", "thorough")
    record = json.loads((tmp_path / "store" / "_dupflow" / "store.json").read_text())
    assert {"cnn", "orb", "phash_dihedral"} <= set(record["encoders"])
    run_cli("match", "--store", str(tmp_path / "store"), "--out", str(tmp_path / "out"), "--preset", "thorough")
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["settings"]["rules"] == [parse_rule(r).label for r in THOROUGH_RULES]
    assert _groups(tmp_path / "out") == [{"scene.jpg", "cropped.jpg"}]
    pair = pq.read_table(tmp_path / "out" / "pairs.parquet").to_pylist()
    assert any(0.59 <= p["similarity"] <= 0.69 for p in pair)  # the crop keeps 64% of the scene


def test_blocks_matched_in_other_processes_hand_their_verified_pairs_to_the_one_that_decides(tmp_path: Path) -> None:
    from dupflow.index.blocks import Block
    from dupflow.match import job as jobs

    scene = detailed(7)
    write(tmp_path / "pics" / "photo.jpg", scene, quality=92)
    write(tmp_path / "pics" / "flip.jpg", scene.transpose(Image.Transpose.FLIP_LEFT_RIGHT), quality=92)
    write(tmp_path / "pics" / "crop20.jpg", crop(scene, 0.8, 0.7, 0.2), quality=92)
    write(tmp_path / "pics" / "small.jpg", scene.resize((320, 240)), quality=80)
    write(tmp_path / "pics" / "other.jpg", detailed(8), quality=92)
    _encode(tmp_path / "pics", tmp_path / "store")
    settings = MatchSettings(incremental=False, duplicates_root=str(tmp_path / "dups"))
    match_store(str(tmp_path / "store"), str(tmp_path / "one"), settings)

    def decided(out: str, hand_over: bool) -> int:
        job = jobs.plan_match(str(tmp_path / "store"), out, settings, {})
        blocks = []
        for k in range(2):
            jobs._PREPARED.clear()  # each block in a process of its own
            found = jobs.match_rules_block(job, Block(k, 2))
            blocks.append(found if hand_over else jobs.BlockResult(found.pairs, np.zeros((0, 3))))
        jobs._PREPARED.clear()  # and the decision in another
        jobs.finish_match_blocks(job, blocks)
        features = jobs.prepared(job).images.features
        assert features is not None
        return features.verified

    verified_anew = decided(str(tmp_path / "alone"), hand_over=False)
    verified_after_hand_over = decided(str(tmp_path / "handed"), hand_over=True)
    assert verified_after_hand_over < verified_anew
    for out in ("alone", "handed"):
        for name in ("pairs.parquet", "groups.parquet", "manifest.parquet"):
            assert pq.read_table(tmp_path / out / name).equals(pq.read_table(tmp_path / "one" / name)), (out, name)


def test_local_features_hold_each_distinct_value_once_and_take_rows_with_their_gaps() -> None:
    import pyarrow as pa

    from dupflow.match.verify import LocalFeatures

    one, other = (extract_features(np.asarray(detailed(seed).convert("L"))) for seed in (3, 4))
    held = LocalFeatures.held(pa.array([one, None, other, one], pa.binary()))
    assert held.present().tolist() == [True, False, True, True]
    assert held.key[0] == held.key[3] != held.key[2]
    taken = held.take(np.array([3, 1, 2]))
    assert taken.present().tolist() == [True, False, True]
    assert taken.scores(np.array([0]), np.array([2]))[0] == held.scores(np.array([3]), np.array([2]))[0]


def test_a_match_process_fetches_only_the_features_of_pictures_it_verifies(tmp_path: Path,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    import pyarrow as pa

    from dupflow.index.blocks import Block
    from dupflow.match import job as jobs
    from dupflow.match.verify import LocalFeatures
    from dupflow.store import column_rows, encodings

    monkeypatch.setattr(encodings, "ROW_GROUP_ROWS", 3)  # the pictures' features lie in several row groups
    scene = detailed(31)
    write(tmp_path / "pics" / "photo.jpg", scene, quality=92)
    for seed in range(32, 40):
        write(tmp_path / "pics" / f"other{seed}.jpg", detailed(seed), quality=92)
    (tmp_path / "pics" / "broken.jpg").write_bytes(b"")  # a file that cannot be read: a null in its row group
    write(tmp_path / "val" / "zflip.jpg", scene.transpose(Image.Transpose.FLIP_LEFT_RIGHT), quality=92)
    # the same pixels in other bytes (data after the end of the JPEG): another `exact`, the same features
    (tmp_path / "val" / "padded.jpg").write_bytes((tmp_path / "pics" / "photo.jpg").read_bytes() + b"\0" * 16)
    sources = [DatasetSource("pics", str(tmp_path / "pics")), DatasetSource("val", str(tmp_path / "val"))]
    run_encode(sources, str(tmp_path / "store"), EncodeSettings(), workers=1)
    parts = sorted((tmp_path / "store" / "encodings").rglob("*.parquet"))
    assert [pq.ParquetFile(p).metadata.num_row_groups for p in parts] == [4, 1]

    reads: list[tuple[int, int]] = []
    real = column_rows.StoredColumn._group

    def group(self: column_rows.StoredColumn, f: int, g: int) -> object:
        reads.append((f, g))
        return real(self, f, g)

    monkeypatch.setattr(column_rows.StoredColumn, "_group", group)
    settings = MatchSettings(datasets=("val", "pics"), incremental=False, duplicates_root=str(tmp_path / "dups"))
    job = jobs.plan_match(str(tmp_path / "store"), str(tmp_path / "out"), settings, {})
    jobs._PREPARED.clear()
    images = jobs.prepared(job).images
    features = images.features
    assert features is not None
    assert reads == []  # preparing reads no features, not even the group holding the unreadable file
    jobs.finish_match_blocks(job, [jobs.match_rules_block(job, Block(0, 1))])
    assert _groups(tmp_path / "out") == [{"zflip.jpg", "padded.jpg", "photo.jpg"}]
    assert 2 <= features.fetched < len(images)  # the candidates' features, not all eleven
    pairs = pq.read_table(tmp_path / "out" / "pairs.parquet").to_pylist()
    padded = [p["similarity"] for p in pairs if {Path(p["a"]).name, Path(p["b"]).name} == {"photo.jpg", "padded.jpg"}]
    assert padded
    assert set(padded) == {1.0}

    stored = pa.concat_tables([pq.read_table(p, columns=["uri", "orb"]) for p in parts])
    order = pa.compute.index_in(images.table["uri"], stored["uri"]).to_numpy()
    held = LocalFeatures.held(stored["orb"].take(pa.array(order)))
    a, b = np.triu_indices(len(images), 1)
    np.testing.assert_array_equal(features.scores(a, b), held.scores(a, b))  # NaN where either cannot tell


def test_two_keys_holding_one_value_score_as_one_value_and_a_missing_value_cannot_tell() -> None:
    from PIL import ImageDraw

    from dupflow.match.verify import LocalFeatures

    board = Image.new("L", (640, 480), 255)  # a chessboard: every keypoint matches many, RANSAC finds no one fit
    for x in range(0, 640, 40):
        for y in range(0, 480, 40):
            if (x // 40 + y // 40) % 2:
                ImageDraw.Draw(board).rectangle([x, y, x + 39, y + 39], fill=0)
    value = extract_features(np.asarray(board))
    assert verify_pair(parse_features(value), parse_features(value)) == 0.0
    one = LocalFeatures(np.array([0, 1]), lambda keys: [value for _ in keys])  # two files, the same pixels
    assert one.scores(np.array([0]), np.array([1]))[0] == 1.0
    gone = LocalFeatures(np.array([0, 1]), lambda keys: [None for _ in keys])
    assert np.isnan(gone.scores(np.array([0, 0]), np.array([1, 0]))).all()
