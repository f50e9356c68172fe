"""DedupConfig: the flow's one parameter, `dupflow run`'s flags and dupflow.yaml, validated in one place."""

from __future__ import annotations

from pathlib import Path

import pytest

from dupflow.config import ADDRESS_ENV, load_config, validate_config
from dupflow.errors import ConfigError, StorageError

BASE = {"datasets": [{"name": "train", "url": "/data/train"}, {"name": "corpus", "url": "s3://b/corpus"}],
        "store": "s3://b/store", "out": "s3://b/runs/one"}


def test_yaml_config_with_overrides_becomes_settings(tmp_path: Path) -> None:
    path = tmp_path / "dupflow.yaml"
    path.write_text("datasets:\n  - {name: train, url: /data/train}\n  - {name: corpus, url: s3://b/corpus}\n"
                    "store: s3://b/store\nout: s3://b/runs/one\nmatch: {reference: [corpus], rules: ['phash<=8']}\n"
                    "storage_options: [endpoint_url=http://127.0.0.1:9000]\n")
    config = load_config(str(path), {"out": "/tmp/out"})
    assert config.out == "/tmp/out"
    assert config.run_name() == "dedup-train-vs-corpus-into-out"
    match = config.match_settings()
    assert match.datasets == ("train", "corpus")
    assert match.reference == ("corpus",)
    assert match.rules == ("phash<=8",)
    assert config.encode_settings().storage_options["endpoint_url"] == "http://127.0.0.1:9000"


@pytest.mark.parametrize(("change", "message"), [
    ({"datasets": []}, "at least 1"),
    ({"match": {"reference": ["nope"]}}, "not among the datasets"),
    ({"match": {"reference": ["train", "corpus"]}}, "at least one must be matched"),
    ({"match": {"rules": ["phash<=x"]}}, "phash"),
    ({"encode": {"encoders": ["md5"]}}, "unknown encoder"),
    ({"encoders": ["phash"]}, "encoders: unknown setting; allowed here: apply, cluster, datasets, encode"),
    ({"match": {"datasets": ["train"]}}, "match.datasets comes from datasets"),
    ({"encode": {"hash_size": 12}}, "encode.hash_size"),
    ({"cluster": {"address": "scheduler:8786"}}, "tcp://HOST:8786"),
    ({"cluster": {"address": "tcp://s:8786", "workers": 2}}, "drop it"),
    ({"match": {"keep": ["biggest"]}}, "keep"),
    ({"apply": True}, "apply"),
    ({"apply": {"execute": "yes please"}}, "apply.execute"),
    ({"apply": {"on_conflict": "overwrite"}}, "apply.on_conflict"),
    ({"apply": {"sidecars": ["txt"]}}, "look like .txt"),
    ({"apply": {"annotations": {"nope": "/labels"}}}, "apply.annotations are not among"),
    ({"apply": {"execute": True, "delete": True}}, "apply.delete"),
    ({"datasets": [{"name": "a", "url": "/x"}, {"name": "a", "url": "/y"}]}, "used twice"),
    ({"report": {"thumb_size": 4}}, "report.thumb_size"),
    ({"report": {"originals": "public"}}, "report.originals"),
    ({"report": {"thumbs": 5}}, "report.thumbs: unknown setting; allowed here: extra_score_cols, extra_scores"),
])
def test_bad_settings_are_refused_with_the_fix(change: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        validate_config({**BASE, **change})


def test_scheduler_address_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ADDRESS_ENV, "tcp://scheduler:8786")
    assert validate_config(BASE).cluster.address == "tcp://scheduler:8786"
    monkeypatch.delenv(ADDRESS_ENV)
    assert validate_config(BASE).cluster.address is None


def test_a_config_file_that_is_not_a_mapping_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "dupflow.yaml"
    path.write_text("- just\n- a list\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(str(path))
    with pytest.raises(StorageError, match="does not exist"):
        load_config(str(tmp_path / "missing.yaml"))


def test_apply_is_off_by_default_and_journals_beside_the_outputs() -> None:
    assert validate_config(BASE).apply is None
    config = validate_config({**BASE, "apply": {"sidecars": [".txt"]}})
    assert config.apply is not None
    assert not config.apply.execute
    assert config.journal() == f"{BASE['out']}/apply-journal"
    assert config.apply.options().sidecars == (".txt",)


def test_the_report_is_on_by_default_and_can_be_turned_off() -> None:
    report = validate_config({**BASE, "encode": {"max_pixels": 1000}}).report_settings()
    assert report is not None
    assert report.thumbnails == 20_000
    assert report.max_pixels == 1000  # the encode stage's limit
    assert validate_config({**BASE, "report": None}).report_settings() is None
    tuned = validate_config({**BASE, "report": {"thumbnails": 5, "extra_score_cols": ["confidence"]}}).report
    assert tuned is not None
    assert tuned.extra_score_cols == ("confidence",)
