"""`dupflow match`: read the encodings store, match, decide, and write the five output files."""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from dupflow.encode.features import FEATURES_ENCODER as FEATURES
from dupflow.errors import ConfigError, StoreError
from dupflow.index.blocks import Block
from dupflow.io.fs import atomic_write, join, open_fs, storage_error, to_uri
from dupflow.io.uris import redact
from dupflow.match.decisions import Decisions, decide
from dupflow.match.digests import file_digests
from dupflow.match.embeddings import STORE_COLUMN, embeddings_from_file, embeddings_from_store, read_embeddings_file
from dupflow.match.matching import ClassPairs, Images, RuleMatch, RuleSearch, prepare_search
from dupflow.match.rules import COSINE, VERIFIED, Rule, orientable, searches_crops
from dupflow.match.settings import MatchSettings
from dupflow.match.state import RuleState, read_state, state_fingerprint, state_token, write_state
from dupflow.match.summary import build_summary
from dupflow.match.verify import LocalFeatures
from dupflow.schemas import manifest_metadata, parquet_bytes
from dupflow.store.column_rows import StoredColumn
from dupflow.store.encodings import LOCATION, EncodingsStore, StoreRecord

__all__ = [
    "BLOCK_IMAGES",
    "OUTPUT_FILES",
    "BlockResult",
    "MatchJob",
    "MatchReport",
    "PreparedMatch",
    "cluster_blocks",
    "finish_match",
    "finish_match_blocks",
    "load_images",
    "match_block",
    "match_rules_block",
    "match_store",
    "plan_match",
    "plan_rules",
    "prepared",
    "rule_count",
    "write_outputs",
]

BLOCK_IMAGES = 1_000  # the fewest images a flow's match task searches (see cluster_blocks)
OUTPUT_FILES = ("pairs.parquet", "groups.parquet", "scores.parquet", "manifest.parquet", "summary.json")
_BASE_COLUMNS = ["uri", "rel_path", "size", "mtime", "etag", "width", "height", "error", "dataset", "exact"]


@dataclass
class MatchReport:
    """What a match run wrote and found."""

    out: str
    summary: dict[str, Any]
    seconds: dict[str, float] = field(default_factory=dict)
    # how much of the search the previous run's state spared: mode (full | incremental), why, and per rule
    # the classes, those searched and the pairs reused
    search: dict[str, Any] = field(default_factory=dict)


def load_images(store: EncodingsStore, settings: MatchSettings) -> tuple[Images, pa.Table, int]:
    """The valid images to match (sorted by dataset priority, then uri), the error rows, and the
    store's hash size. Refuses rules whose encodings the store lacks, naming the encode command."""
    rec = store.complete_record()
    hash_size = int(rec.settings.get("hash_size", 8))
    names = list(settings.datasets) or sorted(rec.datasets)
    missing = [d for d in [*names, *settings.reference] if d not in rec.datasets]
    if missing:
        raise ConfigError(f"the store has no dataset {', '.join(sorted(set(missing)))}; it has: "
                          f"{', '.join(sorted(rec.datasets)) or 'none'}")
    rules = settings.parsed_rules(hash_size, rec.encoders)
    cosine = any(r.uses_embeddings for r in rules)
    wanted = [FEATURES if m == VERIFIED else m for r in rules for m in (c.metric for c in r.conditions)
              if m != COSINE]
    if settings.uses_orientations(rec.encoders):
        wanted.append("phash_dihedral")
    if settings.uses_windows(rec.encoders, rules):
        wanted += ["phash_windows", FEATURES]
    if FEATURES in rec.encoders:  # scores every pair and checks groups, whatever the rules
        wanted.append(FEATURES)
    if cosine and settings.embeddings is None:
        wanted.append(STORE_COLUMN)
    lacking = sorted({m for m in wanted if m != "exact" and m not in rec.encoders})
    if lacking:
        have = ",".join(rec.encoders)
        raise ConfigError(
            f"the store has no {', '.join(lacking)} encodings: re-run `dupflow encode ... --encoders "
            f"{','.join(dict.fromkeys([*rec.encoders, *lacking]))}` (only the new encoders are computed"
            f" for files already encoded with {have})"
        )
    lazy = FEATURES in wanted  # fetched by row where a pair needs them: never the whole column
    columns = list(dict.fromkeys([*_BASE_COLUMNS, *(m for m in wanted if m not in ("exact", FEATURES))]))
    table = store.read(columns, names, located=lazy, record=rec)
    failed = pc.is_valid(table["error"])
    errors = table.filter(failed).select(["uri", "dataset", "rel_path", "error"])
    valid = table.filter(pc.invert(failed)) if len(errors) else table  # a filter copies the whole table
    rank = {d: i for i, d in enumerate(names)}
    dataset_ix = _dataset_index(valid["dataset"], rank)
    if not _in_order(valid["uri"], dataset_ix):  # the store keeps each dataset sorted by uri
        order = np.lexsort((pc.sort_indices(valid["uri"]).to_numpy().argsort(), dataset_ix))
        valid = valid.take(pa.array(order, pa.int64()))
        dataset_ix = dataset_ix[order]
    reference = np.isin(dataset_ix, [rank[d] for d in settings.reference])
    embeddings = None
    if cosine and settings.embeddings is not None:
        found = read_embeddings_file(settings.embeddings, settings.embed_col_name, store.storage_options)
        embeddings = embeddings_from_file(valid["uri"].combine_chunks(), found, settings.embed_col_name,
                                          redact(settings.embeddings), settings.allow_missing_embeddings)
    elif cosine:
        embeddings = embeddings_from_store(valid)
    features = _stored_features(store, rec, names, valid, dataset_ix, table.filter(failed)) if lazy else None
    large = [c for c in (STORE_COLUMN, *LOCATION) if c in valid.column_names]
    images = Images(_contiguous(valid.drop_columns(large)), tuple(names), dataset_ix, reference, embeddings, features)
    del table, valid
    _return_freed()
    return images, errors, hash_size


_ONE_CHUNK_BYTES = 2**31 - 2**26  # a string column of more than ~2 GiB cannot be one chunk (32-bit offsets)


def _contiguous(table: pa.Table) -> pa.Table:
    """The table with each file column (`_BASE_COLUMNS`) in one chunk where it fits: the store reads ~250
    chunks per million rows, and a take from a chunked column (the outputs take uris, sizes and paths by
    image id ~15 times) costs a pass over every chunk (1.2 s against 0.2 s for 3M uris of 10M). Hash columns
    are read whole or chunk by chunk, never taken: copying them cost ~1.6 s at 10M images."""
    for k, column in enumerate(table.columns):
        if table.field(k).name in _BASE_COLUMNS and column.num_chunks > 1 and column.nbytes < _ONE_CHUNK_BYTES:
            table = table.set_column(k, table.field(k), pa.chunked_array([column.combine_chunks()], column.type))
    return table


def _return_freed() -> None:
    """Give the memory Arrow's allocator keeps after a large read back to the system: it keeps what it
    freed (0.7 GiB after reading 3M images' hashes, beside a 0.6 GiB table), which every later peak adds to."""
    pa.default_memory_pool().release_unused()


def _stored_features(store: EncodingsStore, rec: StoreRecord, names: list[str], rows: pa.Table,
                     dataset_ix: np.ndarray, failed: pa.Table) -> LocalFeatures:
    """The local features of `rows` (read from `rec`'s files with their location; `failed`: the files that
    could not be read, whose features are null), fetched from the store's row groups when a pair needs them.
    Rows of one file content (`exact`) in datasets of one encoder version share a key."""
    column = StoredColumn(store.fs, store.files(names, rec), FEATURES)
    files, at = rows["_file"].to_numpy(), rows["_row"].to_numpy()
    version = np.array([rec.dataset_versions(d).get(FEATURES, 1) for d in names], np.int64)
    digest = pc.dictionary_encode(rows["exact"].combine_chunks()).indices.to_numpy(zero_copy_only=False)
    digest = np.where(np.isnan(digest), -1 - np.arange(len(digest)), digest).astype(np.int64)  # none: its own
    present = column.present(files, at, failed["_file"].to_numpy(), failed["_row"].to_numpy())
    held = np.flatnonzero(present)
    _, first, inverse = np.unique(np.stack([digest[held], version[dataset_ix[held]]]), axis=1,
                                  return_index=True, return_inverse=True)
    key = np.full(len(rows), -1, np.int64)
    key[held] = inverse.ravel()
    row_of = held[first]  # a row holding each key's value

    def fetch(keys: np.ndarray) -> list[Any]:
        return column.values(files[row_of[keys]], at[row_of[keys]])

    return LocalFeatures(key, fetch)


def _dataset_index(names: pa.ChunkedArray, rank: dict[str, int]) -> np.ndarray:
    """Each row's dataset as its position in the keep-priority order."""
    encoded = pc.dictionary_encode(names).combine_chunks()
    lookup = np.array([rank[d] for d in encoded.dictionary.to_pylist()], np.int64)
    return lookup[encoded.indices.to_numpy(zero_copy_only=False)] if len(lookup) else np.zeros(0, np.int64)


def _in_order(uris: pa.ChunkedArray, dataset_ix: np.ndarray) -> bool:
    """Whether rows are sorted by (dataset, uri) already."""
    if len(dataset_ix) < 2:
        return True
    if (np.diff(dataset_ix) < 0).any():
        return False
    back = pc.less(uris.slice(1), uris.slice(0, len(uris) - 1)).to_numpy(zero_copy_only=False)
    return not bool((back & (dataset_ix[1:] == dataset_ix[:-1])).any())


def plan_rules(images: Images, settings: MatchSettings, hash_size: int, store_encoders: tuple[str, ...] = (),
               previous: Sequence[RuleState] | None = None) -> list[RuleSearch]:
    """One search per rule, ready to run block by block; with the `previous` run's state (one per rule),
    each searches only the classes that state lacks. With `settings.incremental`, each keeps its classes'
    identities for the next run's state."""
    orientations = settings.uses_orientations(store_encoders)
    rules = settings.parsed_rules(hash_size, store_encoders)
    if previous is not None and len(previous) != len(rules):
        previous = None
    rows = file_digests(images.table) if settings.incremental else None
    windows = settings.uses_windows(store_encoders, rules)

    def prepare(k: int) -> RuleSearch:
        rule = rules[k]
        turned = orientations and (settings.orientations or _auto(rule, images))
        return prepare_search(images, rule, orientations=turned, windows=windows and searches_crops(rule),
                              rows=rows, previous=None if previous is None else previous[k])

    # two rules at a time: their class sorts and index builds release the GIL (~8 s a rule at 10M), and more at
    # once would hold more rules' sort temporaries together
    with ThreadPoolExecutor(max(1, min(len(rules), settings.threads or os.cpu_count() or 1, 2))) as pool:
        return list(pool.map(prepare, range(len(rules))))


def _auto(rule: Rule, images: Images) -> bool:
    """Whether a rule searches mirrored and rotated pHashes by default: where it can (pHash alone, or
    verified) and, with local features in the store, only if it verifies what they find (a flat picture
    and another's mirror image can hash alike; bench/results/accuracy.md)."""
    return orientable(rule) and (images.features is None or rule.uses_features)


@dataclass(frozen=True)
class MatchJob:
    """A match run's inputs, small enough to send to every worker: each worker loads the store itself
    (once per process, see `prepared`) instead of receiving images or indexes."""

    store_url: str
    out_url: str
    settings: MatchSettings
    storage_options_json: str = "{}"  # JSON keeps the job hashable (it keys the per-process cache)
    run_id: str = ""  # the store commit the job was planned against
    hash_size: int = 8
    store_encoders: tuple[str, ...] = ()  # what the store holds (the default rules and orientations follow it)
    state: str = ""  # the previous run's match state in out_url, by name: part of the per-process cache key

    @property
    def options(self) -> dict[str, Any]:
        options: dict[str, Any] = json.loads(self.storage_options_json)
        return options


@dataclass(frozen=True)
class PreparedMatch:
    """A job's images, error rows, hash size and one ready search per rule."""

    images: Images
    errors: pa.Table
    hash_size: int
    searches: tuple[RuleSearch, ...]
    dataset_urls: dict[str, str]  # absolute URL of each matched dataset, where the store knows it
    fingerprint: str = ""  # of the match state this run reads and writes (`dupflow.match.state`)
    state_note: str = ""  # whether the previous run's state was reused, or why not

    @property
    def released(self) -> bool:
        """Whether the searches' joins were dropped for the decision (`_released`): no block can run."""
        return any(s.released for s in self.searches)


def plan_match(store_url: str, out_url: str, settings: MatchSettings,
               storage_options: dict[str, Any] | None = None) -> MatchJob:
    """Check the store can be matched with these settings and pin the commit to match."""
    store = EncodingsStore(store_url, storage_options)
    rec = store.complete_record()
    options = json.dumps(storage_options or {}, sort_keys=True)
    job = MatchJob(store.url, out_url, settings, options, rec.run_id, int(rec.settings.get("hash_size", 8)),
                   tuple(rec.encoders), state_token(out_url, storage_options) if settings.incremental else "")
    job.settings.parsed_rules(job.hash_size, job.store_encoders)  # a bad rule fails here, before any worker
    return job


_PREPARED: dict[MatchJob, PreparedMatch] = {}
_PREPARED_LOCK = threading.Lock()


def prepared(job: MatchJob, *, searching: bool = False) -> PreparedMatch:
    """Load and index a job's images, once per process (the last job is kept for the next block); `searching`:
    with the searches' joins, prepared again if the decision had released them."""
    with _PREPARED_LOCK:
        if job not in _PREPARED or (searching and _PREPARED[job].released):
            _PREPARED.clear()
            store = EncodingsStore(job.store_url, job.options)
            if job.run_id and store.complete_record().run_id != job.run_id:
                raise StoreError(f"the store {job.store_url} was re-encoded while matching: run the match again")
            if job.settings.incremental and state_token(job.out_url, job.options) != job.state:
                raise StoreError(f"the match state in {redact(job.out_url)} changed since this match was planned "
                                 "(another match wrote it, or this one finished): run the match again")
            images, errors, hash_size = load_images(store, job.settings)
            record = store.complete_record()
            fingerprint, previous, note = "", None, "--no-incremental"
            if job.settings.incremental:
                fingerprint = state_fingerprint(
                    job.settings.describe(hash_size, job.store_encoders), images.datasets, record,
                    {"embeddings": job.settings.embeddings, "column": job.settings.embed_col_name,
                     "allow_missing": job.settings.allow_missing_embeddings})
                previous, note = read_state(job.out_url, fingerprint, job.options)
            searches = tuple(plan_rules(images, job.settings, hash_size, job.store_encoders, previous))
            urls = {name: _absolute(info["url"], job.options)
                    for name, info in record.datasets.items()
                    if info.get("url") and name in images.datasets}
            _PREPARED[job] = PreparedMatch(images, errors, hash_size, searches, urls, fingerprint, note)
            _return_freed()  # what the classes and views took from Arrow (~0.3 GB at 3M images)
        return _PREPARED[job]


def match_block(job: MatchJob, rule: int, block: Block) -> ClassPairs:
    """One block of one rule's search: the unit of matching work on any worker."""
    return prepared(job, searching=True).searches[rule].block(block)


def _released(job: MatchJob) -> PreparedMatch:
    """The job's prepared match without its searches' joins (their indexes and view rows, ~0.2 KB an image
    with orientations), also in this process's cache: the decision needs only the classes."""
    ready = prepared(job)
    with _PREPARED_LOCK:
        if not ready.released:
            ready = replace(ready, searches=tuple(s.without_joins() for s in ready.searches))
            if job in _PREPARED:
                _PREPARED[job] = ready
    return ready


@dataclass
class BlockResult:
    """One block of every rule's search (`pairs`, in rule order) and the pairs of pictures its process
    verified (`verified`, LocalFeatures.known; empty without local features): the process that decides
    takes them instead of verifying them again."""

    pairs: list[ClassPairs]
    verified: np.ndarray


def match_rules_block(job: MatchJob, block: Block) -> BlockResult:
    """Block `block` of every rule's search: one task's share of the matching on a cluster."""
    ready = prepared(job, searching=True)
    pairs = [search.block(block) for search in ready.searches]
    features = ready.images.features
    return BlockResult(pairs, features.known() if features is not None else np.zeros((0, 3)))


def finish_match_blocks(job: MatchJob, blocks: Sequence[BlockResult]) -> MatchReport:
    """`finish_match` from the blocks that `match_rules_block` gave, in any process."""
    features = prepared(job).images.features
    if features is not None:
        for result in blocks:
            features.learn(result.verified)
    return finish_match(job, [list(rule) for rule in zip(*(b.pairs for b in blocks), strict=True)])


def cluster_blocks(images: int, threads: int) -> int:
    """How many match tasks a flow splits the search into: one per worker thread (the blocks are even:
    Hamming buckets and cosine row tiles), each over at least BLOCK_IMAGES images (a task worth less
    than its Prefect bookkeeping, ~0.3 s, costs more than it gives)."""
    return max(1, min(threads, images // BLOCK_IMAGES))


def rule_count(job: MatchJob) -> int:
    """How many searches (one per rule) the job runs."""
    return len(job.settings.parsed_rules(job.hash_size, job.store_encoders))


def finish_match(job: MatchJob, parts: Sequence[Sequence[ClassPairs]], seconds: dict[str, float] | None = None
                 ) -> MatchReport:
    """Merge every rule's blocks, decide groups, keepers, scores and the manifest, and write the outputs."""
    start = time.perf_counter()
    ready = _released(job)
    matches = [search.finish(list(found)) for search, found in zip(ready.searches, parts, strict=True)]
    settings, options = job.settings, job.options
    duplicates_root = _absolute(settings.duplicates_root or join(job.out_url, "duplicates"), options)
    check = settings.min_shared if settings.verify_groups else None
    decisions = decide(ready.images, matches, settings.keep_policy(), duplicates_root, ready.errors, check,
                       manifest_metadata(duplicates_root, ready.dataset_urls))
    described = {"store": job.store_url, **settings.describe(ready.hash_size, job.store_encoders),
                 "duplicates_root": duplicates_root}
    if ready.images.embeddings is not None:
        described["embeddings"] = ready.images.embeddings.describe()
    decided = time.perf_counter()
    with ThreadPoolExecutor(1) as side:  # the summary is worked out beside the tables
        summarised = side.submit(build_summary, ready.images, decisions, ready.errors, described, settings.examples)
        write_outputs(job.out_url, decisions, summarised.result, options)
    summary = summarised.result()
    if settings.incremental:  # after the outputs: a state never describes outputs that were not written
        write_state(job.out_url, ready.fingerprint, [m.state() for m in matches], options)
    timing = {**(seconds or {}), "decided": round(decided - start, 3),
              "written": round(time.perf_counter() - decided, 3)}
    return MatchReport(job.out_url, summary, timing, _search_report(ready, matches))


def _search_report(ready: PreparedMatch, matches: Sequence[RuleMatch]) -> dict[str, Any]:
    incremental = any(s.searched >= 0 for s in ready.searches)
    why = ("the previous match state holds the other classes" if incremental else
           "most classes are new: searching all of them is cheaper" if ready.state_note == "reused" else
           ready.state_note)
    return {
        "mode": "incremental" if incremental else "full",
        "why": why,
        "rules": [{"rule": m.search.rule.label, "classes": len(m.search.reps),
                   "searched": len(m.search.reps) if m.search.searched < 0 else m.search.searched,
                   "reused_pairs": 0 if m.search.reused is None else len(m.search.reused)} for m in matches],
    }


def match_store(store_url: str, out_url: str, settings: MatchSettings,
                storage_options: dict[str, Any] | None = None) -> MatchReport:
    """Match a store's encodings and write the outputs into `out_url`, on local threads."""
    start = time.perf_counter()
    job = plan_match(store_url, out_url, settings, storage_options)
    rules = len(prepared(job, searching=True).searches)  # nothing here holds the searches: the decision drops them
    loaded = time.perf_counter()
    threads = settings.threads or os.cpu_count() or 1
    blocks = settings.blocks or 4 * threads
    with ThreadPoolExecutor(threads) as pool:
        parts = [list(pool.map(lambda k, r=r: match_block(job, r, Block(k, blocks)), range(blocks)))
                 for r in range(rules)]
    matched = time.perf_counter()
    return finish_match(job, parts, {"loaded": round(loaded - start, 3), "matched": round(matched - loaded, 3)})


def _absolute(url: str, storage_options: dict[str, Any] | None) -> str:
    fs, path = open_fs(url, storage_options)
    return to_uri(fs, path)


def write_outputs(out_url: str, decisions: Decisions, summary: Callable[[], dict[str, Any]],
                  storage_options: dict[str, Any] | None = None) -> None:
    """Write the four tables, then summary.json last (`summary()`, asked for once the tables are written):
    its presence marks a finished run (a table or summary that fails, like a crash, leaves the folder
    without one). A table is compressed and written on a second thread while the next is built (pyarrow
    writes Parquet on one thread: ~9 s of a 10M-image run), so at most two are in memory."""
    fs, root = open_fs(out_url, storage_options)

    def write(name: str, table: pa.Table) -> None:
        atomic_write(fs, join(root, name), parquet_bytes(table))

    try:
        fs.makedirs(root, exist_ok=True)
        if fs.exists(join(root, "summary.json")):  # a crash below must not leave an old summary beside new tables
            fs.rm(join(root, "summary.json"))
        with ThreadPoolExecutor(1) as writer:
            written = None
            for name, build in zip(OUTPUT_FILES, decisions.builders, strict=False):
                if written is not None and written.done():
                    written.result()  # a failed write stops the run before the next table is built
                table = build()
                if written is not None:
                    written.result()
                written = writer.submit(write, name, table)
                del table
            if written is not None:
                written.result()
        atomic_write(fs, join(root, "summary.json"), json.dumps(summary(), indent=2).encode() + b"\n")
    except OSError as exc:
        raise storage_error(exc, out_url, "write the match outputs to") from exc
