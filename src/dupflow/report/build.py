"""`dupflow report`: the self-contained HTML report of a match run, and its own record (report.json).
The match run's files are only read."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from dupflow import __version__
from dupflow.errors import ConfigError
from dupflow.io.fs import atomic_write, is_local, join, open_fs, storage_error
from dupflow.io.uris import redact
from dupflow.report.extra_scores import ExtraScores, read_extra_scores
from dupflow.report.outputs import read_match_outputs, read_store_facts
from dupflow.report.page import render_page
from dupflow.report.payload import build_payload, original_links, projection, thumbnail_order
from dupflow.report.settings import ReportSettings
from dupflow.report.thumbs import make_thumbnails

__all__ = ["RECORD_FILE", "REPORT_FILE", "ReportResult", "ReportSettings", "write_report"]

REPORT_FILE = "report.html"
RECORD_FILE = "report.json"  # written after the page: what it holds, how long it took, which run it shows


@dataclass
class ReportResult:
    """Where the report went and what it holds."""

    path: str
    bytes: int
    images: int
    pairs: int
    groups: int
    thumbnails: int
    thumbnail_bytes: int
    thumbnail_failures: int
    seconds: dict[str, float] = field(default_factory=dict)

    def brief(self) -> dict[str, Any]:
        return asdict(self)


def write_report(out: str, settings: ReportSettings, store: str | None = None, matches: str | None = None,
                 storage_options: dict[str, Any] | None = None) -> ReportResult:
    """Read the match run in `matches` (default `out`) and the store it matched (default: the one
    summary.json names), write OUT/report.html, then OUT/report.json, its record. The run's files are
    never written: the page carries its summary."""
    start = time.perf_counter()
    outputs = read_match_outputs(matches or out, storage_options)
    store_url = store or outputs.summary["settings"].get("store")
    if not store_url:
        raise ConfigError(f"{matches or out}/summary.json names no store: pass --store")
    facts = read_store_facts(store_url, outputs.scores, storage_options)
    uris = outputs.scores["uri"].to_pylist()
    extra = None
    if settings.extra_scores:
        extra = read_extra_scores(settings.extra_scores, settings.extra_score_cols, outputs.scores["uri"],
                                  outputs.scores["rel_path"], outputs.scores["dataset"], storage_options)
    loaded = time.perf_counter()
    chosen = thumbnail_order(outputs)[: settings.thumbnails]
    made = make_thumbnails([uris[i] for i in chosen], size=settings.thumb_size, fmt=settings.thumb_format,
                           quality=settings.thumb_quality, max_pixels=settings.max_pixels,
                           threads=settings.threads, storage_options=storage_options)
    thumb_index = [-1] * len(uris)
    thumbs: list[str] = []
    failures: dict[int, str] = {}
    for i, t in zip(chosen, made, strict=True):
        if t.data_uri is None:
            failures[i] = t.failure or "unknown"
        else:
            thumb_index[i] = len(thumbs)
            thumbs.append(t.data_uri)
    drawn = time.perf_counter()
    links = original_links(uris, settings.originals, _signer(uris, settings, storage_options))
    thumb_bytes = sum(len(t) for t in thumbs)
    title = f"dupflow report: {redact(matches or out)}"
    meta: dict[str, Any] = {
        "title": title,
        "generated": datetime.now(UTC).isoformat(timespec="seconds"),
        "version": __version__,
        "out": redact(out),
        "matches": redact(matches or out),
        "thumb_size": settings.thumb_size,
        "thumbnails": len(thumbs),
        "thumbnails_wanted": len(chosen),
        "thumbnails_omitted": len(uris) - len(chosen) - int(sum(1 for s in outputs.scores["status"].to_pylist()
                                                                if s == "error")),
        "thumbnail_bytes": thumb_bytes,
        "originals": settings.originals,
    }
    projected = projection(facts, outputs, settings.plot_points)
    data = build_payload(outputs, facts, thumb_index, failures, extra, links, projected, meta)
    page = render_page(title, data, thumbs, _link_sources(links)).encode("utf-8")
    fs, root = open_fs(out, storage_options)
    path = join(root, REPORT_FILE)
    if is_local(fs):
        atomic_write(fs, path, page)
    else:
        _put_html(fs, path, page)
    result = ReportResult(join(out, REPORT_FILE), len(page), len(uris), outputs.pairs.num_rows,
                          int(outputs.summary["totals"]["groups"]), len(thumbs), thumb_bytes, len(failures))
    result.seconds = {"loaded": round(loaded - start, 3), "thumbnails": round(drawn - loaded, 3),
                      "written": round(time.perf_counter() - drawn, 3)}
    atomic_write(fs, join(root, RECORD_FILE), _record(result, meta, extra))
    return result


def _record(result: ReportResult, meta: dict[str, Any], extra: ExtraScores | None) -> bytes:
    """report.json: the result (its path redacted), the run it shows, when, with which scores, by which dupflow."""
    record = {**result.brief(), "path": redact(result.path), "matches": meta["matches"], "generated": meta["generated"],
              "extra_scores": None if extra is None else extra.describe(), "dupflow": __version__}
    return json.dumps(record, indent=2).encode() + b"\n"


def _link_sources(links: list[str | None]) -> tuple[str, ...]:
    """What the page's CSP must allow for the pair view to show linked originals: `file:` and the
    origins of presigned links."""
    sources = set()
    for link in links:
        if link:
            parts = urlsplit(link)
            sources.add("file:" if parts.scheme == "file" else f"{parts.scheme}://{parts.netloc}")
    return tuple(sorted(sources))


def _signer(uris: list[str], settings: ReportSettings, storage_options: dict[str, Any] | None) -> Any:
    """A presigning function for remote URIs when asked for, else None."""
    if settings.originals != "presign" or not any("://" in u for u in uris):
        return None
    fs, _ = open_fs(next(u for u in uris if "://" in u), storage_options)

    def sign(uri: str) -> str:
        try:
            return str(fs.sign(open_fs(uri, storage_options)[1], expiration=settings.presign_seconds))
        except NotImplementedError as exc:
            raise ConfigError(f"{type(fs).__name__} cannot presign links: use --originals auto or none") from exc

    return sign


def _put_html(fs: Any, path: str, page: bytes) -> None:
    """One PUT with the HTML content type, so that a presigned link to the report opens in a browser."""
    try:
        fs.pipe_file(path, page, ContentType="text/html; charset=utf-8")
    except TypeError:
        atomic_write(fs, path, page)
    except OSError as exc:
        raise storage_error(exc, path, "write") from exc

