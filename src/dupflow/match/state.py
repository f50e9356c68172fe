"""The match state a run leaves in `OUT/_state/match`, so that the next run with the same settings searches
only what changed.

Per rule, the state holds every class of identical keys by its identity (a digest of the class key and
its representative's uri, size, mtime and etag: `dupflow.match.digests`) and the class pairs the rule
accepted. What a rule accepts for two classes depends on nothing but those two identities (their hashes,
the representatives' features and embeddings), so a later run reuses every accepted pair between classes
it finds again, drops those of classes that are gone or changed, and searches only its new classes
against all of them: the union is exactly what a full search finds. A class whose representative changed
(a new file sorts before it, or it was removed) is new. Anything else that could change an answer (the
settings, the datasets matched, the encoder versions, this release) is in the state's fingerprint: when
it differs, the run is full.
"""

from __future__ import annotations

import hashlib
import json
import logging
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from dupflow.errors import StoreError
from dupflow.io.fs import atomic_write, join, open_fs, storage_error
from dupflow.match.digests import index_of
from dupflow.schemas import MATCH_CLASSES, MATCH_PAIRS, parquet_bytes, read_meta
from dupflow.store.record import StoreRecord

__all__ = ["STATE_DIR", "STATE_FOLDER", "Carried", "RuleState", "carry", "read_state", "state_fingerprint",
           "state_token", "write_state"]

STATE_FOLDER = "_state"  # in OUT, beside the outputs: what later runs reuse
STATE_DIR = f"{STATE_FOLDER}/match"
# 2: cosines of float16 unit vectors (a state of version 1 holds float32 ones); 3: identities as digests
STATE_VERSION = 3
_INDEX = "state.json"

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RuleState:
    """One rule's classes (by identity: (C, 2) uint64 digests) and its accepted class pairs (rows of
    `identity`, a < b)."""

    identity: np.ndarray
    a: np.ndarray
    b: np.ndarray
    distance: np.ndarray
    similarity: np.ndarray
    orientation: np.ndarray


@dataclass(frozen=True)
class Carried:
    """What a run takes over from the previous one for one rule: which of its classes are new (to be
    searched) and the accepted pairs between the others, in this run's class numbers."""

    fresh: np.ndarray  # (C,) bool
    c1: np.ndarray
    c2: np.ndarray
    distance: np.ndarray
    similarity: np.ndarray
    orientation: np.ndarray


def state_fingerprint(describe: Mapping[str, Any], datasets: Sequence[str], record: StoreRecord,
                      extra: Mapping[str, Any]) -> str:
    """A digest of everything besides the classes themselves that decides what a rule accepts."""
    try:
        release = version("dupflow")
    except PackageNotFoundError:  # pragma: no cover - run from a source tree without metadata
        release = "unknown"
    body = {
        "state": STATE_VERSION, "release": release, "match": dict(describe), "datasets": list(datasets),
        "store": {"encoders": list(record.encoders), "settings": record.settings,
                  "versions": {d: record.dataset_versions(d) for d in datasets}},
        **dict(extra),
    }
    return hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()


def carry(previous: RuleState, identity: np.ndarray) -> Carried:
    """This run's new classes and the previous run's pairs between classes it still has. Class numbers
    follow representatives in (dataset, uri) order, so two classes found again keep their order."""
    current = index_of(previous.identity, identity)
    fresh = np.ones(len(identity), bool)
    fresh[current[current >= 0]] = False
    c1, c2 = current[previous.a], current[previous.b]
    kept = (c1 >= 0) & (c2 >= 0)
    return Carried(fresh, c1[kept], c2[kept], previous.distance[kept], previous.similarity[kept],
                   previous.orientation[kept])


def state_token(out_url: str, storage_options: dict[str, Any] | None = None) -> str:
    """What names the state now in `out_url` ("" for none): a job planned with it matches against it."""
    fs, root = open_fs(join(out_url, STATE_DIR), storage_options)
    try:
        return ",".join(json.loads(fs.cat_file(join(root, _INDEX))).get("rules", []))
    except (OSError, ValueError, AttributeError):
        return ""


def read_state(out_url: str, fingerprint: str, storage_options: dict[str, Any] | None = None
               ) -> tuple[tuple[RuleState, ...] | None, str]:
    """The previous run's state if it was made with this fingerprint, and why not otherwise."""
    fs, root = open_fs(join(out_url, STATE_DIR), storage_options)
    try:
        index = json.loads(fs.cat_file(join(root, _INDEX)))
    except FileNotFoundError:
        return None, "no previous match state"
    except (OSError, ValueError) as exc:  # a damaged state is never worse than a full match
        log.warning("the match state in %s cannot be read (%s): matching everything", root, exc)
        return None, "the previous match state cannot be read"
    if index.get("fingerprint") != fingerprint:
        return None, "the settings, datasets or encodings changed since the previous match"
    try:
        states = tuple(_read_rule(fs, root, name) for name in index["rules"])
    except (OSError, ValueError, KeyError, TypeError, pa.ArrowException, StoreError) as exc:
        log.warning("the match state in %s cannot be read (%s): matching everything", root, exc)
        return None, "the previous match state cannot be read"
    return states, "reused"


def _read_rule(fs: Any, root: str, name: str) -> RuleState:
    with fs.open(join(root, f"{name}-classes.parquet"), "rb") as f:
        classes = pq.read_table(f)
    with fs.open(join(root, f"{name}-pairs.parquet"), "rb") as f:
        pairs = pq.read_table(f)
    read_meta(classes.schema, "match_classes")
    read_meta(pairs.schema, "match_pairs")
    column = classes["identity"].combine_chunks()
    if column.type != MATCH_CLASSES.field("identity").type:
        raise ValueError(f"class identities of type {column.type}")
    identity = np.frombuffer(column.buffers()[1], np.uint64, count=2 * len(column),
                             offset=column.offset * 16).reshape(-1, 2)
    cols = {c: pairs[c].to_numpy() for c in MATCH_PAIRS.names}
    if len(cols["a"]) and (cols["a"].min() < 0 or max(cols["a"].max(), cols["b"].max()) >= len(identity)):
        raise ValueError("pairs name classes the state does not hold")
    return RuleState(identity, cols["a"], cols["b"], cols["distance"], cols["similarity"], cols["orientation"])


def write_state(out_url: str, fingerprint: str, states: Sequence[RuleState],
                storage_options: dict[str, Any] | None = None) -> None:
    """Write this run's state under a new name, then the index naming it, then remove older files: a run
    stopped at any point leaves the previous state or this one, whole."""
    fs, root = open_fs(join(out_url, STATE_DIR), storage_options)
    token = secrets.token_hex(6)
    names = [f"rule-{k}-{token}" for k in range(len(states))]
    try:
        fs.makedirs(root, exist_ok=True)
        for name, state in zip(names, states, strict=True):
            digests = np.ascontiguousarray(state.identity, np.uint64)
            identity = pa.FixedSizeBinaryArray.from_buffers(pa.binary(16), len(digests), [None, pa.py_buffer(digests)])
            classes = pa.table({"identity": identity}, schema=MATCH_CLASSES)
            pairs = pa.table({"a": state.a, "b": state.b, "distance": state.distance,
                              "similarity": state.similarity, "orientation": state.orientation}, schema=MATCH_PAIRS)
            atomic_write(fs, join(root, f"{name}-classes.parquet"), parquet_bytes(classes))
            atomic_write(fs, join(root, f"{name}-pairs.parquet"), parquet_bytes(pairs))
        index = {"fingerprint": fingerprint, "rules": names}
        atomic_write(fs, join(root, _INDEX), json.dumps(index, indent=2).encode() + b"\n")
        for path in fs.ls(root, detail=False):
            leaf = path.rstrip("/").rsplit("/", 1)[-1]
            if leaf.endswith(".parquet") and not any(leaf.startswith(f"{n}-") for n in names):
                fs.rm(path)
    except OSError as exc:
        raise storage_error(exc, join(out_url, STATE_DIR), "write the match state to") from exc
