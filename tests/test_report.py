"""The HTML report's content: every image and pair of the run, keepers as the policy picks them,
thumbnails, the user's scores, safe names, no secrets, and clear errors."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import re
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from conftest import run_cli
from dupflow import __version__
from dupflow.encode.settings import EncodeSettings
from dupflow.errors import ConfigError
from dupflow.io.sources import DatasetSource
from dupflow.match.job import match_store
from dupflow.match.settings import MatchSettings
from dupflow.report import ReportSettings, write_report
from dupflow.report.page import safe_json
from dupflow.report.payload import duplication
from dupflow.store.encode_job import run_encode
from reportworld import HOSTILE, Reported, page_data, report_world


@pytest.fixture(scope="module")
def reported(tmp_path_factory: pytest.TempPathFactory) -> Reported:
    return report_world(tmp_path_factory.mktemp("report-world"))


@pytest.fixture(scope="module")
def page(reported: Reported) -> str:
    write_report(str(reported.out), ReportSettings(extra_scores=str(reported.scores_file)))
    return (reported.out / "report.html").read_text(encoding="utf-8")


def test_the_page_carries_every_image_and_pair_of_the_run(reported: Reported, page: str) -> None:
    data = page_data(page)
    scores = pq.read_table(reported.out / "scores.parquet")
    pairs = pq.read_table(reported.out / "pairs.parquet")
    assert data["images"]["uri"] == scores["uri"].to_pylist()
    assert data["images"]["status"] == scores["status"].to_pylist()
    uris = data["images"]["uri"]
    got = {(uris[a], uris[b], s) for a, b, s in zip(data["pairs"]["a"], data["pairs"]["b"], data["pairs"]["s"],
                                                    strict=True)}
    assert got == {(r["a"], r["b"], round(r["similarity"], 6)) for r in pairs.to_pylist()}
    assert data["summary"]["totals"] == json.loads((reported.out / "summary.json").read_text())["totals"]


def test_duplication_counts_each_group_once_and_every_file_in_it() -> None:
    # groups 0 (2 files) and 1 (3 files); a lone id is in no duplicate group; None is in no group
    assert duplication([0, None, 1, 0, 1, 7, 1, None]) == {"images": 2, "files": 5, "sizes": [[2, 1], [3, 1]]}
    assert duplication([None, None]) == {"images": 0, "files": 0, "sizes": []}


def test_the_page_counts_duplicated_images_as_the_run_grouped_them(reported: Reported, page: str) -> None:
    groups = pq.read_table(reported.out / "groups.parquet")["group"].to_pylist()
    summary = json.loads((reported.out / "summary.json").read_text())
    members: dict[int, int] = {}
    for g in groups:
        members[g] = members.get(g, 0) + 1
    sizes: dict[int, int] = {}
    for n in members.values():
        sizes[n] = sizes.get(n, 0) + 1
    got = page_data(page)["duplication"]
    assert got == {"images": len(members), "files": len(groups), "sizes": sorted([n, c] for n, c in sizes.items())}
    assert got["images"] == summary["totals"]["groups"]
    assert len(got["sizes"]) >= 2, "the world needs groups of more than one size"


def test_thumbnails_are_small_images_for_every_readable_file(reported: Reported, page: str) -> None:
    data, thumbs = page_data(page), page_data(page, "dupflow-thumbs")
    readable = [i for i, s in enumerate(data["images"]["status"]) if s != "error"]
    assert sorted(i for i, t in enumerate(data["images"]["thumb"]) if t >= 0) == readable
    for uri in thumbs:
        head, _, body = uri.partition(",")
        assert head == "data:image/webp;base64"
        with Image.open(io.BytesIO(base64.b64decode(body))) as im:
            assert im.format == "WEBP"
            assert max(im.size) <= 160
    record = json.loads((reported.out / "report.json").read_text())
    assert record["bytes"] == (reported.out / "report.html").stat().st_size
    assert record["thumbnails"] == len(readable)


def test_the_report_keeps_its_own_record_and_never_writes_the_runs_files(reported: Reported, tmp_path: Path) -> None:
    out = tmp_path / "run"
    shutil.copytree(reported.out, out, ignore=shutil.ignore_patterns("report.*"))
    def run_files_now() -> dict[str, bytes]:  # every file of the run, its match state included
        return {str(p.relative_to(out)): p.read_bytes() for p in out.rglob("*")
                if p.is_file() and not p.name.startswith("report.")}

    run_files = run_files_now()
    result = write_report(str(out), ReportSettings(thumbnails=2))
    assert run_files_now() == run_files
    assert sorted(set(os.listdir(out)) - {Path(k).parts[0] for k in run_files}) == ["report.html", "report.json"]
    record = json.loads((out / "report.json").read_text())
    assert record == {**result.brief(), "matches": str(out), "dupflow": __version__,
                      "generated": record["generated"], "extra_scores": None}
    assert record["path"] == f"{out}/report.html"
    assert record["thumbnails"] == 2
    assert record["bytes"] == (out / "report.html").stat().st_size
    assert set(record["seconds"]) == {"loaded", "thumbnails", "written"}
    assert record["thumbnail_failures"] == 0


def test_the_viewer_picks_the_keeper_the_run_picked(reported: Reported, page: str) -> None:
    data = page_data(page)
    rank = data["images"]["rank"]
    uris = data["images"]["uri"]
    groups: dict[int, list[dict[str, object]]] = {}
    for row in pq.read_table(reported.out / "groups.parquet").to_pylist():
        groups.setdefault(int(row["group"]), []).append(row)
    assert len(groups) >= 5
    for members in groups.values():
        best = min(members, key=lambda r: rank[uris.index(r["uri"])])
        assert best["keeper"], f"the keep rank prefers {best['uri']} over the run's keeper"


def test_hostile_file_names_stay_inert_text(page: str) -> None:
    assert HOSTILE not in page
    assert "onerror=" not in page.replace("onerror=alert(1)\\u003e", "")
    assert len(re.findall(r"<script\b", page)) == 3  # the two data blocks and the viewer, nothing else
    assert HOSTILE in page_data(page)["images"]["name"]  # the name survives, as data
    policy = re.search(r'http-equiv="Content-Security-Policy" content="([^"]+)"', page)
    assert policy
    assert "default-src &#x27;none&#x27;" in policy.group(1)
    script = re.findall(r"<script>(.*?)</script>", page, re.S)[0]
    digest = base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()
    assert f"sha256-{digest}" in policy.group(1)  # only this script may run
    assert "img-src data: file:;" in policy.group(1)  # thumbnails, and the local originals the pair view shows


def test_data_blocks_cannot_be_closed_by_data() -> None:
    text = safe_json({"name": "</script><script>alert(1)</script>", "amp": "a&b", "sep": "\u2028"})
    assert "<" not in text
    assert ">" not in text
    assert "&" not in text
    assert "\u2028" not in text
    assert json.loads(text)["name"] == "</script><script>alert(1)</script>"


def test_extra_scores_are_aligned_by_uri(reported: Reported, page: str) -> None:
    data = page_data(page)
    rows = {r["uri"]: r for r in pa.csv.read_csv(reported.scores_file).to_pylist()}
    extra = data["extra"]
    assert extra["columns"] == ["confidence", "label"]
    assert extra["matched"] == len(rows)
    for i, uri in enumerate(data["images"]["uri"]):
        assert extra["values"]["confidence"][i] == rows[uri]["confidence"]
        assert extra["values"]["label"][i] == rows[uri]["label"]


@pytest.mark.parametrize(("table", "message"), [
    ({"path": ["a"], "score": [1.0]}, "no `uri` or `rel_path` column"),
    ({"uri": ["x", "x"], "score": [1.0, 2.0]}, "names 'x' more than once"),
    ({"uri": ["x"], "score": [[1.0]]}, "use numbers, text or booleans"),
])
def test_a_bad_score_file_says_what_is_wrong(reported: Reported, tmp_path: Path, table: dict[str, list[object]],
                                             message: str) -> None:
    bad = tmp_path / "scores.parquet"
    pq.write_table(pa.table(table), bad)
    with pytest.raises(ConfigError, match=re.escape(message)):
        write_report(str(tmp_path / "out"), ReportSettings(extra_scores=str(bad)), matches=str(reported.out))


def test_unknown_score_columns_are_named(reported: Reported, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no column nope; it has: uri, confidence, label"):
        write_report(str(tmp_path / "out"), ReportSettings(extra_scores=str(reported.scores_file),
                                                           extra_score_cols=("nope",)), matches=str(reported.out))


def test_a_report_elsewhere_reads_the_run_and_names_it(reported: Reported, tmp_path: Path) -> None:
    other_run = tmp_path / "elsewhere" / "summary.json"  # OUT may hold another match run: it stays as it was
    other_run.parent.mkdir()
    other_run.write_text('{"another": "run"}')
    result = write_report(str(tmp_path / "elsewhere"), ReportSettings(thumbnails=3, originals="none"),
                          matches=str(reported.out))
    html = (tmp_path / "elsewhere" / "report.html").read_text()
    data = page_data(html)
    assert set(data["images"]["link"]) == {None}
    assert "img-src data:;" in html
    assert result.thumbnails == 3 == sum(1 for t in data["images"]["thumb"] if t >= 0)
    grouped = {i for i, g in enumerate(data["images"]["group"]) if g is not None}
    assert {i for i, t in enumerate(data["images"]["thumb"]) if t >= 0} <= grouped  # groups get them first
    assert other_run.read_text() == '{"another": "run"}'
    assert data["summary"]["totals"] == json.loads((reported.out / "summary.json").read_text())["totals"]
    record = json.loads((tmp_path / "elsewhere" / "report.json").read_text())
    assert record["matches"] == str(reported.out)
    assert record["thumbnails"] == 3


def test_a_vanished_file_is_reported_not_fatal(tmp_path: Path) -> None:
    world = report_world(tmp_path)
    gone = world.world.distinct[7]
    gone.unlink()
    result = write_report(str(world.out), ReportSettings())
    data = page_data((world.out / "report.html").read_text())
    i = data["images"]["uri"].index(str(gone))
    assert result.thumbnail_failures == 1
    assert data["images"]["thumb"][i] == -1
    assert data["thumb_failures"][str(i)].startswith("vanished")


def test_the_projection_covers_every_grouped_image(page: str) -> None:
    data = page_data(page)
    projected = data["projection"]
    grouped = {i for i, g in enumerate(data["images"]["group"]) if g is not None}
    assert projected["source"] == "phash"
    assert grouped <= set(projected["img"])
    assert all(0 <= v <= 1 for v in projected["x"] + projected["y"])
    assert len(set(zip(projected["x"], projected["y"], strict=True))) > len(projected["x"]) // 2


def test_report_without_a_match_run_names_the_command(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="run `dupflow match --store STORE --out"):
        write_report(str(tmp_path), ReportSettings())


def test_report_cli_prints_where_the_page_is(reported: Reported, tmp_path: Path) -> None:
    out = tmp_path / "cli"
    proc = run_cli("report", "--out", str(out), "--matches", str(reported.out), "--thumb-size", "64",
                   "--thumb-format", "jpeg", "--extra-scores", str(reported.scores_file), "--extra-score-cols",
                   "confidence")
    assert f"report: {out}/report.html" in proc.stdout
    data = page_data((out / "report.html").read_text())
    assert list(data["extra"]["values"]) == ["confidence"]
    assert data["meta"]["thumb_size"] == 64
    assert page_data((out / "report.html").read_text(), "dupflow-thumbs")[0].startswith("data:image/jpeg;base64,")
    bad = run_cli("report", "--out", str(tmp_path / "none"), check=False)
    assert bad.returncode == 1
    assert "no finished match run" in bad.stderr


@pytest.mark.s3
def test_no_credentials_reach_the_page_unless_links_are_presigned(bucket: str, tmp_path: Path) -> None:
    import s3fs

    from imagegen import dataset

    files = dataset(tmp_path / "imgs", 6, seed=3)
    (tmp_path / "imgs" / "copy.jpg").write_bytes(files[0].read_bytes())
    fs = s3fs.S3FileSystem()
    fs.put(str(tmp_path / "imgs"), f"{bucket}/imgs", recursive=True)
    secret = {"key": "AKIAREPORTTESTKEY", "secret": "s3cr3t-never-in-a-page"}
    store, out = f"s3://{bucket}/store", f"s3://{bucket}/out"
    run_encode([DatasetSource("d", f"s3://{bucket}/imgs")], store, EncodeSettings(storage_options=secret))
    match_store(store, out, MatchSettings(), secret)
    write_report(out, ReportSettings(), storage_options=secret)
    plain = fs.cat(f"{bucket}/out/report.html").decode()
    assert page_data(plain)["images"]["link"] == [None] * 7
    assert "AKIAREPORTTESTKEY" not in plain
    assert "s3cr3t" not in plain
    assert "Signature" not in plain
    write_report(out, ReportSettings(originals="presign", presign_seconds=600), storage_options=secret)
    signed = fs.cat(f"{bucket}/out/report.html").decode()
    links = page_data(signed)["images"]["link"]
    assert all(link and link.startswith("http") and "Signature=" in link for link in links)
    assert "s3cr3t" not in signed
