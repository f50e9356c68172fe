"""The Python API: the README's example runs as written; settings given whole or as keywords agree; bad
settings and unfinished runs are clear errors; `import dupflow` and the API's stages import no Prefect."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

import dupflow
from dupflow.match.settings import MatchSettings
from imagegen import dataset

ROOT = Path(__file__).resolve().parents[1]
ORCHESTRATION = ("prefect", "prefect_dask", "dask", "distributed")


def readme_example() -> str:
    """The README's Python API example, as a user would paste it."""
    section = (ROOT / "README.md").read_text().split("## Python API", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match is not None
    return match.group(1)


def _plant(root: Path) -> dict[str, bytes]:
    """data/train and data/val with one picture copied within train and one leaked into val; the bytes
    of the copies that the example moves."""
    train = dataset(root / "data" / "train", 8, seed=3)
    val = dataset(root / "data" / "val", 5, seed=4)
    (root / "data/train/copy_of_0.jpg").write_bytes(train[0].read_bytes())
    (root / "data/train/leaked.jpg").write_bytes(val[1].read_bytes())
    return {p: (root / p).read_bytes() for p in ("data/train/copy_of_0.jpg", "data/train/leaked.jpg")}


@pytest.mark.slow
def test_the_readme_example_runs_and_imports_no_prefect(tmp_path: Path) -> None:
    before = _plant(tmp_path)
    probe = ("\nimport sys, json\n"
             "print(json.dumps({'groups': found.group_count, 'moved': done.counts, 'dry': dry.counts,\n"
             "    'report': page.path, 'orchestration': sorted(m for m in sys.modules\n"
             f"        if m.split('.')[0] in {ORCHESTRATION!r})}}))\n")
    script = "if __name__ == '__main__':\n" + "".join(
        f"    {line}\n" for line in (readme_example() + probe).splitlines())
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True,
                          timeout=300, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen["groups"] == 2
    assert seen["dry"] == {"would_move": 2}
    assert seen["moved"] == {"moved": 2}
    assert seen["orchestration"] == []
    assert (tmp_path / seen["report"]).is_file()
    for path, data in before.items():  # undone: every moved file is back, byte for byte
        assert (tmp_path / path).read_bytes() == data
    manifest = pq.read_table(tmp_path / "out" / "manifest.parquet").to_pylist()
    assert {Path(r["source"]).name for r in manifest} == {"copy_of_0.jpg", "leaked.jpg"}  # the older copy stays
    assert all(r["dataset"] == "train" for r in manifest)  # val is the reference: its copy stays


def test_settings_given_as_a_model_or_as_keywords_find_the_same(tmp_path: Path) -> None:
    _plant(tmp_path)
    datasets = {"train": str(tmp_path / "data/train"), "val": str(tmp_path / "data/val")}
    report = dupflow.encode_images(datasets, str(tmp_path / "store"), workers=1, encoders=["phash"])
    assert report.encoded == 15
    by_keyword = dupflow.find_duplicates(str(tmp_path / "store"), str(tmp_path / "a"), rules=["phash<=4"])
    by_model = dupflow.find_duplicates(str(tmp_path / "store"), str(tmp_path / "b"),
                                       MatchSettings(rules=("phash<=4",)))
    assert by_keyword.pairs.num_rows == 2
    assert by_keyword.pairs.select(["a", "b"]).equals(by_model.pairs.select(["a", "b"]))
    assert by_keyword.summary["settings"]["rules"] == ["phash<=4"]
    reopened = dupflow.open_duplicates(str(tmp_path / "a"))
    assert reopened.groups.equals(by_keyword.groups)
    assert reopened.scores.num_rows == 15


def test_a_bad_setting_is_a_config_error_that_names_it(tmp_path: Path) -> None:
    with pytest.raises(dupflow.ConfigError, match="hash_size"):
        dupflow.encode_images({"a": str(tmp_path)}, str(tmp_path / "store"), hash_size=12)
    with pytest.raises(dupflow.ConfigError, match="no_such_setting"):
        dupflow.find_duplicates(str(tmp_path / "store"), str(tmp_path / "out"), no_such_setting=1)
    with pytest.raises(dupflow.ConfigError, match="MatchSettings"):
        dupflow.find_duplicates(str(tmp_path / "store"), str(tmp_path / "out"),
                                dupflow.EncodeSettings())  # type: ignore[arg-type]


def test_a_folder_without_a_finished_run_names_the_command_that_makes_one(tmp_path: Path) -> None:
    with pytest.raises(dupflow.ConfigError, match="dupflow match"):
        dupflow.open_duplicates(str(tmp_path))


def test_importing_dupflow_imports_nothing_heavy() -> None:
    code = ("import sys, dupflow; dupflow.ConfigError; "
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'numpy', 'pyarrow', 'pydantic', 'PIL', "
            "'fsspec', 'prefect', 'dask', 'sklearn'})); dupflow.EncodeSettings; print('pydantic' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    heavy, loaded = done.stdout.split()[0], done.stdout.split()[-1]
    assert heavy == "[]"
    assert loaded == "True"  # a name is there when used
    with pytest.raises(AttributeError, match="no_such_name"):
        dupflow.no_such_name  # type: ignore[attr-defined]  # noqa: B018
