"""How a store is matched: the match stage's settings."""

from __future__ import annotations

from typing import Any

from pydantic import model_validator

from dupflow.errors import ConfigError
from dupflow.match.keep import KeepPolicy
from dupflow.match.rules import Rule, parse_rules
from dupflow.settings import StageSettings, setting

__all__ = ["MatchSettings"]


class MatchSettings(StageSettings):
    """How to match: rules (any of), keep policy, which datasets, which are reference-only."""

    rules: tuple[str, ...] = setting(
        (), "METRIC<=BITS, METRIC>=SIMILARITY, cosine>=SIMILARITY, exact or pixel; join conditions with & (all "
        "must hold) and alternatives with | or by repeating --rule (any may hold), e.g. "
        "'exact | (dhash<=10 & cosine>=0.85)' [default: exact | phash<=10; with embeddings also "
        "(cosine>=0.85 & dhash<=20) | cosine>=0.93]", flag="rule", metavar="RULE")
    keep: tuple[str, ...] = setting(
        (), "keep policy, one key per flag, in order: dataset[:A,B], resolution, size, oldest, newest, "
        "shortest-path, path [default: dataset resolution size oldest shortest-path path]", metavar="KEY")
    datasets: tuple[str, ...] = setting(
        (), "datasets to match, in keep priority order [default: all, alphabetically]", metavar="A,B", comma=True)
    reference: tuple[str, ...] = setting(
        (), "a dataset matched against but never against itself and never moved, e.g. the existing corpus when "
        "checking a new ingest (repeatable)", metavar="NAME")
    orientations: bool = setting(False, "also catch flipped and rotated copies (needs the phash_dihedral encoder)")
    duplicates_root: str | None = setting(
        None, "where the manifest sends duplicates, as ROOT/DATASET/REL_PATH [default: OUT/duplicates]",
        metavar="URL", path=True)
    examples: int = setting(1000, "groups listed per section of summary.json (groups.parquet lists all)", ge=0)
    threads: int = setting(0, "search threads; 0: every CPU", ge=0)
    blocks: int = setting(0, "match tasks per rule; 0: four per search thread (two per worker thread in a flow)",
                          flag="match-blocks", ge=0)
    embeddings: str | None = setting(
        None, "your own embeddings for cosine rules: a Parquet file or folder with `uri` and a list column "
        "[default: the store's cnn embeddings]", metavar="PARQUET", path=True)
    embed_col_name: str = setting("embedding", "the embedding column of --embeddings", metavar="NAME", min_length=1)
    allow_missing_embeddings: bool = setting(
        False, "images without a row in --embeddings match by their hashes only (else: an error)")

    @model_validator(mode="after")
    def _consistent(self) -> MatchSettings:
        unknown = set(self.reference) - set(self.datasets) if self.datasets else set()
        if unknown:
            raise ConfigError(f"reference datasets {sorted(unknown)} are not among --datasets")
        self.keep_policy()
        return self

    def keep_policy(self) -> KeepPolicy:
        return KeepPolicy.parse(self.keep)

    def parsed_rules(self, hash_size: int, embeddings: bool = False) -> tuple[Rule, ...]:
        """The rules; with no --rule, the recommended ones for what the store holds (`embeddings`: the
        store has cnn embeddings or --embeddings was given)."""
        return parse_rules(self.rules, hash_size, embeddings=embeddings or self.embeddings is not None)

    def describe(self, hash_size: int, embeddings: bool = False) -> dict[str, Any]:
        return {
            "rules": [r.label for r in self.parsed_rules(hash_size, embeddings)],
            "keep": self.keep_policy().label,
            "reference": list(self.reference),
            "orientations": self.orientations,
            "hash_size": hash_size,
        }
