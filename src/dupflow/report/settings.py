"""What goes into the HTML report: the report stage's settings."""

from __future__ import annotations

from typing import Literal

from dupflow.io.limits import DEFAULT_MAX_PIXELS
from dupflow.settings import StageSettings, setting

__all__ = ["ReportSettings"]


class ReportSettings(StageSettings):
    """What goes into the page: how many thumbnails and how big, plot points, a score file, links."""

    thumbnails: int = setting(
        20_000, "images that get an embedded thumbnail: duplicate groups first (largest first), then the rest; each "
        "costs about 3-6 KB of page", ge=0)
    thumb_size: int = setting(160, "thumbnail size in pixels (long side)", ge=16, le=1024)
    thumb_format: Literal["webp", "jpeg"] = setting("webp", "thumbnail format")
    thumb_quality: int = setting(60, "thumbnail quality", ge=1, le=100)
    plot_points: int = setting(5_000, "images in the 2-D embedding view (grouped ones first, then a sample)", ge=0)
    extra_scores: str | None = setting(
        None, "your per-image scores (Parquet or CSV with a `uri` column, or `rel_path` [+ `dataset`]) shown beside "
        "similarity, e.g. a model's confidence", metavar="FILE", path=True)
    extra_score_cols: tuple[str, ...] = setting(
        (), "columns of --extra-scores to show [default: all but the key]", metavar="A,B", comma=True)
    originals: Literal["auto", "none", "presign"] = setting(
        "auto", "links to the original files: auto links local files (file://); presign also puts presigned S3 links "
        "in the page (anyone with the page can then fetch those files)")
    presign_seconds: int = setting(3600, "how long --originals presign links work (S3 allows up to 7 days)",
                                   ge=1, le=7 * 24 * 3600)
    max_pixels: int = setting(DEFAULT_MAX_PIXELS, "images declaring more pixels get no thumbnail", ge=1, cli=False)
    threads: int = setting(8, "thumbnail readers", ge=1)

