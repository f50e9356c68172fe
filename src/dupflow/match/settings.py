"""How a store is matched: the match stage's settings."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import TYPE_CHECKING, Any

from pydantic import model_validator

from dupflow.encode.catalog import FEATURES_ENCODER
from dupflow.errors import ConfigError
from dupflow.match.rules import (
    DEFAULT_RULES,
    DEFAULT_RULES_WITH_EMBEDDINGS,
    THOROUGH_RULES,
    VERIFIED_DEFAULT,
    VERIFIED_RULES,
    Rule,
    parse_rules,
    searches_crops,
)
from dupflow.settings import Preset, StageSettings, presets_help, setting

if TYPE_CHECKING:
    from dupflow.match.keep import KeepPolicy

__all__ = ["MatchSettings"]


class MatchSettings(StageSettings):
    """How to match: rules (any of), keep policy, which datasets, which are reference-only."""

    preset: Preset | None = setting(
        None, presets_help("how to match") + " [default: the best for what the store holds; --rule "
        "overrides it]")
    rules: tuple[str, ...] = setting(
        (), "METRIC<=BITS, METRIC>=SIMILARITY, cosine>=SIMILARITY, verified[>=SHARED], exact or pixel; join "
        "conditions with & (all must hold) and alternatives with | or by repeating --rule (any may hold), e.g. "
        "'exact | (dhash<=10 & cosine>=0.85)' [default: with local features (the default encoders) "
        f"{' | '.join(VERIFIED_RULES)}, with embeddings too (--preset thorough) {' | '.join(THOROUGH_RULES)}; "
        "hashes only: exact | phash<=10, with embeddings (cosine>=0.85 & dhash<=20) | cosine>=0.93]",
        flag="rule", metavar="RULE")
    keep: tuple[str, ...] = setting(
        (), "keep policy, one key per flag, in order: dataset[:A,B], resolution, size, oldest, newest, "
        "shortest-path, path [default: dataset resolution size oldest shortest-path path]", metavar="KEY")
    datasets: tuple[str, ...] = setting(
        (), "datasets to match, in keep priority order [default: all, alphabetically]", metavar="A,B", comma=True)
    reference: tuple[str, ...] = setting(
        (), "a dataset matched against but never against itself and never moved, e.g. the existing corpus when "
        "checking a new ingest (repeatable)", metavar="NAME")
    orientations: bool | None = setting(
        None, "also catch mirrored and 90-degree-rotated copies (needs the phash_dihedral encoder) [default: on "
        "when the store has it, except with --preset fast]")
    crops: bool | None = setting(
        None, "also search crops: each picture's pHash against the pHashes of the others' windows, for rules "
        "that verify what they find (needs the phash_windows and orb encoders) [default: on when the store "
        "has them, except with --preset fast]")
    min_shared: float = setting(
        VERIFIED_DEFAULT, "the shared fraction (area both pictures show / area either shows) that a bare "
        "`verified` condition and the group check need: a crop keeping 64% of a picture scores 0.64, a "
        "quarter of it 0.25", gt=0, le=1)
    verify_groups: bool = setting(
        True, "with local features in the store, keep in a group only members verified against its keeper "
        "(or matched to it directly), so chains of weak matches do not merge unrelated pictures")
    incremental: bool = setting(
        True, "keep the accepted pairs in OUT/_state/match and, on the next run with the same settings, search "
        "only new and changed images (against all): the outputs are those of a full match; --no-incremental "
        "searches everything")
    duplicates_root: str | None = setting(
        None, "where the manifest sends duplicates, as ROOT/DATASET/REL_PATH [default: OUT/duplicates]",
        metavar="URL", path=True)
    examples: int = setting(1000, "groups listed per section of summary.json, 100 members each at most "
                                  "(groups.parquet lists all)", ge=0)
    threads: int = setting(0, "search threads; 0: every CPU", ge=0)
    blocks: int = setting(0, "blocks the search is split into; 0: four per search thread (in a flow: one "
                          "task per worker thread, each of 1,000 images or more, every rule in it)",
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
        """The parsed keep policy."""
        from dupflow.match.keep import KeepPolicy  # pyarrow: not needed to declare the settings

        return KeepPolicy.parse(self.keep)

    def parsed_rules(self, hash_size: int, encoders: Collection[str] = ()) -> tuple[Rule, ...]:
        """The rules; with no --rule, the preset's, or the recommended ones for what the store holds
        (`encoders`: the store's; --embeddings stands in for cnn)."""
        have = set(encoders) | ({"cnn"} if self.embeddings is not None else set())
        texts: tuple[str, ...] = self.rules
        if not texts and self.preset == "thorough":
            lacking = sorted({"cnn", FEATURES_ENCODER} - have)
            if lacking:
                raise ConfigError(f"--preset thorough matches with {' and '.join(lacking)} encodings, which the "
                                  "store lacks: encode it with --preset thorough (pip install 'dupflow[cnn]')")
            texts = THOROUGH_RULES
        elif not texts and self.preset == "fast":
            texts = DEFAULT_RULES
        elif not texts:
            texts = (THOROUGH_RULES if {"cnn", FEATURES_ENCODER} <= have else
                     DEFAULT_RULES_WITH_EMBEDDINGS if "cnn" in have else
                     VERIFIED_RULES if FEATURES_ENCODER in have else DEFAULT_RULES)
        return parse_rules(texts, hash_size, min_shared=self.min_shared)

    def uses_orientations(self, encoders: Collection[str]) -> bool:
        """Whether mirrored and rotated pHashes are searched, for a store with these encoders."""
        if self.orientations is not None:
            return self.orientations
        return self.preset != "fast" and "phash_dihedral" in encoders

    def uses_windows(self, encoders: Collection[str], rules: Sequence[Rule]) -> bool:
        """Whether crops are searched through the windows' pHashes, for a store with these encoders and
        these rules (only rules on pHash that verify search them: --crops without one is refused)."""
        able = any(searches_crops(r) for r in rules)
        if self.crops and not able:
            raise ConfigError("--crops searches crops for rules on pHash that verify what they find, e.g. "
                              "--rule 'phash<=16&verified'; none of the rules does")
        if self.crops is not None:
            return self.crops
        return able and self.preset != "fast" and {"phash_windows", FEATURES_ENCODER} <= set(encoders)

    def describe(self, hash_size: int, encoders: Collection[str] = ()) -> dict[str, Any]:
        rules = self.parsed_rules(hash_size, encoders)
        return {
            "rules": [r.label for r in rules],
            "keep": self.keep_policy().label,
            "reference": list(self.reference),
            "orientations": self.uses_orientations(encoders),
            "crops": self.uses_windows(encoders, rules),
            "verified": ({"min_shared": self.min_shared, "groups": self.verify_groups}
                         if FEATURES_ENCODER in encoders else None),
            "hash_size": hash_size,
            **({"preset": self.preset} if self.preset else {}),
        }
