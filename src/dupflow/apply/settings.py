"""How a reviewed manifest is applied: the apply stage's settings."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import field_validator

from dupflow.errors import ConfigError
from dupflow.io.uris import redact
from dupflow.settings import StageSettings, setting

__all__ = ["ApplyOptions", "default_journal"]


class ApplyOptions(StageSettings):
    """How a manifest is applied: which files travel with an image, and what a taken destination does."""

    sidecars: tuple[str, ...] = setting(
        (), "files beside an image with these extensions (a.txt or a.jpg.txt for a.jpg, case-insensitive) move "
        "with it", metavar=".txt,.json", comma=True)
    annotations: dict[str, str] = setting(
        default_factory=dict, help="a folder laid out like the dataset whose annotation files (--sidecars, default "
        ".txt,.json,.xml) move with their image (repeatable)", metavar="DATASET=URL", pairs=True, path=True)
    on_conflict: Literal["skip", "suffix"] = setting(
        "skip", "when a destination exists: leave the file (skip), or move it to stem.dupN.ext (suffix)")
    duplicates_root: str | None = setting(
        None, "where duplicates may go [default: the root the manifest was planned with]", metavar="URL", path=True)
    threads: int = setting(8, "files moved at once (object stores gain most)", ge=1)
    batch: int = setting(64, "files whose intents are made durable together", ge=1, cli=False)

    @field_validator("sidecars")
    @classmethod
    def _extensions(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        bad = [s for s in value if not s.startswith(".") or "/" in s or len(s) < 2]
        if bad:
            raise ConfigError(f"sidecar extensions look like .txt,.json: {', '.join(bad)}")
        return value

    @property
    def sidecar_exts(self) -> tuple[str, ...]:
        if self.sidecars or not self.annotations:
            return tuple(s.lower() for s in self.sidecars)
        return (".txt", ".json", ".xml")

    def describe(self) -> dict[str, Any]:
        """The options as the journal records them (no credentials: URLs are redacted)."""
        return {"sidecars": list(self.sidecars), "on_conflict": self.on_conflict,
                "annotations": {k: redact(v) for k, v in sorted(self.annotations.items())}}

    @classmethod
    def from_record(cls, described: dict[str, Any], duplicates_root: str) -> ApplyOptions:
        """The options of a journaled run (to resume it)."""
        return cls(sidecars=tuple(described.get("sidecars", ())), annotations=dict(described.get("annotations", {})),
                   on_conflict=described.get("on_conflict", "skip"), duplicates_root=duplicates_root)


def default_journal(manifest: str) -> str:
    """Where a manifest's apply journal goes unless one is named: `apply-journal` beside the manifest."""
    folder = manifest.rsplit("/", 1)[0] if "/" in manifest else "."
    return f"{folder}/apply-journal"
